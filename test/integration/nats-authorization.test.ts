import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../../bridge/config/types.js';
import { defaultConfigXml, loadConfigFile } from '../../bridge/config/load.js';
import { NatsPermissionError } from '../../bridge/errors.js';
import { serializeJson } from '../../bridge/event/json.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import type { BridgeEvent } from '../../bridge/pipeline/types.js';
import { connectNats, NatsClient } from '../../bridge/transports/nats/connection.js';
import { openStateStore } from '../../bridge/transports/nats/kv.js';
import { nodeInboxPrefix, permissionViolation, renderAuthorization } from '../../bridge/transports/nats/permissions.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { provisionNats } from '../../bridge/transports/nats/setup.js';
import { NatsSubscriber } from '../../bridge/transports/nats/subscriber.js';
import { runCli } from '../support/cli.js';
import { startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { until } from '../support/wait.js';

const logger = silentLogger();
const EXAMPLE = loadConfigFile('config/event_bridge.conf.xml').config;
const CLUSTER = EXAMPLE.node.cluster;
const PASSWORDS = { FSB_NATS_PASSWORD_ADMIN: 'admin-secret', FSB_NATS_PASSWORD_FS_A: 'a-secret', FSB_NATS_PASSWORD_FS_B: 'b-secret', FSB_NATS_PASSWORD_FS_C: 'c-secret' };
const PASS: Record<string, string> = { 'fs-a': 'a-secret', 'fs-b': 'b-secret' };

/** The example config's NATS settings (what config/nats/authorization.conf was generated from), logged in as `user`. */
function natsAs(url: string, user: string, pass: string): NatsConfig {
  return { ...EXAMPLE.nats, servers: [url], auth: { user, pass }, tls: null, buffer: { maxEvents: 10_000, maxBytes: 16 * 1024 * 1024 } };
}

/** One node's bridge side of NATS (publisher, durable subscriber, KV) under its own restricted user. */
async function bridgeNode(url: string, name: string, peers = EXAMPLE.nats.peers, log = logger) {
  const config = { ...natsAs(url, name, PASS[name]), peers };
  const node = testNode(name, CLUSTER);
  const client = new NatsClient(config, { logger: log, inboxPrefix: nodeInboxPrefix(config.subjectPrefix, CLUSTER, name) });
  const metrics = new Metrics();
  const publisher = new NatsPublisher(config, { client, node, metrics, logger: log });
  const subscriber = new NatsSubscriber(config, { client, node, metrics, logger: log });
  const received: BridgeEvent[] = [];
  await publisher.start();
  // Stands in for the bridge, which acks once FreeSWITCH answered the injection.
  await subscriber.start((item) => {
    received.push(item);
    item.delivery?.ack();
  });
  const nc = await client.ready();
  const location = await openStateStore(nc, config.kv.locationBucket, { logger });
  const blf = await openStateStore(nc, config.kv.blfBucket, { logger });
  return {
    config,
    publisher,
    subscriber,
    received,
    location,
    blf,
    metrics,
    close: async () => {
      await subscriber.stop();
      await publisher.stop();
      await client.close();
    },
  };
}

async function counter(metrics: Metrics, name: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  return metric ? ((await metric.get()).values[0]?.value ?? 0) : 0;
}

/** What the server logged as refused for `user` (nats-server logs every violation as an error). */
function violationsOf(server: NatsServer, user: string): string[] {
  return server.log.split('\n').filter((line) => line.includes('Violation') && line.includes(`User "${user}"`));
}

describe('per-node NATS authorization (config/nats/authorization.conf on a real nats-server)', { timeout: 300_000 }, () => {
  let server: NatsServer;
  let admin: NatsConnection;

  beforeAll(async () => {
    server = await startNatsServer({ include: 'config/nats/authorization.conf', env: PASSWORDS });
    admin = await connectNats({ servers: [server.url], auth: { user: 'fsb-admin', pass: PASSWORDS.FSB_NATS_PASSWORD_ADMIN }, tls: null }, { logger });
  });
  afterAll(async () => {
    await admin?.close();
    await server?.dispose();
  });

  it('ships the authorization block that `nats-permissions` prints for the example config; refuses nodes that would share a durable', async () => {
    // A CLI start can take tens of seconds on a busy machine; nothing here is timed.
    const printed = await runCli(['nats-permissions', '--config', 'config/event_bridge.conf.xml', '--node', 'fs-a', '--node', 'fs-b', '--node', 'fs-c'], { timeoutMs: 120_000 });
    expect(printed.stderr).toBe('');
    expect(printed.code).toBe(0);
    expect(readFileSync('config/nats/authorization.conf', 'utf8')).toBe(printed.stdout);
    expect(printed.stdout).toBe(renderAuthorization(EXAMPLE.nats, CLUSTER, ['fs-a', 'fs-b', 'fs-c']));
    // Without --node, the nodes are the config's nats/peers (the example lists the same three).
    const fromPeers = await runCli(['nats-permissions', '--config', 'config/event_bridge.conf.xml'], { timeoutMs: 120_000 });
    expect(fromPeers.code).toBe(0);
    expect(fromPeers.stdout).toBe(printed.stdout);
    const dir = mkdtempSync(join(tmpdir(), 'fsb-perm-'));
    try {
      const noPeers = join(dir, 'event_bridge.conf.xml');
      writeFileSync(noPeers, defaultConfigXml({ nats: { enabled: 'true' } }));
      const none = await runCli(['nats-permissions', '--config', noPeers], { timeoutMs: 120_000 });
      expect(none.code).toBe(1);
      expect(none.stderr).toContain('no nodes: give --node for every node of the cluster, or list them in nats/peers');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const clash = await runCli(['nats-permissions', '--config', 'config/event_bridge.conf.xml', '--node', 'fs.a', '--node', 'fs_a'], { timeoutMs: 120_000 });
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain('FSB_ERR_CONFIG');
    expect(clash.stderr).toContain('share the durable consumer name fsb-fs_a');
  });

  it("a node's user may not create the stream or the buckets; the admin user does (nats-setup)", async () => {
    // fs-c's user: fs-a's must show no refusal at all in the next test.
    const nc = await connectNats(natsAs(server.url, 'fs-c', PASSWORDS.FSB_NATS_PASSWORD_FS_C), { logger, inboxPrefix: nodeInboxPrefix('fs', CLUSTER, 'fs-c') });
    try {
      const refused = await provisionNats(nc, EXAMPLE.nats, CLUSTER, logger).catch((err: unknown) => err);
      expect(refused).toBeInstanceOf(NatsPermissionError);
      expect((refused as NatsPermissionError).code).toBe('FSB_ERR_NATS_PERMISSION');
      expect((refused as NatsPermissionError).subject).toBe(`$JS.API.STREAM.CREATE.${EXAMPLE.nats.stream.name}`);
    } finally {
      await nc.close();
    }
    const setup = await runCli(['nats-setup', '--config', 'config/event_bridge.conf.xml'], {
      env: { FSB_NATS_SERVERS: server.url, FSB_NATS_USER: 'fsb-admin', FSB_NATS_PASS: PASSWORDS.FSB_NATS_PASSWORD_ADMIN },
      timeoutMs: 120_000,
    });
    expect(setup.stderr).toBe('');
    expect(setup.stdout.trim().split('\n')).toEqual([
      `stream ${EXAMPLE.nats.stream.name}: subjects fs.${CLUSTER}.>, file storage, 1 replica(s)`,
      `KV bucket ${EXAMPLE.nats.kv.locationBucket}: ready`,
      `KV bucket ${EXAMPLE.nats.kv.blfBucket}: ready`,
    ]);
    expect(setup.code).toBe(0);
  });

  it('a bridge whose user may not publish its events says so once a minute per subject (FSB_ERR_NATS_PERMISSION), not once per event', async () => {
    const lines: { code?: string; subject?: string; msg: string }[] = [];
    const capture = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    // fs-a's bridge started with fs-b's credentials: every publish under fs-a is refused.
    const config = natsAs(server.url, 'fs-b', PASS['fs-b']);
    const client = new NatsClient(config, { logger: capture, inboxPrefix: nodeInboxPrefix(config.subjectPrefix, CLUSTER, 'fs-b') });
    const publisher = new NatsPublisher(config, { client, node: testNode('fs-a', CLUSTER), metrics: new Metrics(), logger: capture, stopTimeoutMs: 100 });
    try {
      await publisher.start();
      for (let seq = 1; seq <= 5; seq++) publisher.deliver({ event: testEvent('uuid-m', seq), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
      const refused = `fs.${CLUSTER}.fs-a.PRESENCE_IN`;
      await until(() => violationsOf(server, 'fs-b').filter((line) => line.includes(refused)).length >= 5);
      const logged = lines.filter((line) => line.code === 'FSB_ERR_NATS_PERMISSION');
      expect(logged).toHaveLength(1);
      expect(logged[0].subject).toBe(refused);
      expect(logged[0].msg).toContain('nats-permissions');
      expect(publisher.pending).toBe(5);
    } finally {
      await publisher.stop();
      await client.close();
    }
  });

  it("each bridge works with its restricted user (publish, stream, durable consumer, KV), and B's credentials cannot publish as A", async () => {
    const jsm = await jetstreamManager(admin);
    const stream = EXAMPLE.nats.stream.name;
    // A started once with one cluster-wide consumer: with nats/peers its user may still take over from it and delete it.
    const before = await bridgeNode(server.url, 'fs-a', []);
    expect(before.subscriber.durables).toEqual(['fsb-fs-a']);
    await before.close();
    const a = await bridgeNode(server.url, 'fs-a');
    const b = await bridgeNode(server.url, 'fs-b');
    expect(a.subscriber.durables).toEqual(['fsb-fs-a__fs-b', 'fsb-fs-a__fs-c']);
    await expect(jsm.consumers.info(stream, 'fsb-fs-a')).rejects.toThrow();
    try {
      // Events both ways through the stream and each node's durable consumer.
      a.publisher.deliver({ event: testEvent('uuid-a', 1, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-a']]), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
      b.publisher.deliver({ event: testEvent('uuid-b', 1, 'CUSTOM', 'sofia::register', [['FreeSWITCH-Switchname', 'fs-b']]), origin: { transport: 'esl', node: 'fs-b', receivedAt: Date.now() } });
      await until(() => a.received.length === 1 && b.received.length === 1);
      expect(b.received[0].origin.node).toBe('fs-a');
      expect(a.received[0].origin.node).toBe('fs-b');
      // Acks went through: nothing left pending on either durable.
      await until(async () => (await jsm.consumers.info(stream, 'fsb-fs-a__fs-b')).num_ack_pending === 0 && (await jsm.consumers.info(stream, 'fsb-fs-b__fs-a')).num_ack_pending === 0);

      // KV: A writes, B's watch and load see it, A deletes; both buckets.
      const seen: [string, string | null][] = [];
      const stopWatch = await b.location.watch((key, value) => seen.push([key, value]));
      await a.location.put('example.com/1000/node-a', '{"x":1}');
      await a.blf.put('1000/call-1', '{"state":"early"}');
      await until(() => seen.length === 1);
      expect((await b.location.entries()).get('example.com/1000/node-a')).toBe('{"x":1}');
      expect((await b.blf.entries()).get('1000/call-1')).toBe('{"state":"early"}');
      await a.location.delete('example.com/1000/node-a');
      await until(() => seen.length === 2);
      expect(seen).toEqual([
        ['example.com/1000/node-a', '{"x":1}'],
        ['example.com/1000/node-a', null],
      ]);
      await stopWatch();

      // B's credentials, used directly: nothing under A's subjects, A's durable or A's inbox.
      const forger = await connect({ servers: server.url, user: 'fs-b', pass: PASS['fs-b'], inboxPrefix: nodeInboxPrefix('fs', CLUSTER, 'fs-b') });
      try {
        const js = jetstream(forger);
        const refusedSubject = async (attempt: Promise<unknown>) => permissionViolation(await attempt.then(() => undefined, (err: unknown) => err))?.subject;
        const forged = serializeJson(testEvent('uuid-forged', 1, 'CUSTOM', 'sofia::unregister', [['FreeSWITCH-Switchname', 'fs-a']]));
        expect(await refusedSubject(js.publish(`fs.${CLUSTER}.fs-a.CUSTOM.sofia.unregister`, forged))).toBe(`fs.${CLUSTER}.fs-a.CUSTOM.sofia.unregister`);
        expect(await refusedSubject(js.publish(`fs.${CLUSTER}.fs%2Da.PRESENCE_IN`, forged))).toBe(`fs.${CLUSTER}.fs%2Da.PRESENCE_IN`);
        expect(await refusedSubject(forger.request(`$JS.API.CONSUMER.MSG.NEXT.${stream}.fsb-fs-a`, '1'))).toBe(`$JS.API.CONSUMER.MSG.NEXT.${stream}.fsb-fs-a`);
        expect(await refusedSubject(forger.request(`$JS.API.CONSUMER.MSG.NEXT.${stream}.fsb-fs-a__fs-b`, '1'))).toBe(`$JS.API.CONSUMER.MSG.NEXT.${stream}.fsb-fs-a__fs-b`);
        expect(await refusedSubject(forger.request(`$JS.API.CONSUMER.DELETE.${stream}.fsb-fs-a__fs-b`))).toBe(`$JS.API.CONSUMER.DELETE.${stream}.fsb-fs-a__fs-b`);
        expect(await refusedSubject(forger.request(`$JS.API.CONSUMER.DELETE.${stream}.fsb-fs-a`))).toBe(`$JS.API.CONSUMER.DELETE.${stream}.fsb-fs-a`);
        expect(await refusedSubject(forger.request(`$JS.API.STREAM.UPDATE.${stream}`, '{}'))).toBe(`$JS.API.STREAM.UPDATE.${stream}`);
        expect(await refusedSubject(forger.request(`$JS.API.STREAM.PURGE.${stream}`))).toBe(`$JS.API.STREAM.PURGE.${stream}`);
        // Subscribing to A's inbox (its acks, pulls and KV replies) is refused by the server too.
        const errors: string[] = [];
        void (async () => {
          for await (const status of forger.status()) if (status.type === 'error') errors.push(String(status.error?.message));
        })();
        forger.subscribe(`${nodeInboxPrefix('fs', CLUSTER, 'fs-a')}.>`);
        await until(() => errors.some((e) => e.includes('Subscription to') && e.includes('fs-a')));

        // What B may do: publish on its own subject, with any Nats-Msg-Id. Taking the id of
        // A's next event (JetStream dedups across the stream) must not keep A's event out.
        const h = headers();
        h.set('Nats-Msg-Id', 'uuid-a:2');
        expect((await js.publish(`fs.${CLUSTER}.fs-b.PRESENCE_IN`, serializeJson(testEvent('uuid-b', 2, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-b']])), { headers: h })).duplicate).toBe(false);
        a.publisher.deliver({ event: testEvent('uuid-a', 2, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-a']]), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
        await until(() => b.received.some((item) => item.origin.node === 'fs-a' && item.event.key === 'uuid-a:2'));
        expect(await counter(a.metrics, 'fsb_nats_publish_msgid_conflicts_total')).toBe(1);
      } finally {
        await forger.close();
      }
      // Only A's two genuine events are stored under A's subjects.
      const onA = await jsm.streams.info(stream, { subjects_filter: `fs.${CLUSTER}.fs-a.>` });
      expect(Object.values(onA.state.subjects ?? {}).reduce((sum, n) => sum + n, 0)).toBe(2);

      // The bridges never asked for anything their users may not do.
      expect(violationsOf(server, 'fs-a')).toEqual([]);
      expect(violationsOf(server, 'fs-b').length).toBeGreaterThanOrEqual(6);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

/**
 * fs-a switched to nats/peers on a server whose authorization block is `authorization`:
 * it ran once with a cluster-wide consumer, then starts with the example's peers (fs-b,
 * fs-c) beside fs-b, which publishes one event; `check` runs once fs-a has heard it.
 */
async function switchedToPeers(authorization: string, check: (ctx: { server: NatsServer; jsm: JetStreamManager; lines: { msg: string; from?: string }[] }) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fsb-olderperm-'));
  writeFileSync(join(dir, 'authorization.conf'), authorization);
  const server = await startNatsServer({ include: join(dir, 'authorization.conf'), env: PASSWORDS });
  const admin = await connectNats({ servers: [server.url], auth: { user: 'fsb-admin', pass: PASSWORDS.FSB_NATS_PASSWORD_ADMIN }, tls: null }, { logger });
  const lines: { msg: string; from?: string }[] = [];
  const capture = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  try {
    await provisionNats(admin, EXAMPLE.nats, CLUSTER, logger);
    const before = await bridgeNode(server.url, 'fs-a', []);
    await before.close();
    const a = await bridgeNode(server.url, 'fs-a', EXAMPLE.nats.peers, capture);
    const b = await bridgeNode(server.url, 'fs-b');
    try {
      b.publisher.deliver({ event: testEvent('uuid-b', 1, 'PRESENCE_IN', undefined, [['FreeSWITCH-Switchname', 'fs-b']]), origin: { transport: 'esl', node: 'fs-b', receivedAt: Date.now() } });
      await until(() => a.received.length === 1);
      expect(a.received[0].origin.node).toBe('fs-b');
      await check({ server, jsm: await jetstreamManager(admin), lines });
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await admin.close();
    await server.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('nats/peers under permissions generated before it existed or without every peer', { timeout: 120_000 }, () => {
  const stream = EXAMPLE.nats.stream.name;

  it('the per-peer consumers take over and receive; a cluster-wide consumer the user may not delete is reported once, not retried into a stall', async () => {
    const own = `$JS.API.CONSUMER.DELETE.${stream}.fsb-fs-a`;
    const older = renderAuthorization(EXAMPLE.nats, CLUSTER, ['fs-a', 'fs-b', 'fs-c'])
      .split('\n')
      .filter((line) => !line.includes(JSON.stringify(own)))
      .join('\n');
    expect(older).not.toContain(own);
    await switchedToPeers(older, async ({ server, jsm, lines }) => {
      expect((await jsm.consumers.info(stream, 'fsb-fs-a__fs-b')).config.filter_subject).toBe(`fs.${CLUSTER}.fs-b.>`);
      expect((await jsm.consumers.info(stream, 'fsb-fs-a')).name).toBe('fsb-fs-a');
      const warned = lines.filter((line) => line.msg.startsWith('per-peer JetStream consumers took over, but the cluster-wide one could not be deleted'));
      expect(warned).toHaveLength(1);
      expect(warned[0].from).toBe('fsb-fs-a');
      expect(violationsOf(server, 'fs-a').map((line) => line.includes(own))).toEqual([true]);
    });
  });

  it('a peer whose consumer the user may not create does not keep the others from being heard, and the cluster-wide consumer stays until every per-peer one exists', async () => {
    // Permissions for fs-a and fs-b only, while fs-a's nats/peers already lists fs-c.
    await switchedToPeers(renderAuthorization(EXAMPLE.nats, CLUSTER, ['fs-a', 'fs-b']), async ({ jsm }) => {
      expect((await jsm.consumers.info(stream, 'fsb-fs-a')).name).toBe('fsb-fs-a');
      await expect(jsm.consumers.info(stream, 'fsb-fs-a__fs-c')).rejects.toThrow();
    });
  });
});
