import { loadLabEnv, type NodeEnv } from './env.js';
import { FsNode } from './lab.js';

/**
 * Refuses to start unless both nodes are described (every missing variable listed)
 * and reachable from here, and names each node's FreeSWITCH version in the output.
 */
export default async function setup(): Promise<void> {
  const env = loadLabEnv();
  for (const nodeEnv of [env.a, env.b] as NodeEnv[]) {
    const node = await FsNode.connect(nodeEnv);
    try {
      const version = await node.api('version');
      console.log(`node ${nodeEnv.key.toUpperCase()}: ${node.info.switchname} (${node.info.hostname}) ${version} ESL ${nodeEnv.esl.host}:${nodeEnv.esl.port} SIP ${nodeEnv.sip.host}:${nodeEnv.sip.port}`);
    } finally {
      await node.close();
    }
  }
}
