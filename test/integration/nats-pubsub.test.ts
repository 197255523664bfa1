import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { NatsAuthError } from '../../bridge/errors.js';
import { serializeJson } from '../../bridge/event/json.js';
import { serializePlain } from '../../bridge/event/plain.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { LOOP_GUARD_HEADER, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { connectNats, NatsClient } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { NatsSubscriber, readStored, subscribeLive, type ReadEvent } from '../../bridge/transports/nats/subscriber.js';
import { PAYLOAD_TYPE_HEADER } from '../../bridge/transports/nats/payload.js';
import { ORIGIN_NODE_HEADER } from '../../bridge/transports/nats/stream.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { natsTestConfig, startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { until } from '../support/wait.js';

const logger = silentLogger();

async function counterValue(metrics: Metrics, name: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  return metric ? ((await metric.get()).values[0]?.value ?? 0) : 0;
}

function local(event: ReturnType<typeof testEvent>, node: string): BridgeEvent {
  return { event, origin: { transport: 'esl', node, receivedAt: Date.now() } };
}

describe('NATS publish and subscribe (real nats-server)', () => {
  let server: NatsServer;
  let nc: NatsConnection;

  /** A started subscriber for `node` on its own stream, collecting what it emits. */
  async function subscriberOf(node: string, cluster: string, stream: string) {
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: stream } });
    const client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    const subscriber = new NatsSubscriber(config, { client, node: testNode(node, cluster), metrics, logger });
    const received: BridgeEvent[] = [];
    await subscriber.start((item) => {
      received.push(item);
      item.delivery?.ack();
    });
    return { client, metrics, subscriber, received };
  }

  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
  });
  afterAll(async () => {
    await nc?.close();
    await server?.dispose();
  });

  it('publishes to the node/event subject with FreeSWITCH plain bytes and identity headers; another node receives it, the own node skips it', async () => {
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'PUBSUB' } });
    const metricsA = new Metrics();
    const clientA = new NatsClient(config, { logger });
    const clientB = new NatsClient(config, { logger });
    const publisher = new NatsPublisher(config, { client: clientA, node: testNode('fs-a'), metrics: metricsA, logger });
    const ownSubscriber = new NatsSubscriber(config, { client: clientA, node: testNode('fs-a'), metrics: metricsA, logger });
    const subscriber = new NatsSubscriber(config, { client: clientB, node: testNode('fs-b'), metrics: new Metrics(), logger });
    const received: BridgeEvent[] = [];
    const ownReceived: BridgeEvent[] = [];
    const live: ReadEvent[] = [];
    try {
      await publisher.start();
      await subscriber.start((item) => {
        received.push(item);
        item.delivery?.ack();
      });
      await ownSubscriber.start((item) => ownReceived.push(item));
      const liveSub = subscribeLive(nc, new SubjectMapper('fs', 'test'), { event: 'sofia::register' }, (e) => live.push(e));
      await nc.flush();

      const register = testEvent('uuid-a', 1, 'CUSTOM', 'sofia::register', [['from-user', '1000'], ['status', 'Registered(UDP)']]);
      register.body = 'line1\nline2';
      const presence = testEvent('uuid-a', 2, 'PRESENCE_IN', undefined, [['from', '1000@x']]);
      publisher.deliver(local(register, 'fs-a'));
      publisher.deliver(local(presence, 'fs-a'));
      await until(() => received.length === 2);

      expect(received.map((r) => r.event.key)).toEqual(['uuid-a:1', 'uuid-a:2']);
      expect(received[0].origin).toMatchObject({ transport: 'nats', node: 'fs-a' });
      expect(received[0].event.headers).toEqual(register.headers);
      expect(received[0].event.body).toBe('line1\nline2');

      // What is stored: subject layout, payload shape and headers.
      const js = jetstream(nc);
      const stored = await (await js.streams.get('PUBSUB')).getMessage({ seq: 1 });
      expect(stored?.subject).toBe('fs.test.fs-a.CUSTOM.sofia.register');
      expect(stored?.string()).toBe(serializePlain(register));
      expect(stored?.header.get(PAYLOAD_TYPE_HEADER)).toBe('text/event-plain');
      expect(stored?.header.get('Nats-Msg-Id')).toBe('uuid-a:1');
      expect(stored?.header.get(ORIGIN_NODE_HEADER)).toBe('fs-a');
      expect((await (await js.streams.get('PUBSUB')).getMessage({ seq: 2 }))?.subject).toBe('fs.test.fs-a.PRESENCE_IN');

      // Live tail filter got only the register, shown as event json.
      await until(() => live.length === 1);
      expect(live[0].event.subclass).toBe('sofia::register');
      expect(live[0].json).toBe(serializeJson(register));
      liveSub.unsubscribe();

      // The node's own subscriber skipped both, counted.
      await until(async () => (await counterValue(metricsA, 'fsb_nats_own_events_skipped_total')) === 2);
      expect(ownReceived).toHaveLength(0);
    } finally {
      await publisher.stop();
      await subscriber.stop();
      await ownSubscriber.stop();
      await clientA.close();
      await clientB.close();
    }
  });

  it('with nats/peers, a node reads each other node through its own consumer, is never sent its own events, and takes over where its cluster-wide consumer had got to', async () => {
    const base = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'PEERS' } });
    const withPeers = { ...base, peers: ['fs-a', 'fs-b', 'fs-c'] };
    const jsm = await jetstreamManager(nc);
    const clients: NatsClient[] = [];
    const publisherOf = async (node: string) => {
      const client = new NatsClient(base, { logger });
      clients.push(client);
      const publisher = new NatsPublisher(base, { client, node: testNode(node, 'peers'), metrics: new Metrics(), logger });
      await publisher.start();
      return publisher;
    };
    const received: string[] = [];
    const metricsA = new Metrics();
    const lines: { msg: string; nodes?: string[] }[] = [];
    const capture = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const subscriberA = async (config: typeof base) => {
      const client = new NatsClient(config, { logger });
      clients.push(client);
      const subscriber = new NatsSubscriber(config, { client, node: testNode('fs-a', 'peers'), metrics: metricsA, logger: capture });
      await subscriber.start((item) => {
        received.push(item.event.key ?? "");
        item.delivery?.ack();
      });
      return subscriber;
    };
    const consumerOf = (durable: string) => jsm.consumers.info('PEERS', durable).then((info) => info, () => null);
    const [a, b, c] = [await publisherOf('fs-a'), await publisherOf('fs-b'), await publisherOf('fs-c')];
    try {
      // Before: one cluster-wide consumer, which is sent A's own events too.
      let subscriber = await subscriberA(base);
      expect(subscriber.durables).toEqual(['fsb_fs-a']);
      b.deliver(local(testEvent('uuid-b', 1, 'PRESENCE_IN'), 'fs-b'));
      a.deliver(local(testEvent('uuid-a', 1, 'PRESENCE_IN'), 'fs-a'));
      await until(async () => received.length === 1 && (await counterValue(metricsA, 'fsb_nats_own_events_skipped_total')) === 1);
      await until(async () => (await consumerOf('fsb_fs-a'))?.num_ack_pending === 0);
      await subscriber.stop();

      // While A is down, B and C go on, and D, which the list below leaves out, publishes once.
      b.deliver(local(testEvent('uuid-b', 2, 'PRESENCE_IN'), 'fs-b'));
      c.deliver(local(testEvent('uuid-c', 1, 'CUSTOM', 'sofia::register'), 'fs-c'));
      const d = await publisherOf('fs-d');
      d.deliver(local(testEvent('uuid-d', 1, 'PRESENCE_IN'), 'fs-d'));
      await until(async () => (await jsm.streams.info('PEERS')).state.messages === 5);
      await d.stop();

      // The same list on every node: A leaves itself out and reads B and C from where the cluster-wide consumer stopped, which is gone.
      subscriber = await subscriberA(withPeers);
      expect(subscriber.durables).toEqual(['fsb_fs-a__fs-b', 'fsb_fs-a__fs-c']);
      await until(() => received.length === 3);
      expect(received.slice(1).sort()).toEqual(['uuid-b:2', 'uuid-c:1']);
      expect(await consumerOf('fsb_fs-a')).toBeNull();
      expect((await consumerOf('fsb_fs-a__fs-b'))?.config.filter_subject).toBe('fs.peers.fs-b.>');
      expect((await consumerOf('fsb_fs-a__fs-c'))?.config.filter_subject).toBe('fs.peers.fs-c.>');
      // D is never read, and the operator is told so once.
      const unlisted = lines.filter((line) => line.msg.startsWith('JetStream holds events of nodes that nats/peers does not list'));
      expect(unlisted.map((line) => line.nodes)).toEqual([['fs-d']]);

      // A's own events are no longer sent to it: a later one of B's arrives, none of A's.
      a.deliver(local(testEvent('uuid-a', 2, 'PRESENCE_IN'), 'fs-a'));
      b.deliver(local(testEvent('uuid-b', 3, 'PRESENCE_IN'), 'fs-b'));
      await until(() => received.length === 4);
      expect(received[3]).toBe('uuid-b:3');
      expect(await counterValue(metricsA, 'fsb_nats_own_events_skipped_total')).toBe(1);
      await until(async () => (await consumerOf('fsb_fs-a__fs-b'))?.num_ack_pending === 0);
      await subscriber.stop();

      // A restart resumes each per-peer consumer: only what came meanwhile, nothing twice.
      c.deliver(local(testEvent('uuid-c', 2, 'PRESENCE_IN'), 'fs-c'));
      subscriber = await subscriberA(withPeers);
      await until(() => received.length === 5);
      expect(received[4]).toBe('uuid-c:2');
      b.deliver(local(testEvent('uuid-b', 4, 'PRESENCE_IN'), 'fs-b'));
      await until(() => received.length === 6);
      expect(new Set(received).size).toBe(6);
      await subscriber.stop();
    } finally {
      for (const publisher of [a, b, c]) await publisher.stop();
      for (const client of clients) await client.close();
    }
  });

  it('with payload-format json writes event json (Content-Type text/event-json), and a plain-format node reads it', async () => {
    const json = natsTestConfig([server.url], { payloadFormat: 'json', stream: { ...natsTestConfig([]).stream, name: 'PAYLOAD_JSON' } });
    const clientA = new NatsClient(json, { logger });
    const clientB = new NatsClient(json, { logger });
    // A cluster of its own: its stream's subjects must not overlap the other tests' streams.
    const publisher = new NatsPublisher(json, { client: clientA, node: testNode('fs-a', 'jsonfmt'), metrics: new Metrics(), logger });
    const subscriber = new NatsSubscriber({ ...json, payloadFormat: 'plain' }, { client: clientB, node: testNode('fs-b', 'jsonfmt'), metrics: new Metrics(), logger });
    const received: BridgeEvent[] = [];
    try {
      await publisher.start();
      await subscriber.start((item) => received.push(item));
      const register = testEvent('uuid-j', 1, 'CUSTOM', 'sofia::register', [['X', 'a'], ['X', 'b']]);
      register.body = 'é\n';
      publisher.deliver(local(register, 'fs-a'));
      await until(() => received.length === 1);
      expect(received[0].event.headers).toEqual(register.headers);
      expect(received[0].event.body).toBe('é\n');
      const stored = await (await jetstream(nc).streams.get('PAYLOAD_JSON')).getMessage({ seq: 1 });
      expect(stored?.string()).toBe(serializeJson(register));
      expect(stored?.header.get(PAYLOAD_TYPE_HEADER)).toBe('text/event-json');
    } finally {
      await publisher.stop();
      await subscriber.stop();
      await clientA.close();
      await clientB.close();
    }
  });

  it('never publishes events carrying the loop guard or outside the bindings', async () => {
    const config = natsTestConfig([server.url], { bindings: Bindings.parse('PRESENCE_IN CUSTOM sofia::register'), stream: { ...natsTestConfig([]).stream, name: 'GUARD' } });
    const client = new NatsClient(config, { logger });
    const publisher = new NatsPublisher(config, { client, node: testNode('fs-a', 'guard'), metrics: new Metrics(), logger });
    try {
      await publisher.start();
      const guarded = testEvent('uuid-g', 1);
      guarded.add(LOOP_GUARD_HEADER, 'fs-a');
      publisher.deliver(local(guarded, 'fs-a'));
      publisher.deliver(local(testEvent('uuid-g', 2, 'HEARTBEAT'), 'fs-a'));
      publisher.deliver(local(testEvent('uuid-g', 3, 'CUSTOM', 'sofia::expire'), 'fs-a'));
      publisher.deliver(local(testEvent('uuid-g', 4), 'fs-a'));
      await until(() => publisher.pending === 0);
      await new Promise((r) => setTimeout(r, 100));
      const info = await (await jetstreamManager(nc)).streams.info('GUARD');
      expect(info.state.messages).toBe(1);
      const msg = await (await jetstream(nc).streams.get('GUARD')).getMessage({ seq: info.state.last_seq });
      expect(msg?.header.get('Nats-Msg-Id')).toBe('uuid-g:4');
    } finally {
      await publisher.stop();
      await client.close();
    }
  });

  it('stores an event published twice once (JetStream dedup by Nats-Msg-Id)', async () => {
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'DEDUP' } });
    const client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    const publisher = new NatsPublisher(config, { client, node: testNode('fs-a', 'dedup'), metrics, logger });
    try {
      await publisher.start();
      const event = testEvent('uuid-d', 7);
      publisher.deliver(local(event, 'fs-a'));
      publisher.deliver(local(event.clone(), 'fs-a'));
      publisher.deliver(local(testEvent('uuid-d', 8), 'fs-a'));
      await until(() => publisher.pending === 0);
      const info = await (await jetstreamManager(nc)).streams.info('DEDUP');
      expect(info.state.messages).toBe(2);
      expect(await counterValue(metrics, 'fsb_nats_publish_duplicates_total')).toBe(1);
    } finally {
      await publisher.stop();
      await client.close();
    }
  });

  it('escapes forbidden characters in node, event and subclass tokens and parses them back', async () => {
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'ESCAPE' } });
    const client = new NatsClient(config, { logger });
    const publisher = new NatsPublisher(config, { client, node: testNode('fs a.b*c>', 'escape'), metrics: new Metrics(), logger });
    const received: BridgeEvent[] = [];
    const clientB = new NatsClient(config, { logger });
    const subscriber = new NatsSubscriber(config, { client: clientB, node: testNode('fs-b', 'escape'), metrics: new Metrics(), logger });
    try {
      await publisher.start();
      await subscriber.start((item) => {
        received.push(item);
        item.delivery?.ack();
      });
      publisher.deliver(local(testEvent('uuid-e', 1, 'CUSTOM', 'my app::évent.x::'), 'fs a.b*c>'));
      await until(() => received.length === 1);
      const msg = await (await jetstream(nc).streams.get('ESCAPE')).getMessage({ seq: 1 });
      expect(msg?.subject).toBe('fs.escape.fs%20a%2Eb%2Ac%3E.CUSTOM.my%20app.%C3%A9vent%2Ex.%');
      const parsed = new SubjectMapper('fs', 'escape').parse(msg!.subject);
      expect(parsed).toEqual({ node: 'fs a.b*c>', name: 'CUSTOM', subclass: 'my app::évent.x::' });
      expect(received[0].origin.node).toBe('fs a.b*c>');
    } finally {
      await publisher.stop();
      await subscriber.stop();
      await client.close();
      await clientB.close();
    }
  });

  it('replay returns exactly the events published inside the time window, oldest first', async () => {
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'REPLAY' } });
    const client = new NatsClient(config, { logger });
    const publisher = new NatsPublisher(config, { client, node: testNode('fs-a', 'replay'), metrics: new Metrics(), logger });
    const mapper = new SubjectMapper('fs', 'replay');
    try {
      await publisher.start();
      for (let i = 1; i <= 5; i++) publisher.deliver(local(testEvent('uuid-r', i), 'fs-a'));
      await until(() => publisher.pending === 0);
      await new Promise((r) => setTimeout(r, 50));
      const since = new Date();
      for (let i = 6; i <= 10; i++) publisher.deliver(local(testEvent('uuid-r', i, i % 2 ? 'CUSTOM' : 'PRESENCE_IN', i % 2 ? 'sofia::register' : undefined), 'fs-a'));
      await until(() => publisher.pending === 0);
      await new Promise((r) => setTimeout(r, 50));
      const untilTime = new Date();
      await new Promise((r) => setTimeout(r, 30));
      for (let i = 11; i <= 13; i++) publisher.deliver(local(testEvent('uuid-r', i), 'fs-a'));
      await until(() => publisher.pending === 0);

      const window: string[] = [];
      for await (const item of readStored(nc, 'REPLAY', mapper, { since, until: untilTime })) window.push(item.event.key!);
      expect(window).toEqual(['uuid-r:6', 'uuid-r:7', 'uuid-r:8', 'uuid-r:9', 'uuid-r:10']);

      const filtered: string[] = [];
      for await (const item of readStored(nc, 'REPLAY', mapper, { since, until: untilTime, event: 'sofia::register', node: 'fs-a' })) filtered.push(item.event.key!);
      expect(filtered).toEqual(['uuid-r:7', 'uuid-r:9']);

      const toEnd: string[] = [];
      for await (const item of readStored(nc, 'REPLAY', mapper, { since: untilTime })) toEnd.push(item.event.key!);
      expect(toEnd).toEqual(['uuid-r:11', 'uuid-r:12', 'uuid-r:13']);

      const empty: string[] = [];
      for await (const item of readStored(nc, 'REPLAY', mapper, { since: new Date(Date.now() + 60_000) })) empty.push(item.event.key!);
      expect(empty).toEqual([]);
    } finally {
      await publisher.stop();
      await client.close();
    }
  });

  it('accepts a message published by a non-bridge client and skips garbage payloads, counted', async () => {
    const { client, metrics, subscriber, received } = await subscriberOf('fs-b', 'foreign', 'FOREIGN');
    try {
      const js = jetstream(nc);
      const h = headers();
      h.set(ORIGIN_NODE_HEADER, 'fs-x');
      await js.publish('fs.foreign.fs-x.PRESENCE_IN', 'not json', { headers: h });
      const plain = headers();
      plain.set(ORIGIN_NODE_HEADER, 'fs-x');
      plain.set(PAYLOAD_TYPE_HEADER, 'text/event-plain');
      await js.publish('fs.foreign.fs-x.PRESENCE_IN', 'not: plain\nat all', { headers: plain });
      // Without a Content-Type header a payload is json, as every payload was before plain existed.
      await js.publish('fs.foreign.fs-x.PRESENCE_IN', serializeJson(testEvent('uuid-x', 1)));
      await js.publish('fs.foreign.fs-x.PRESENCE_IN', serializePlain(testEvent('uuid-x', 2)), { headers: plain });
      await until(() => received.length === 2);
      expect(received.map((r) => r.origin.node)).toEqual(['fs-x', 'fs-x']);
      expect(received.map((r) => r.event.key)).toEqual(['uuid-x:1', 'uuid-x:2']);
      const drops = await metrics.drops.get();
      expect(drops.values.find((v) => v.labels.cause === 'bad_payload')?.value).toBe(2);
    } finally {
      await subscriber.stop();
      await client.close();
    }
  });

  it('takes the origin from the subject and refuses messages whose own headers name another node, counted, never emitted', async () => {
    const { client, metrics, subscriber, received } = await subscriberOf('fs-b', 'forged', 'FORGED');
    try {
      const js = jetstream(nc);
      const claiming = (node: string) => {
        const h = headers();
        h.set(ORIGIN_NODE_HEADER, node);
        return { headers: h };
      };
      // Before: the header won, so fs-x could speak for fs-y, or make the receiver skip its own node's events.
      await js.publish('fs.forged.fs-x.PRESENCE_IN', serializeJson(testEvent('uuid-x', 1)), claiming('fs-y'));
      await js.publish('fs.forged.fs-x.PRESENCE_IN', serializeJson(testEvent('uuid-x', 2)), claiming('fs-b'));
      await js.publish('fs.forged.fs-x.PRESENCE_IN', serializeJson(testEvent('uuid-x', 3, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-y']])));
      await js.publish('fs.forged.fs-x.CUSTOM.sofia.register', serializeJson(testEvent('uuid-x', 4, 'CUSTOM', 'sofia::register', [['Multicast-Sender', 'fs-y']])));
      // fs%2Dy decodes to fs-y, but no permission for fs-y names that token.
      await js.publish('fs.forged.fs%2Dy.PRESENCE_IN', serializeJson(testEvent('uuid-y', 1, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-y']])));
      await js.publish('fs.forged.fs-x.PRESENCE_IN', serializeJson(testEvent('uuid-x', 5, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-x']])), claiming('fs-x'));
      // The stream delivers in order: once the last message is in, the others have been handled.
      await until(() => received.length === 1);
      const drops = await metrics.drops.get();
      const dropped = (cause: string) => drops.values.find((v) => v.labels.component === 'nats_subscriber' && v.labels.cause === cause)?.value ?? 0;
      expect(dropped('origin_mismatch')).toBe(4);
      expect(dropped('no_origin')).toBe(1);
      expect(received.map((item) => [item.origin.node, item.event.key])).toEqual([['fs-x', 'uuid-x:5']]);
      expect(await counterValue(metrics, 'fsb_nats_own_events_skipped_total')).toBe(0);
    } finally {
      await subscriber.stop();
      await client.close();
    }
  });
});

describe('NATS auth', () => {
  it('connects with user/password and token; a bad password or token gives NatsAuthError', async () => {
    const userServer = await startNatsServer({ auth: { user: 'bridge', pass: 's3cret' }, jetstream: false });
    const tokenServer = await startNatsServer({ auth: { token: 't0ken' }, jetstream: false });
    try {
      const ok = await connectNats({ servers: [userServer.url], auth: { user: 'bridge', pass: 's3cret' }, tls: null }, { logger });
      await ok.close();
      const okToken = await connectNats({ servers: [tokenServer.url], auth: { token: 't0ken' }, tls: null }, { logger });
      await okToken.close();

      const bad = connectNats({ servers: [userServer.url], auth: { user: 'bridge', pass: 'wrong' }, tls: null }, { logger });
      await expect(bad).rejects.toBeInstanceOf(NatsAuthError);
      await expect(bad).rejects.toMatchObject({ code: 'FSB_ERR_NATS_AUTH' });
      await expect(connectNats({ servers: [tokenServer.url], auth: { token: 'nope' }, tls: null }, { logger })).rejects.toBeInstanceOf(NatsAuthError);

      // The bridge's client fails its start the same way instead of retrying forever.
      const client = new NatsClient({ servers: [userServer.url], auth: { user: 'bridge', pass: 'wrong' }, tls: null }, { logger });
      await expect(client.start()).rejects.toBeInstanceOf(NatsAuthError);
      await client.close();
    } finally {
      await userServer.dispose();
      await tokenServer.dispose();
    }
  });
});
