import { afterEach, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { connectNats, NatsClient } from '../../bridge/transports/nats/connection.js';
import { decodePayload } from '../../bridge/transports/nats/payload.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { ensureStream, ORIGIN_NODE_HEADER } from '../../bridge/transports/nats/stream.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { natsTestConfig, startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { sleep, until } from '../support/wait.js';

/**
 * The publisher's async-publish mechanism: core publishes with a reply subject per send,
 * PubAcks matched on one inbox subscription, overdue acks failed by a periodic sweep.
 */
const logger = silentLogger();

async function counterValue(metrics: Metrics, name: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  return metric ? (await metric.get()).values.reduce((n, v) => n + v.value, 0) : 0;
}

async function sentValue(metrics: Metrics): Promise<number> {
  return (await metrics.eventsOut.get()).values.find((v) => v.labels.transport === 'nats')?.value ?? 0;
}

/** Event-Sequence, Nats-Msg-Id and origin header of every stored message, in stream order. */
async function stored(nc: NatsConnection, stream: string): Promise<{ seq: number; msgId: string | undefined; origin: string | undefined }[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const out = [];
  for (let s = info.state.first_seq; s <= info.state.last_seq && info.state.messages > 0; s++) {
    const msg = await jsm.streams.getMessage(stream, { seq: s });
    if (!msg) continue;
    const event = decodePayload(msg.data, msg.header);
    out.push({ seq: event.sequence!, msgId: msg.header.get('Nats-Msg-Id') || undefined, origin: msg.header.get(ORIGIN_NODE_HEADER) || undefined });
  }
  return out;
}

const origin = () => ({ transport: 'esl' as const, node: 'fs-a', receivedAt: Date.now() });

describe('NatsPublisher async publish (reply inbox + ack sweep)', () => {
  let server: NatsServer | undefined;
  let client: NatsClient | undefined;
  let publisher: NatsPublisher | undefined;
  let nc: NatsConnection | undefined;
  let blocker: Subscription | undefined;

  afterEach(async () => {
    blocker?.unsubscribe();
    await publisher?.stop();
    await client?.close();
    await nc?.close();
    await server?.dispose();
    server = client = publisher = nc = blocker = undefined;
  });

  it('stores every event in order with its Nats-Msg-Id and origin header; a repeated event is a counted duplicate', async () => {
    server = await startNatsServer();
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'ASYNC_ORDER' }, maxInFlight: 16 });
    client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger });
    await publisher.start();
    // More events than the in-flight window, so the window refills from acks.
    for (let i = 1; i <= 500; i++) publisher.deliver({ event: testEvent('uuid-async', i), origin: origin() });
    await until(() => publisher!.pending === 0, 10_000);
    expect(await sentValue(metrics)).toBe(500);

    // The same events again (same Core-UUID:Event-Sequence): JetStream deduplicates them.
    for (let i = 1; i <= 20; i++) publisher.deliver({ event: testEvent('uuid-async', i), origin: origin() });
    await until(() => publisher!.pending === 0, 10_000);
    expect(await counterValue(metrics, 'fsb_nats_publish_duplicates_total')).toBe(20);
    expect(await sentValue(metrics)).toBe(500);

    nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
    const messages = await stored(nc, 'ASYNC_ORDER');
    expect(messages.map((m) => m.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(messages[41]).toEqual({ seq: 42, msgId: 'uuid-async:42', origin: 'fs-a' });
  }, 30_000);

  it('remembers the ids it got stored in a bounded window: a recent event again is a duplicate, one older than the window looks like a conflict', async () => {
    server = await startNatsServer();
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'ASYNC_WINDOW' } });
    client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger });
    await publisher.start();
    // 4,096 ids are remembered (STORED_IDS_REMEMBERED): 104 more push the first 104 out.
    const total = 4_200;
    for (let i = 1; i <= total; i++) publisher.deliver({ event: testEvent('uuid-window', i), origin: origin() });
    await until(() => publisher!.pending === 0, 20_000);
    for (let i = total - 19; i <= total; i++) publisher.deliver({ event: testEvent('uuid-window', i), origin: origin() });
    await until(() => publisher!.pending === 0, 10_000);
    expect(await counterValue(metrics, 'fsb_nats_publish_duplicates_total')).toBe(20);
    expect(await counterValue(metrics, 'fsb_nats_publish_msgid_conflicts_total')).toBe(0);
    // The first one was forgotten: its duplicate answer reads as another publisher's id, so it is sent again under a fresh one.
    publisher.deliver({ event: testEvent('uuid-window', 1), origin: origin() });
    await until(() => publisher!.pending === 0, 10_000);
    expect(await counterValue(metrics, 'fsb_nats_publish_msgid_conflicts_total')).toBe(1);
    expect(await sentValue(metrics)).toBe(total + 1);
  }, 60_000);

  it('an event without Core-UUID/Event-Sequence goes out without a Nats-Msg-Id (reused headers do not leak the previous id)', async () => {
    server = await startNatsServer();
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'ASYNC_NOID' } });
    client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger });
    await publisher.start();
    publisher.deliver({ event: testEvent('uuid-id', 7), origin: origin() });
    const anonymous = testEvent('uuid-id', 8);
    anonymous.delete('Core-UUID');
    publisher.deliver({ event: anonymous, origin: origin() });
    await until(() => publisher!.pending === 0, 10_000);
    nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
    const messages = await stored(nc, 'ASYNC_NOID');
    expect(messages).toEqual([
      { seq: 7, msgId: 'uuid-id:7', origin: 'fs-a' },
      { seq: 8, msgId: undefined, origin: 'fs-a' },
    ]);
  }, 30_000);

  it('a Core-UUID from the wire with CR/LF, "%" or any unicode still gives each event its own stable Nats-Msg-Id on one header line', async () => {
    server = await startNatsServer();
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'ASYNC_WIREID' } });
    client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger });
    await publisher.start();
    const uuids = ['a\r\nNats-Expected-Stream: X', 'a%0D%0ANats-Expected-Stream: X', ' spaced ', 'é\u0000\ud800😀', '%'];
    uuids.forEach((uuid, i) => publisher!.deliver({ event: testEvent(uuid, i + 1), origin: origin() }));
    await until(() => publisher!.pending === 0, 10_000);
    // Sent again: every one is recognised as the same event (a counted duplicate, not a conflict or a new message).
    uuids.forEach((uuid, i) => publisher!.deliver({ event: testEvent(uuid, i + 1), origin: origin() }));
    await until(() => publisher!.pending === 0, 10_000);
    expect(await sentValue(metrics)).toBe(uuids.length);
    expect(await counterValue(metrics, 'fsb_nats_publish_duplicates_total')).toBe(uuids.length);
    expect(await counterValue(metrics, 'fsb_nats_publish_msgid_conflicts_total')).toBe(0);
    nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
    const messages = await stored(nc, 'ASYNC_WIREID');
    expect(messages.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5]);
    // No header line was injected, the ids stay distinct, and every message keeps its origin.
    expect(new Set(messages.map((m) => m.msgId)).size).toBe(uuids.length);
    for (const m of messages) {
      expect(m.msgId).not.toMatch(/[\r\n]/);
      expect(m.origin).toBe('fs-a');
    }
    expect(messages[0].msgId).not.toBe(messages[1].msgId);
  }, 30_000);

  it('a publish nobody acks times out by the sweep, is held (not dropped) and resent in order once JetStream answers again', async () => {
    server = await startNatsServer();
    const streamName = 'ASYNC_SWEEP';
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: streamName }, maxInFlight: 8 });
    client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger, ackTimeoutMs: 200 });
    await publisher.start();
    nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
    const jsm = await jetstreamManager(nc);
    const subjects = new SubjectMapper(config.subjectPrefix, 'test');

    // Without the stream, a plain subscriber that never replies holds the subject: no
    // "no responders" answer comes back, so only the sweep can end these publishes.
    await jsm.streams.delete(streamName);
    blocker = nc.subscribe(subjects.clusterWildcard);
    await nc.flush();
    for (let i = 1; i <= 30; i++) publisher.deliver({ event: testEvent('uuid-sweep', i), origin: origin() });
    await sleep(700);
    expect(publisher.pending).toBe(30);
    expect(await sentValue(metrics)).toBe(0);

    blocker.unsubscribe();
    blocker = undefined;
    await ensureStream(jsm, config.stream, subjects.clusterWildcard, logger);
    await until(() => publisher!.pending === 0, 15_000);
    expect((await stored(nc, streamName)).map((m) => m.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(await sentValue(metrics)).toBe(30);
    const drops = await metrics.drops.get();
    expect(drops.values.filter((v) => v.labels.component === 'nats_publisher').reduce((n, v) => n + v.value, 0)).toBe(0);
  }, 30_000);
});
