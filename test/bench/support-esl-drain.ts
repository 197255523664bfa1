/**
 * The baseline of esl-to-sinks, as its own process: the bridge's ESL client with no
 * sinks, draining events() and counting them. Started as
 * `node support-esl-drain.js PORT EXPECTED`; prints JSON lines `ready` and, once
 * EXPECTED events were read, `done`.
 */
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { EslClient } from '../../bridge/sources/esl/client.js';

const [port, expected] = process.argv.slice(2).map(Number);
const out = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');
const client = new EslClient(
  { host: '127.0.0.1', port, password: 'ClueCon', reconnectMaxMs: 800, queueMaxEvents: 10_000, queueMaxBytes: 1024 ** 3, maxFrameBytes: 16 * 1024 * 1024, commandTimeoutMs: 10_000 },
  { subscription: 'ALL', logger: silentLogger(), metrics: new Metrics() },
);
client.start();
await client.ready(10_000);
out({ type: 'ready' });
let count = 0;
for await (const batch of client.events()) {
  count += batch.length;
  if (count >= expected) {
    out({ type: 'done', count });
    break;
  }
}
await client.stop();
process.exit(0);
