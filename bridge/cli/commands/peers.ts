import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load.js';
import { BridgeError } from '../../errors.js';
import type { PeerInfo } from '../../pipeline/peers.js';

/**
 * `fs-event-bridge peers`: the legacy `multicast_peers` lines ("Peer fs-b UP; last seen
 * 10 seconds ago") followed by our counters; "No multicast peers seen" when empty.
 * Loss is printed only where it is known exactly, from the sequence header bridges add
 * to their datagrams; a legacy sender's Event-Sequence skips every event outside its
 * bindings, so gaps there are not loss and its loss is "unknown".
 */
export function formatPeers(list: readonly PeerInfo[], now = Date.now()): string {
  if (list.length === 0) return 'No multicast peers seen\n';
  let out = '';
  for (const peer of list) {
    const seen = peer.lastHeartbeat === null ? 'no heartbeat seen' : `last seen ${Math.floor((now - peer.lastHeartbeat) / 1000)} seconds ago`;
    const loss = peer.lossKnown ? `${peer.gapsLost} lost` : 'loss unknown (no bridge sequence header)';
    out += `Peer ${peer.name} ${peer.up ? 'UP' : 'DOWN'}; ${seen}; ${peer.eventsReceived} events received, ${loss}\n`;
  }
  return out;
}

/**
 * `fs-event-bridge peers`: asks the running bridge (its status server, the same one
 * that serves /metrics) for its peers, like `fs_cli -x multicast_peers`.
 */
export function registerPeers(program: Command): void {
  program
    .command('peers')
    .description('list the peers a running bridge sees (like the multicast_peers API)')
    .option('-c, --config <file>', 'the running bridge\'s config (its <metrics> host and port)')
    .option('--url <url>', 'status server URL instead, e.g. http://127.0.0.1:9464')
    .option('--json', 'print the JSON list')
    .action(async (options: { config?: string; url?: string; json?: boolean }) => {
      let base = options.url;
      if (!base) {
        if (!options.config) throw new BridgeError('FSB_ERR_USAGE', 'give --config FILE or --url URL');
        const { metrics } = loadConfigFile(options.config).config;
        base = `http://${metrics.host}:${metrics.port}`;
      }
      let list: PeerInfo[];
      try {
        const response = await fetch(new URL('/peers', base), { signal: AbortSignal.timeout(5_000) });
        list = (await response.json()) as PeerInfo[];
      } catch (err) {
        throw new BridgeError('FSB_ERR_NOT_CONNECTED', `no bridge answering at ${base}: ${(err as Error).message}`);
      }
      process.stdout.write(options.json ? JSON.stringify(list) + '\n' : formatPeers(list));
    });
}
