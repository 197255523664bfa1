/**
 * The I/O floor of esl-to-sinks, as its own process: the least any bridge on this stack
 * (Node, node:dgram, nats.js) must do per event on one thread. The bridge's ESL client
 * reads and parses, then each event goes out as one multicast datagram (the encoder's
 * reuse of FreeSWITCH's header block) and as one JetStream publish of those same bytes
 * whose PubAck is awaited, with the bridge's default bound of 1024 in flight. No JSON,
 * no pipeline, no dedup, no metrics, no buffer for resends: if this cannot reach a rate,
 * the bridge cannot either.
 *
 * Started as `node support-esl-floor.js ESL_PORT EXPECTED GROUP PORT NATS_URL INTERFACE TTL LOOPBACK`
 * (the bridge's multicast/interface, ttl and loopback settings); prints
 * JSON lines `ready` and, once EXPECTED events were sent and acknowledged, `done`.
 */
import dgram from 'node:dgram';
import { jetstreamManager, StorageType } from '@nats-io/jetstream';
import { createInbox } from '@nats-io/transport-node';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { EslClient } from '../../bridge/sources/esl/client.js';
import { encodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';

const MAX_IN_FLIGHT = 1024;
const [portArg, expectedArg, group, groupPortArg, natsUrl, iface, ttl, loopback] = process.argv.slice(2);
const expected = Number(expectedArg);
const groupPort = Number(groupPortArg);
const out = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');

const socket = dgram.createSocket({ type: 'udp4' });
await new Promise<void>((resolve) => socket.bind(0, iface, resolve));
socket.setMulticastInterface(iface);
socket.setMulticastTTL(Number(ttl));
socket.setMulticastLoopback(loopback === 'true');

const nc = await connectNats({ servers: [natsUrl], auth: {}, tls: null }, { logger: silentLogger() });
await (await jetstreamManager(nc)).streams.add({ name: 'FLOOR', subjects: ['floor.>'], storage: StorageType.File });
const inbox = createInbox();
let acked = 0;
let inFlight = 0;
let resume: (() => void) | null = null;
let finished: (() => void) | null = null;
nc.subscribe(`${inbox}.*`, {
  callback: () => {
    acked++;
    inFlight--;
    if (acked === expected) finished?.();
    if (resume !== null && inFlight < MAX_IN_FLIGHT / 2) {
      const go = resume;
      resume = null;
      go();
    }
  },
});

const client = new EslClient(
  { host: '127.0.0.1', port: Number(portArg), password: 'ClueCon', reconnectMaxMs: 800, queueMaxEvents: 1_000, queueMaxBytes: 16 * 1024 ** 2, maxFrameBytes: 16 * 1024 * 1024, commandTimeoutMs: 10_000 },
  { subscription: 'ALL', logger: silentLogger(), metrics: new Metrics() },
);
client.start();
await client.ready(10_000);
out({ type: 'ready' });
const allAcked = new Promise<void>((resolve) => (finished = resolve));
let sent = 0;
for await (const batch of client.events()) {
  for (const event of batch) {
    const datagram = encodeDatagram(event, 'floor', null);
    socket.send(datagram, groupPort, group);
    nc.publish(`floor.${event.name}`, datagram, { reply: `${inbox}.${++sent}` });
    inFlight++;
  }
  if (inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => (resume = resolve));
  if (sent >= expected) break;
}
await allAcked;
out({ type: 'done', count: sent, acked });
await client.stop();
await nc.close();
socket.close();
process.exit(0);
