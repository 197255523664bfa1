import { afterEach, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { connectNats, NatsClient } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { readStored } from '../../bridge/transports/nats/subscriber.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { natsTestConfig, startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { sleep, until } from '../support/wait.js';

const logger = silentLogger();

/** Sequences stored in the stream, in stream order. */
async function storedSequences(server: NatsServer, stream: string): Promise<number[]> {
  const nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
  try {
    const out: number[] = [];
    for await (const item of readStored(nc, stream, new SubjectMapper('fs', 'test'), { since: new Date(0) })) out.push(item.event.sequence!);
    const info = await (await jetstreamManager(nc)).streams.info(stream);
    expect(info.state.messages).toBe(out.length);
    return out;
  } finally {
    await nc.close();
  }
}

/**
 * Feeds one event every `intervalMs` while the server is stopped for `outageMs`
 * in the middle. The traffic keeps its pace through the outage because deliver() is
 * synchronous: the count of events delivered while the server was down shows it.
 */
async function trafficWithOutage(server: NatsServer, publisher: NatsPublisher, client: NatsClient, outageMs: number) {
  let seq = 0;
  let stop = false;
  let reconnectedAt = 0;
  const unlisten = client.onChange((up) => {
    if (up && reconnectedAt === 0 && seq > 0) reconnectedAt = seq;
  });
  const traffic = (async () => {
    while (!stop) {
      publisher.deliver({ event: testEvent('uuid-outage', ++seq), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
      await sleep(5);
    }
  })();
  await sleep(700);
  await server.stop();
  const stoppedAt = seq;
  reconnectedAt = 0;
  await sleep(outageMs);
  await server.start();
  const restartedAt = seq;
  await sleep(700);
  stop = true;
  await traffic;
  unlisten();
  return { total: seq, stoppedAt, restartedAt, reconnectedAt: reconnectedAt || seq };
}

describe('NATS outage (server stopped 5 s under traffic)', () => {
  let server: NatsServer | undefined;
  let client: NatsClient | undefined;
  let publisher: NatsPublisher | undefined;

  /** A publisher on a fresh server, under traffic through a 5 s outage, drained. */
  async function publishThroughOutage(stream: string, buffer?: { maxEvents: number; maxBytes: number }) {
    server = await startNatsServer();
    const defaults = natsTestConfig([]);
    const config = natsTestConfig([server.url], { stream: { ...defaults.stream, name: stream }, buffer: buffer ?? defaults.buffer });
    client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger });
    await publisher.start();
    const run = await trafficWithOutage(server, publisher, client, 5_000);
    await until(() => publisher!.pending === 0, 20_000);
    return { metrics, run };
  }

  afterEach(async () => {
    await publisher?.stop();
    await client?.close();
    await server?.dispose();
  });

  it('buffers while NATS is down and delivers every event once, in order, after reconnect', async () => {
    const { metrics, run } = await publishThroughOutage('OUTAGE');

    expect(run.restartedAt - run.stoppedAt).toBeGreaterThan(100);
    const stored = await storedSequences(server!, 'OUTAGE');
    expect(stored).toEqual(Array.from({ length: run.total }, (_, i) => i + 1));
    const drops = await metrics.drops.get();
    expect(drops.values.filter((v) => v.labels.component === 'nats_publisher').reduce((n, v) => n + v.value, 0)).toBe(0);
  }, 45_000);

  it('drops the oldest buffered events when the buffer overflows, counted, and keeps order for the rest', async () => {
    const { metrics, run } = await publishThroughOutage('OVERFLOW', { maxEvents: 50, maxBytes: 1024 * 1024 });

    const stored = await storedSequences(server!, 'OVERFLOW');
    const dropped = (await metrics.drops.get()).values.find((v) => v.labels.component === 'nats_publisher' && v.labels.cause === 'buffer_full')?.value ?? 0;
    // Strictly increasing: in order and no duplicates.
    for (let i = 1; i < stored.length; i++) expect(stored[i]).toBeGreaterThan(stored[i - 1]);
    expect(dropped).toBeGreaterThan(0);
    expect(stored.length + dropped).toBe(run.total);
    // Everything before the outage and the newest 50 of the outage survive: the oldest were dropped.
    const missing = new Set(Array.from({ length: run.total }, (_, i) => i + 1).filter((s) => !stored.includes(s)));
    expect(Math.min(...missing)).toBeGreaterThan(run.stoppedAt - 60);
    // Overflow can go on after the restart until the client has reconnected (its backoff), not after.
    expect(Math.max(...missing)).toBeLessThanOrEqual(run.reconnectedAt);
    expect(stored.slice(-10)).toEqual(Array.from({ length: 10 }, (_, i) => run.total - 9 + i));
  }, 45_000);
});
