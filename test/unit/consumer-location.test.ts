import Database from 'better-sqlite3';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { LocationConsumerConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { guardedLocalNode } from '../../bridge/bridge.js';
import { consumersHealth } from '../../bridge/consumer.js';
import type { EslFrame } from '../../bridge/esl/frame-parser.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { EslClient } from '../../bridge/sources/esl/client.js';
import { LocationConsumer, stateKeyOf } from '../../consumers/location/location-consumer.js';
import { MOD_DB_INDEXES, MOD_DB_TABLES } from '../../consumers/location/schema.js';
import { SqliteRowSink, createModDbSchema } from '../../consumers/location/sinks.js';
import { LocationDbError, NotConnectedError } from '../../bridge/errors.js';
import { NODE_A, NODE_B, fakeContext, settle, type FakeContext } from '../support/consumer-context.js';
import { asPipeline, eslEvents } from '../support/consumer-fixtures.js';
import { fixturePath } from '../support/fixtures.js';
import { wireText } from '../support/wire-arbitraries.js';
import { wellFormedProblem } from '../support/wire-node.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), `fsb-location-${process.pid}-`));
});
afterEach(() => {
  vi.useRealTimers();
  rmSync(dir, { recursive: true, force: true });
});

function config(overrides: Partial<LocationConsumerConfig> = {}): LocationConsumerConfig {
  return { enabled: true, sink: 'sqlite', dbPath: join(dir, 'call_limit.db'), flushMs: 5, flushMaxRows: 500, busyTimeoutMs: 20, peerDownGraceMs: 1_000, stateBucket: 'loc', ...overrides };
}

function rows(path = join(dir, 'call_limit.db')): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('SELECT hostname, realm, data_key, data FROM db_data ORDER BY realm, data_key, hostname').all() as Record<string, string>[]).map(
      (r) => `${r.hostname} | ${r.realm} | ${r.data_key} | ${r.data}`,
    );
  } finally {
    db.close();
  }
}

/** mod_db's own lookup (db select / ${db(select/...)}): no hostname filter, first row wins, empty when missing. */
function modDbSelect(realm: string, key: string, path = join(dir, 'call_limit.db')): string {
  const db = new Database(path, { readonly: true });
  try {
    const row = db.prepare('select data from db_data where realm=? and data_key=?').get(realm, key) as { data: string } | undefined;
    return row?.data ?? '';
  } finally {
    db.close();
  }
}

async function started(cfg: LocationConsumerConfig, context: FakeContext = fakeContext(NODE_A)): Promise<{ consumer: LocationConsumer; context: FakeContext }> {
  const consumer = new LocationConsumer(cfg);
  await consumer.start(context);
  return { consumer, context };
}

async function feed(consumer: LocationConsumer, context: FakeContext, items: BridgeEvent[]): Promise<void> {
  for (const item of items) context.events.emit(item);
  await settle();
  await consumer.flush();
}

let seq = 0;
/** A sofia event as node `node` fires it; `transport` esl = local to the consumer's node. */
function sofia(subclass: string, node: { name: string; hostname: string; ipv4: string }, headers: Record<string, string>, transport: Transport, tsUs = Date.now() * 1000 + seq++): BridgeEvent {
  const event = FsEvent.create('CUSTOM', subclass)
    .add('FreeSWITCH-Hostname', node.hostname)
    .add('FreeSWITCH-Switchname', node.name)
    .add('FreeSWITCH-IPv4', node.ipv4)
    .add('Event-Date-Timestamp', String(tsUs));
  for (const [n, v] of Object.entries(headers)) event.add(n, v);
  if (transport !== Transport.Esl) event.add('Multicast-Sender', node.name);
  return { event, origin: { transport, node: node.name, receivedAt: Date.now() } };
}
const register = (node: typeof NODE_A, user: string, transport: Transport, status = 'Registered(UDP)', realm = '127.0.0.1', expires = '300', ts?: number) =>
  sofia('sofia::register', node, { status, 'from-user': user, 'from-host': realm, expires }, transport, ts);
const unregister = (node: typeof NODE_A, user: string, transport: Transport, realm = '127.0.0.1', ts?: number) =>
  sofia('sofia::unregister', node, { 'from-user': user, 'from-host': realm, expires: '0' }, transport, ts);
const expire = (node: typeof NODE_A, user: string, transport: Transport, realm = '127.0.0.1') =>
  sofia('sofia::expire', node, { user, host: realm, expires: String(Math.floor(Date.now() / 1000)) }, transport);
const peer = (subclass: 'multicast::peerdown' | 'multicast::peerup', name: string): BridgeEvent => ({
  event: FsEvent.create('CUSTOM', subclass).add('Peer', name),
  origin: { transport: Transport.Esl, node: NODE_B.name, receivedAt: Date.now() },
});

function referenceRows(file: string): string[] {
  return readFileSync(fixturePath('reference', file), 'utf8').trim().split('\n').slice(1).sort();
}

function byTimestamp(items: BridgeEvent[]): BridgeEvent[] {
  return [...items].sort((x, y) => Number(x.event.get('Event-Date-Timestamp')) - Number(y.event.get('Event-Date-Timestamp')));
}

describe('location parity with locationlocal.lua + locationforeign.lua', () => {
  it("node A: its own ESL stream (local registrations + B's multicast) gives the reference db_data", async () => {
    const { consumer, context } = await started(config({ legacyParity: true }));
    await feed(consumer, context, asPipeline(eslEvents('a-plain.raw'), NODE_A.name));
    await consumer.stop();
    expect(rows()).toEqual(referenceRows('db_data-a.txt'));
  });

  it("node B: A's registrations from multicast + B's own register give the reference db_data", async () => {
    const remote = asPipeline(eslEvents('b-multicast-event.raw'), NODE_B.name);
    // B's own sofia::register of 1001, as A heard it: the same event, local on B.
    const ownOnB = asPipeline(eslEvents('a-plain.raw'), NODE_A.name)
      .filter((i) => i.origin.node === NODE_B.name && i.event.subclass === 'sofia::register')
      .map((i) => ({ event: i.event, origin: { ...i.origin, transport: Transport.Esl } }));
    expect(ownOnB).toHaveLength(1);
    const { consumer, context } = await started(config({ legacyParity: true }), fakeContext(NODE_B));
    await feed(consumer, context, byTimestamp([...remote, ...ownOnB]));
    await consumer.stop();
    expect(rows()).toEqual(referenceRows('db_data-b.txt'));
  });

  it('improved mode on the same capture: the expired 1000 is gone, 1001 stays on node-b', async () => {
    const items = asPipeline(eslEvents('a-plain.raw'), NODE_A.name);
    // At the capture's own time: expiry counts from receipt, and the capture is older than its registrations.
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'], now: items[0].origin.receivedAt });
    const { consumer, context } = await started(config());
    await feed(consumer, context, items);
    await consumer.stop();
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1001 | 10.99.0.2']);
  });
});

describe('location improved mode', () => {
  it.each(['Registered(UDP)', 'Registered(TCP)', 'Registered(TLS)', 'Registered(WS)', 'Registered(WSS)', 'Registered(UDP-NAT)', 'Registered(TCP-NAT)', 'Registered(TLS-NAT)', 'Registered(WS-NAT)', 'Registered(WSS-NAT)'])(
    'writes a row for %s',
    async (status) => {
      const { consumer, context } = await started(config());
      await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl, status)]);
      await consumer.stop();
      expect(rows()).toEqual(['node-a | 127.0.0.1 | LOCATION_1000 | 10.99.0.1']);
    },
  );

  it('ignores statuses that are not a completed registration', async () => {
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl, 'Registration failed'), register(NODE_A, '1001', Transport.Esl, 'Registered(UDP) junk')]);
    await consumer.stop();
    expect(rows()).toEqual([]);
  });

  it('sofia::unregister removes the row (local and remote)', async () => {
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl), register(NODE_B, '1001', Transport.Multicast)]);
    expect(rows()).toHaveLength(2);
    await feed(consumer, context, [unregister(NODE_A, '1000', Transport.Esl), unregister(NODE_B, '1001', Transport.Nats)]);
    await consumer.stop();
    expect(rows()).toEqual([]);
  });

  it('sofia::expire (user/host, epoch expires) removes the row', async () => {
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Multicast)]);
    await feed(consumer, context, [expire(NODE_B, '1000', Transport.Multicast)]);
    await consumer.stop();
    expect(rows()).toEqual([]);
  });

  it("another node's unregister does not remove where the user is now; the row falls back to the other registration", async () => {
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, '1001', Transport.Esl), register(NODE_B, '1001', Transport.Multicast)]);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1001')).toBe('10.99.0.2');
    await feed(consumer, context, [unregister(NODE_A, '1001', Transport.Esl)]);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1001')).toBe('10.99.0.2');
    await feed(consumer, context, [register(NODE_A, '1001', Transport.Esl), unregister(NODE_B, '1001', Transport.Multicast)]);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1001')).toBe('10.99.0.1');
    await consumer.stop();
  });

  it('an older event never overrides a newer one (newest wins by origin timestamp)', async () => {
    const { consumer, context } = await started(config());
    const t = Date.now() * 1000;
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Multicast, undefined, undefined, undefined, t + 10), register(NODE_A, '1000', Transport.Esl, undefined, undefined, undefined, t)]);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('10.99.0.2');
    await feed(consumer, context, [unregister(NODE_B, '1000', Transport.Multicast, '127.0.0.1', t + 5)]);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('10.99.0.2');
    await consumer.stop();
  });

  it('removes a registration whose unregister and expire were missed, at its expiry plus the margin', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ expiryMarginMs: 2_000 }));
    context.events.emit(register(NODE_B, '1000', Transport.Multicast, 'Registered(UDP)', '127.0.0.1', '5'));
    await vi.advanceTimersByTimeAsync(100);
    expect(rows()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(rows()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(rows()).toEqual([]);
    await consumer.stop();
  });

  it('keeps one row per realm + key across hostnames (a stale row of another host is replaced)', async () => {
    const path = join(dir, 'call_limit.db');
    const db = new Database(path);
    // A db_data without mod_db's unique index, as old FreeSWITCH versions left it, holding a stale row.
    db.exec(MOD_DB_TABLES.db_data);
    db.prepare('INSERT INTO db_data VALUES (?, ?, ?, ?)').run('node-old', '127.0.0.1', 'LOCATION_1000', '10.99.0.9');
    db.close();
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl), register(NODE_B, '1000', Transport.Multicast)]);
    await consumer.stop();
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1000 | 10.99.0.2']);
  });

  it('removes the rows of a node that went down after the grace period', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ peerDownGraceMs: 10_000 }), fakeContext(NODE_B));
    context.events.emit(register(NODE_A, '1000', Transport.Multicast));
    context.events.emit(register(NODE_B, '1001', Transport.Esl));
    context.events.emit(peer('multicast::peerdown', 'fs-a'));
    await vi.advanceTimersByTimeAsync(9_000);
    expect(rows()).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1001 | 10.99.0.2']);
    await consumer.stop();
  });

  it('keeps the rows of a node that comes back (peerup) within the grace period; a late event alone does not', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ peerDownGraceMs: 10_000 }), fakeContext(NODE_B));
    const nodeC = { name: 'fs-c', hostname: 'node-c', ipv4: '10.99.0.3', cluster: 'lab' };
    context.events.emit(register(NODE_A, '1000', Transport.Multicast));
    context.events.emit(register(nodeC, '1002', Transport.Nats));
    context.events.emit(peer('multicast::peerdown', 'fs-a'));
    context.events.emit(peer('multicast::peerdown', 'fs-c'));
    await vi.advanceTimersByTimeAsync(5_000);
    context.events.emit(peer('multicast::peerup', 'fs-a'));
    // A JetStream replay of what fs-c sent before it died: not a sign of life.
    context.events.emit({ event: FsEvent.create('HEARTBEAT'), origin: { transport: Transport.Nats, node: 'fs-c', receivedAt: Date.now() } });
    await vi.advanceTimersByTimeAsync(20_000);
    expect(rows()).toEqual(['node-a | 127.0.0.1 | LOCATION_1000 | 10.99.0.1']);
    await consumer.stop();
  });

  it('stores a hostile user or realm literally (bound parameters)', async () => {
    const evil = "x'); DROP TABLE db_data;--";
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, evil, Transport.Esl, 'Registered(UDP)', evil), register(NODE_A, '1000', Transport.Esl)]);
    await consumer.stop();
    expect(rows()).toEqual([`node-a | 127.0.0.1 | LOCATION_1000 | 10.99.0.1`, `node-a | ${evil} | LOCATION_${evil} | 10.99.0.1`]);
    expect(modDbSelect(evil, `LOCATION_${evil}`)).toBe('10.99.0.1');
  });

  it('batches: nothing is written before flushMs unless flushMaxRows is reached, then in one go', async () => {
    const { consumer, context } = await started(config({ flushMs: 200, flushMaxRows: 50 }));
    for (let i = 0; i < 10; i++) context.events.emit(register(NODE_A, `u${i}`, Transport.Esl));
    expect(rows()).toHaveLength(0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(rows()).toHaveLength(10);
    for (let i = 10; i < 60; i++) context.events.emit(register(NODE_A, `u${i}`, Transport.Esl));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(rows()).toHaveLength(60);
    const written = (await context.metrics.registry.getSingleMetric('fsb_location_rows_written_total')!.get()).values[0].value;
    expect(written).toBe(60);
    await consumer.stop();
  });

  it('uses a per-node address override when configured', async () => {
    const { consumer, context } = await started(config({ addressOverrides: { 'fs-b': '192.0.2.2', 'node-a': '192.0.2.1' } }));
    await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl), register(NODE_B, '1001', Transport.Multicast)]);
    await consumer.stop();
    expect(rows()).toEqual(['node-a | 127.0.0.1 | LOCATION_1000 | 192.0.2.1', 'node-b | 127.0.0.1 | LOCATION_1001 | 192.0.2.2']);
  });

  it('counts registrations it cannot use and events carrying the loop guard are ignored', async () => {
    const { consumer, context } = await started(config());
    const noRealm = sofia('sofia::register', NODE_A, { status: 'Registered(UDP)', 'from-user': '1000' }, Transport.Esl);
    const guarded = register(NODE_A, '1001', Transport.Esl);
    guarded.event.add(LOOP_GUARD_HEADER, 'fs-a');
    await feed(consumer, context, [noRealm, guarded]);
    await consumer.stop();
    expect(rows()).toEqual([]);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'no_user_or_realm')?.value).toBe(1);
  });
});

describe("mod_db's schema and the database file", () => {
  it("creates mod_db's tables and indexes, with mod_db's statements, when the file is new", async () => {
    const { consumer } = await started(config());
    await consumer.stop();
    const db = new Database(join(dir, 'call_limit.db'), { readonly: true });
    const master = db.prepare('SELECT name, sql FROM sqlite_master').all() as { name: string; sql: string }[];
    db.close();
    const sql = new Map(master.map((m) => [m.name, m.sql]));
    // SQLite keeps the statement text, only upper-casing the leading CREATE ... keywords.
    for (const [name, statement] of Object.entries({ ...MOD_DB_TABLES, ...MOD_DB_INDEXES })) expect(sql.get(name)?.toLowerCase()).toBe(statement.toLowerCase());
    expect(sql.get('db_data')).toContain('data_key   VARCHAR(255)');
    // mod_db's own objects, and the consumer's side table next to them (db_data itself is exactly mod_db's).
    expect([...sql.keys()].sort()).toEqual(['db_data', 'dd_data_key_realm', 'dd_realm', 'fsb_location_slots', 'gd_groupname', 'gd_url', 'group_data', 'ld_hostname', 'ld_id', 'ld_realm', 'ld_uuid', 'limit_data']);
  });

  it('leaves the journal mode as it found it', async () => {
    const path = join(dir, 'call_limit.db');
    const db = new Database(path);
    expect(db.pragma('journal_mode', { simple: true })).toBe('delete');
    db.close();
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl)]);
    await consumer.stop();
    const after = new Database(path);
    expect(after.pragma('journal_mode', { simple: true })).toBe('delete');
    after.close();
  });
});

describe('opening call_limit.db at startup', () => {
  it('waits for a lock another connection releases, and gives up with LocationDbError naming db-path when it is not', async () => {
    const path = join(dir, 'call_limit.db');
    const holder = new Database(path);
    createModDbSchema(holder);
    holder.exec('BEGIN EXCLUSIVE');
    // open() makes its first attempt before its first await: it meets the lock.
    await expect(SqliteRowSink.open(path, 5, { lockWaitMs: 30 })).rejects.toThrow(/"db-path".*locked by another process for 30 ms/);
    const opening = SqliteRowSink.open(path, 5, { lockWaitMs: 60_000 });
    holder.exec('COMMIT');
    holder.close();
    const sink = await opening;
    await sink.write([{ realm: 'r', dataKey: 'LOCATION_1', row: { hostname: 'h', data: 'd' } }]);
    await sink.close();
    expect(rows()).toEqual(['h | r | LOCATION_1 | d']);
  });

  it('the consumer does not start on an unusable file (LocationDbError), and stop() after that is safe', async () => {
    const path = join(dir, 'not-a-db');
    writeFileSync(path, 'x'.repeat(5000));
    const consumer = new LocationConsumer(config({ dbPath: path }));
    const error = await consumer.start(fakeContext(NODE_A)).then(() => null, (err: unknown) => err);
    expect(error).toBeInstanceOf(LocationDbError);
    expect((error as LocationDbError).code).toBe('FSB_ERR_LOCATION_DB');
    await consumer.stop();
  });
});

/**
 * call_limit.db failing while the bridge runs (issue 13 #3). Each case breaks a
 * working database the way it breaks in production, as root: an immutable directory
 * (no rollback journal can be created), the file replaced under the open connection,
 * an immutable file, pages overwritten, a full filesystem.
 */
describe('write failures at run time (sink sqlite)', () => {
  const metric = async (context: FakeContext, name: string, labels: Record<string, string> = {}) =>
    ((await context.metrics.registry.getSingleMetric(name)?.get())?.values ?? []).filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);

  /** A started consumer whose warn/error/info lines are kept. */
  async function watched(cfg: LocationConsumerConfig) {
    const context = fakeContext(NODE_A);
    const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
    for (const level of ['warn', 'error', 'info'] as const) {
      vi.spyOn(context.logger, level).mockImplementation(((obj: Record<string, unknown>, msg?: string) => void lines.push({ level, msg: msg ?? '', obj })) as never);
    }
    const { consumer } = await started(cfg, context);
    return { consumer, context, lines };
  }

  const users = (from: number, count: number) => Array.from({ length: count }, (_, i) => register(NODE_B, String(from + i), Transport.Multicast));

  /** Feeds `count` registrations into a broken database and lets 5 s of retries pass: all pending, counted as such, degraded, warned once. */
  async function failing(consumer: LocationConsumer, context: FakeContext, lines: { level: string; msg: string; obj: Record<string, unknown> }[], cause: string, count: number) {
    for (const item of users(2000, count)) context.events.emit(item);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await metric(context, 'fsb_location_rows_unwritten')).toBe(count);
    expect(await metric(context, 'fsb_queue_depth', { component: 'location' })).toBe(count);
    // Retried with backoff (10 ms doubling to 1 s): about ten attempts in 5 s, one warning.
    expect(await metric(context, 'fsb_location_write_retries_total', { cause })).toBeGreaterThanOrEqual(5);
    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0].obj.cause).toBe(`write_${cause}`);
    expect(warnings[0].msg).toContain(`${count} rows waiting`);
    expect(consumer.health()).toMatchObject({ status: 'degraded', detail: expect.stringContaining(`${count} rows not written`) });
    expect(consumersHealth([consumer])).toMatchObject({ status: 'degraded', degraded: { location: expect.stringContaining(`(${cause}: `) } });
    // Pending is not loss: nothing in fsb_drops_total yet.
    expect(await metric(context, 'fsb_drops_total', { component: 'location' })).toBe(0);
  }

  /** stop() with the database still broken: gives up at once (only a lock is waited for), counts the rows as dropped and says so. */
  async function stoppedBroken(consumer: LocationConsumer, context: FakeContext, lines: { level: string; msg: string; obj: Record<string, unknown> }[], cause: string, count: number, path: string) {
    let stopped = false;
    const stopping = consumer.stop().then(() => (stopped = true));
    // At most the retry sleep already under way (1 s), never the 5 s stop deadline.
    await vi.advanceTimersByTimeAsync(1_000);
    expect(stopped).toBe(true);
    await stopping;
    expect(await metric(context, 'fsb_drops_total', { component: 'location', cause: 'unflushed_at_stop' })).toBe(count);
    const error = lines.find((l) => l.level === 'error');
    expect(error?.msg).toBe(`location: ${count} rows were not written to ${path} at stop (${cause}: ${error?.obj.err as string})`);
    expect(await metric(context, 'fsb_location_rows_unwritten')).toBe(0);
  }

  /** Fills the filesystem at `mount` up to `leaveBytes` free (ENOSPC beyond); returns the filler's path. */
  function fillUp(mount: string, leaveBytes: number): string {
    const filler = join(mount, 'filler');
    const fd = openSync(filler, 'w');
    let written = 0;
    try {
      for (;;) written += writeSync(fd, Buffer.alloc(4096));
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    } finally {
      closeSync(fd);
    }
    truncateSync(filler, Math.max(0, written - leaveBytes));
    return filler;
  }

  /** A tmpfs of `size` at `mount` for the test's body, unmounted after. */
  async function withSmallDisk(size: string, body: (mount: string) => Promise<void>): Promise<void> {
    const mount = join(dir, 'small');
    mkdirSync(mount);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mount]);
    try {
      await body(mount);
    } finally {
      execFileSync('umount', ['-l', mount]);
    }
  }

  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
  });

  it('read-only directory (immutable: no rollback journal): 40 rows pending, degraded, one warning; written once the directory is writable again', async () => {
    const { consumer, context, lines } = await watched(config());
    await feed(consumer, context, users(1000, 2));
    execFileSync('chattr', ['+i', dir]);
    try {
      await failing(consumer, context, lines, 'readonly', 40);
    } finally {
      execFileSync('chattr', ['-i', dir]);
    }
    await vi.advanceTimersByTimeAsync(1_100);
    expect(await metric(context, 'fsb_location_rows_unwritten')).toBe(0);
    expect(consumer.health()).toEqual({ status: 'ok' });
    expect(lines.some((l) => l.level === 'info' && l.msg === 'location: writes succeed again')).toBe(true);
    await consumer.stop();
    expect(rows()).toHaveLength(42);
    expect(await metric(context, 'fsb_drops_total', { component: 'location' })).toBe(0);
  });

  it('file replaced under the open connection (SQLITE_READONLY_DBMOVED): 25 rows pending; stop gives up at once and counts the 25 as dropped', async () => {
    const path = join(dir, 'call_limit.db');
    const { consumer, context, lines } = await watched(config());
    await feed(consumer, context, users(1000, 2));
    copyFileSync(path, `${path}.new`);
    renameSync(`${path}.new`, path);
    await failing(consumer, context, lines, 'readonly', 25);
    // Retrying cannot help here: the health says what can.
    expect(consumer.health().detail).toContain('SQLITE_READONLY_DBMOVED: the file was replaced or removed while open; restart');
    await stoppedBroken(consumer, context, lines, 'readonly', 25, path);
  });

  it('read-only file (immutable): 10 rows pending as an I/O error; counted as dropped at stop', async () => {
    const path = join(dir, 'call_limit.db');
    const { consumer, context, lines } = await watched(config());
    await feed(consumer, context, users(1000, 2));
    execFileSync('chattr', ['+i', path]);
    try {
      await failing(consumer, context, lines, 'io', 10);
      await stoppedBroken(consumer, context, lines, 'io', 10, path);
    } finally {
      execFileSync('chattr', ['-i', path]);
    }
    // The failed write left a hot journal; a writable connection rolls it back: the 2 rows written before are intact.
    const db = new Database(path);
    expect(db.prepare('SELECT count(*) AS n FROM db_data').get()).toEqual({ n: 2 });
    db.close();
  });

  it('corrupt file (pages overwritten while open): 30 rows pending; counted as dropped at stop', async () => {
    const path = join(dir, 'call_limit.db');
    const { consumer, context, lines } = await watched(config());
    await feed(consumer, context, users(1000, 200));
    const { size } = statSync(path);
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(size - 4096, 0x5a), 0, size - 4096, 4096);
    // The file change counter (offset 24): the connection rereads the pages instead of trusting its cache.
    const counter = Buffer.alloc(4);
    readSync(fd, counter, 0, 4, 24);
    counter.writeUInt32BE(counter.readUInt32BE(0) + 1);
    writeSync(fd, counter, 0, 4, 24);
    closeSync(fd);
    await failing(consumer, context, lines, 'corrupt', 30);
    await stoppedBroken(consumer, context, lines, 'corrupt', 30, path);
  });

  it('full disk (a 512 KB tmpfs): 300 rows pending, degraded, one warning; written once space is freed', async () => {
    await withSmallDisk('512k', async (mount) => {
      const path = join(mount, 'call_limit.db');
      const { consumer, context, lines } = await watched(config({ dbPath: path }));
      await feed(consumer, context, users(1000, 2));
      const filler = fillUp(mount, 0);
      await failing(consumer, context, lines, 'full', 300);
      rmSync(filler);
      await vi.advanceTimersByTimeAsync(1_100);
      expect(await metric(context, 'fsb_location_rows_unwritten')).toBe(0);
      expect(consumer.health()).toEqual({ status: 'ok' });
      await consumer.stop();
      expect(rows(path)).toHaveLength(302);
      expect(await metric(context, 'fsb_drops_total', { component: 'location' })).toBe(0);
    });
  });

  it('a lock is contention for its first 5 s (no warning, health ok), then degraded and warned about once; the rows are written when it ends', async () => {
    const path = join(dir, 'call_limit.db');
    const { consumer, context, lines } = await watched(config());
    const holder = new Database(path);
    holder.exec('BEGIN EXCLUSIVE');
    try {
      for (const item of users(1000, 5)) context.events.emit(item);
      await vi.advanceTimersByTimeAsync(2_000);
      expect(await metric(context, 'fsb_location_write_retries_total', { cause: 'busy' })).toBeGreaterThan(0);
      expect(await metric(context, 'fsb_location_rows_unwritten')).toBe(5);
      expect(consumer.health()).toEqual({ status: 'ok' });
      expect(lines.filter((l) => l.level === 'warn')).toHaveLength(0);
      await vi.advanceTimersByTimeAsync(5_000);
      expect(consumer.health()).toMatchObject({ status: 'degraded', detail: expect.stringContaining('(busy: ') });
      expect(lines.filter((l) => l.level === 'warn').map((l) => l.obj.cause)).toEqual(['write_busy']);
    } finally {
      holder.exec('COMMIT');
      holder.close();
    }
    await vi.advanceTimersByTimeAsync(1_100);
    expect(consumer.health()).toEqual({ status: 'ok' });
    await consumer.stop();
    expect(rows()).toHaveLength(5);
    expect(await metric(context, 'fsb_drops_total', { component: 'location' })).toBe(0);
  });

  it('rows restored at start that cannot be written (disk full) fail the start with LocationDbError naming db-path', async () => {
    await withSmallDisk('1m', async (mount) => {
      const path = join(mount, 'call_limit.db');
      const first = await started(config({ dbPath: path }));
      await feed(first.consumer, first.context, users(1000, 2000));
      await first.consumer.stop();
      // The restored registrations whose rows are missing are written at start: here the 2,000.
      const db = new Database(path);
      db.exec('DELETE FROM db_data');
      db.close();
      // Room for the proof of writability (one page rolled back), not for the batches' journal.
      fillUp(mount, 16_384);
      const consumer = new LocationConsumer(config({ dbPath: path }));
      const error = await consumer.start(fakeContext(NODE_A)).then(() => null, (err: unknown) => err);
      expect(error).toBeInstanceOf(LocationDbError);
      expect((error as Error).message).toMatch(/"db-path".*the restored rows could not be written: SQLITE_FULL: database or disk is full \(full\)/);
      await consumer.stop();
    });
  });
});

describe('ESL sink (db API)', () => {
  it('writes through db insert / db delete and refuses parts mod_db would split', async () => {
    const { consumer, context } = await started(config({ sink: 'esl' }));
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Multicast), register(NODE_B, 'a/b', Transport.Multicast), unregister(NODE_B, '1000', Transport.Multicast)]);
    await consumer.stop();
    // Register and unregister of 1000 fell into one batch: only the outcome is written.
    expect(context.local.apiCalls).toEqual(['db delete/127.0.0.1/LOCATION_1000']);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'unwritable_row')?.value).toBe(1);
  });

  it('retries while mod_db is not loaded (every row would fail): nothing is dropped', async () => {
    const { consumer, context } = await started(config({ sink: 'esl' }));
    let refusals = 2;
    context.local.apiReply = async () => (refusals-- > 0 ? '-ERR db Command not found!' : '+OK');
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Multicast)]);
    await consumer.stop();
    expect(context.local.apiCalls).toEqual(Array(3).fill('db insert/127.0.0.1/LOCATION_1000/10.99.0.2'));
    expect(await dropsOf(context, 'unwritable_row')).toBe(0);
  });

  it('one bad row does not poison the batch: unsafe parts are refused before batching, a row FreeSWITCH refuses is isolated; both counted, the rows behind them written', async () => {
    const { consumer, context } = await started(config({ sink: 'esl', flushMs: 50 }));
    context.local.apiReply = async (command) => (command.includes('LOCATION_refused') ? '-ERR USAGE' : '+OK');
    await feed(consumer, context, [
      register(NODE_B, 'quote\'d', Transport.Multicast),
      register(NODE_B, 'back\\slash', Transport.Multicast),
      register(NODE_B, 'padded ', Transport.Multicast),
      register(NODE_B, 'refused', Transport.Multicast),
      register(NODE_B, '1000', Transport.Multicast),
      register(NODE_B, '1001', Transport.Multicast),
    ]);
    expect(context.local.apiCalls).toEqual(['db insert/127.0.0.1/LOCATION_refused/10.99.0.2', 'db insert/127.0.0.1/LOCATION_1000/10.99.0.2', 'db insert/127.0.0.1/LOCATION_1001/10.99.0.2']);
    expect(await dropsOf(context, 'unwritable_row')).toBe(4);
    // Nothing is retried: the next write is only for new rows.
    await feed(consumer, context, [register(NODE_B, '1002', Transport.Multicast)]);
    expect(context.local.apiCalls).toHaveLength(4);
    await consumer.stop();
  });

  it('an address the db API cannot carry deletes the old row instead of leaving it pointing elsewhere', async () => {
    const { consumer, context } = await started(config({ sink: 'esl', addressOverrides: { 'fs-b': '10.0.0.1/24' } }));
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Multicast)]);
    await consumer.stop();
    expect(context.local.apiCalls).toEqual(['db delete/127.0.0.1/LOCATION_1000']);
  });

  it('property: no row can pin the sink (any unicode in user, realm and address; FreeSWITCH refusing rows; ESL down for a while); stop is bounded', async () => {
    const esl = loadConfigText(defaultConfigXml({}), 'props.xml', {}).config.esl;
    const entry = fc.record({
      user: fc.oneof(wireText, fc.constantFrom('1000', '1001')),
      realm: fc.oneof(wireText, fc.constant('127.0.0.1')),
      unregister: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 30 }), fc.option(wireText), fc.boolean(), fc.nat({ max: 6 }), fc.nat({ max: 3 }), async (entries, address, legacyParity, downFor, refuseMod) => {
        vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
        try {
          // The real client's command checks (CR/LF/NUL refused before anything is written), FreeSWITCH stubbed behind them.
          const client = new EslClient(esl, { subscription: null, logger: silentLogger(), metrics: new Metrics(), nodeName: NODE_A.name });
          const written: string[] = [];
          let down = downFor;
          let refusals = 0;
          (client as unknown as { command: (text: string) => Promise<EslFrame> }).command = async (text) => {
            if (down > 0) {
              down--;
              throw new NotConnectedError();
            }
            written.push(text);
            const refuse = !text.includes('/LOCATION_sentinel') && text.length % 4 === refuseMod;
            if (refuse) refusals++;
            return { headers: {}, body: Buffer.from(refuse ? '-ERR refused' : '+OK') };
          };
          const context = fakeContext(NODE_A);
          context.local = guardedLocalNode(client, NODE_A.name) as FakeContext['local'];
          const consumer = new LocationConsumer(config({ sink: 'esl', legacyParity, addressOverrides: address === null ? {} : { 'fs-b': address } }));
          await consumer.start(context);
          for (const e of entries) context.events.emit(e.unregister ? unregister(NODE_B, e.user, Transport.Multicast, e.realm) : register(NODE_B, e.user, Transport.Multicast, 'Registered(UDP)', e.realm));
          context.events.emit(register(NODE_B, 'sentinel', Transport.Multicast));
          await vi.advanceTimersByTimeAsync(3_000);
          // The row behind them is written (or, when the address cannot be carried, its old row deleted).
          expect(written.some((text) => text.includes('/127.0.0.1/LOCATION_sentinel'))).toBe(true);
          for (const text of written) {
            expect(wellFormedProblem({ event: null, text })).toBeUndefined();
            // What mod_db's separate_string reads is exactly what was meant: no quote, escape, padding or empty part.
            for (const part of text.trimEnd().replace(/^api db (insert|delete)\//, '').split('/')) {
              expect(part === '' || part !== part.trim() || /['\\]/.test(part)).toBe(false);
            }
          }
          // Nothing is left retrying: every row was written, or refused and counted.
          expect(await dropsOf(context, 'unwritable_row')).toBeGreaterThanOrEqual(refusals);
          expect((await context.metrics.queueDepth.get()).values.find((v) => v.labels.component === 'location')?.value ?? 0).toBe(0);
          const before = written.length;
          await vi.advanceTimersByTimeAsync(5_000);
          expect(written.length).toBe(before);
          expect(consumer.health()).toEqual({ status: 'ok' });
          let stopped = false;
          const stopping = consumer.stop().then(() => (stopped = true));
          await vi.advanceTimersByTimeAsync(7_000);
          expect(stopped).toBe(true);
          await stopping;
        } finally {
          vi.useRealTimers();
        }
      }),
      { numRuns: 100 },
    );
  }, 120_000);

  it('stop() is bounded even when a command never returns: the rows of the batch under way are counted', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ sink: 'esl' }));
    context.local.apiReply = () => new Promise<string>(() => undefined);
    for (let i = 0; i < 4; i++) context.events.emit(register(NODE_B, `u${i}`, Transport.Multicast));
    await vi.advanceTimersByTimeAsync(100);
    expect(context.local.apiCalls).toHaveLength(1);
    let stopped = false;
    const stopping = consumer.stop().then(() => (stopped = true));
    // The stop deadline (5 s) plus one retry delay, whatever the sink does.
    await vi.advanceTimersByTimeAsync(7_000);
    expect(stopped).toBe(true);
    await stopping;
    expect(await dropsOf(context, 'unflushed_at_stop')).toBe(4);
  });

  it('stop() with ESL down ends at its deadline and says how many rows were not written', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ sink: 'esl' }));
    context.local.apiReply = async () => {
      throw new NotConnectedError();
    };
    const lines: string[] = [];
    context.logger = { ...context.logger, error: (obj: unknown, msg?: string) => lines.push(`${msg ?? ''} ${JSON.stringify(obj)}`) } as typeof context.logger;
    for (let i = 0; i < 3; i++) context.events.emit(register(NODE_B, `u${i}`, Transport.Multicast));
    await vi.advanceTimersByTimeAsync(100);
    let stopped = false;
    const stopping = consumer.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(6_000);
    await stopping;
    expect(stopped).toBe(true);
    expect(await dropsOf(context, 'unflushed_at_stop')).toBe(3);
    expect(lines.join('\n')).toMatch(/3 rows were not written to mod_db's db API at stop \(esl_down/);
  });
});

describe('cluster state (KV bucket)', () => {
  it('the owning node writes its own registrations; remote ones are left to their owner', async () => {
    const { consumer, context } = await started(config());
    await feed(consumer, context, [register(NODE_A, '1000', Transport.Esl), register(NODE_B, '1001', Transport.Multicast)]);
    const bucket = context.buckets.get('loc')!;
    expect([...bucket.data.keys()]).toEqual([stateKeyOf({ realm: '127.0.0.1', user: '1000', hostname: 'node-a' })]);
    expect(JSON.parse(bucket.data.values().next().value!)).toMatchObject({ realm: '127.0.0.1', user: '1000', hostname: 'node-a', switchname: 'fs-a', ip: '10.99.0.1' });
    await feed(consumer, context, [unregister(NODE_A, '1000', Transport.Esl)]);
    expect(bucket.data.size).toBe(0);
    await consumer.stop();
  });

  it('a late joiner loads the whole table from the bucket and answers lookups before any event', async () => {
    const buckets = new Map();
    const a = await started(config({ dbPath: join(dir, 'a.db') }), fakeContext(NODE_A, { buckets }));
    await feed(a.consumer, a.context, [register(NODE_A, '1000', Transport.Esl), register(NODE_A, '1001', Transport.Esl)]);
    const b = await started(config({ dbPath: join(dir, 'b.db') }), fakeContext(NODE_B, { buckets }));
    // Committed when start() resolves (the bridge reports ready right after), without a flush.
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000', join(dir, 'b.db'))).toBe('10.99.0.1');
    expect(b.consumer.registrations).toBe(2);
    // Then it follows changes made on other nodes.
    await feed(a.consumer, a.context, [unregister(NODE_A, '1001', Transport.Esl)]);
    await b.consumer.flush();
    expect(modDbSelect('127.0.0.1', 'LOCATION_1001', join(dir, 'b.db'))).toBe('');
    await a.consumer.stop();
    await b.consumer.stop();
  });

  it('on start removes LOCATION_ rows nobody holds and rewrites only what differs', async () => {
    const buckets = new Map();
    const path = join(dir, 'b.db');
    const db = new Database(path);
    for (const sql of Object.values(MOD_DB_TABLES)) db.exec(sql);
    db.prepare('INSERT INTO db_data VALUES (?, ?, ?, ?)').run('node-a', '127.0.0.1', 'LOCATION_gone', '10.99.0.1');
    db.prepare('INSERT INTO db_data VALUES (?, ?, ?, ?)').run('node-x', 'other', 'not_a_location', 'keep me');
    db.close();
    const a = await started(config({ dbPath: join(dir, 'a.db') }), fakeContext(NODE_A, { buckets }));
    await feed(a.consumer, a.context, [register(NODE_A, '1000', Transport.Esl)]);
    const b = await started(config({ dbPath: path }), fakeContext(NODE_B, { buckets }));
    await b.consumer.stop();
    await a.consumer.stop();
    expect(rows(path)).toEqual(['node-a | 127.0.0.1 | LOCATION_1000 | 10.99.0.1', 'node-x | other | not_a_location | keep me']);
  });

  it('newest wins when the bucket and multicast disagree', async () => {
    const buckets = new Map();
    const t = Date.now() * 1000;
    const b = await started(config({ dbPath: join(dir, 'b.db') }), fakeContext(NODE_B, { buckets }));
    // The user moved to B (newer) and A's older registration arrives later through the bucket.
    await feed(b.consumer, b.context, [register(NODE_B, '1000', Transport.Esl, undefined, undefined, undefined, t + 1000)]);
    const stale = { realm: '127.0.0.1', user: '1000', hostname: 'node-a', switchname: 'fs-a', ip: '10.99.0.1', ts: t, expiresAt: Date.now() + 300_000 };
    await buckets.get('loc').put(stateKeyOf(stale), JSON.stringify(stale));
    await b.consumer.flush();
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000', join(dir, 'b.db'))).toBe('10.99.0.2');
    await b.consumer.stop();
  });

  it("late copies of a purged node's registrations (KV watch, JetStream replay) do not bring its rows back; newer ones do", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const buckets = new Map();
    const b = await started(config({ dbPath: join(dir, 'b.db'), peerDownGraceMs: 1_000 }), fakeContext(NODE_B, { buckets }));
    const firedAt = Date.now() * 1000;
    const late = register(NODE_A, '1000', Transport.Multicast, undefined, undefined, undefined, firedAt);
    b.context.events.emit(late);
    b.context.events.emit(peer('multicast::peerdown', 'fs-a'));
    await vi.advanceTimersByTimeAsync(1_500);
    expect(rows(join(dir, 'b.db'))).toEqual([]);
    // The node's own KV write and the NATS copy of its register arrive only now.
    const binding = { realm: '127.0.0.1', user: '1000', hostname: 'node-a', switchname: 'fs-a', ip: '10.99.0.1', ts: firedAt, expiresAt: Date.now() + 300_000 };
    await buckets.get('loc').put(stateKeyOf(binding), JSON.stringify(binding));
    b.context.events.emit({ event: late.event.clone(), origin: { ...late.origin, transport: Transport.Nats } });
    await vi.advanceTimersByTimeAsync(100);
    expect(rows(join(dir, 'b.db'))).toEqual([]);
    const dropped = (await b.context.metrics.drops.get()).values.find((v) => v.labels.cause === 'stale_registration_of_down_node');
    expect(dropped?.value).toBe(2);
    // A registration fired after the purge is news from a live node.
    b.context.events.emit(register(NODE_A, '1000', Transport.Multicast, undefined, undefined, undefined, Date.now() * 1000 + 1));
    await vi.advanceTimersByTimeAsync(100);
    expect(rows(join(dir, 'b.db'))).toEqual(['node-a | 127.0.0.1 | LOCATION_1000 | 10.99.0.1']);
    await b.consumer.stop();
  });

  it("survivors delete a dead node's keys after the grace period", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const buckets = new Map();
    const a = await started(config({ dbPath: join(dir, 'a.db') }), fakeContext(NODE_A, { buckets }));
    a.context.events.emit(register(NODE_A, '1000', Transport.Esl));
    await vi.advanceTimersByTimeAsync(50);
    await a.consumer.stop();
    const b = await started(config({ dbPath: join(dir, 'b.db'), peerDownGraceMs: 1_000 }), fakeContext(NODE_B, { buckets }));
    b.context.events.emit({ ...register(NODE_A, '1000', Transport.Multicast) });
    b.context.events.emit(peer('multicast::peerdown', 'fs-a'));
    await vi.advanceTimersByTimeAsync(1_500);
    expect(buckets.get('loc').data.size).toBe(0);
    expect(rows(join(dir, 'b.db'))).toEqual([]);
    await b.consumer.stop();
  });
});

describe("mod_db's lookup across scenarios", () => {
  it('register on A, move to B, unregister, node A down', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ peerDownGraceMs: 5_000 }), fakeContext(NODE_B));
    const lookup = async (user: string) => {
      await vi.advanceTimersByTimeAsync(50);
      return modDbSelect('127.0.0.1', `LOCATION_${user}`);
    };
    context.events.emit(register(NODE_A, '1000', Transport.Multicast));
    expect(await lookup('1000')).toBe('10.99.0.1');
    context.events.emit(register(NODE_B, '1000', Transport.Esl));
    expect(await lookup('1000')).toBe('10.99.0.2');
    context.events.emit(unregister(NODE_B, '1000', Transport.Esl));
    // A's registration is still live (it never unregistered there).
    expect(await lookup('1000')).toBe('10.99.0.1');
    context.events.emit(unregister(NODE_A, '1000', Transport.Multicast));
    expect(await lookup('1000')).toBe('');
    context.events.emit(register(NODE_A, '1001', Transport.Multicast));
    expect(await lookup('1001')).toBe('10.99.0.1');
    context.events.emit(peer('multicast::peerdown', 'fs-a'));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await lookup('1001')).toBe('');
    await consumer.stop();
  });
});

describe('hostile text from the wire', () => {
  it('a lone surrogate in a remote from-user is refused and counted; the purge and sweep timers that follow do not throw', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ peerDownGraceMs: 1_000 }), fakeContext(NODE_B));
    context.events.emit(register(NODE_A, '\ud800', Transport.Nats, 'Registered(UDP)', '127.0.0.1', '1'));
    context.events.emit(register(NODE_A, '1000', Transport.Nats, 'Registered(UDP)', 'realm\udfff'));
    context.events.emit(register(NODE_A, 'nul\u0000user', Transport.Multicast));
    context.events.emit(register(NODE_A, 'x'.repeat(65_536), Transport.Multicast));
    context.events.emit(register(NODE_A, '1001', Transport.Multicast));
    context.events.emit(peer('multicast::peerdown', 'fs-a'));
    await vi.advanceTimersByTimeAsync(70_000);
    expect(consumer.registrations).toBe(0);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'unusable_text')?.value).toBe(4);
    await consumer.stop();
  });
});

/** A sofia event with explicit ordering headers: origin timestamp (µs), Core-UUID, Event-Sequence. */
function ordered(item: BridgeEvent, tsUs: number, core: string, sequence: number): BridgeEvent {
  item.event.set('Event-Date-Timestamp', String(tsUs)).set('Core-UUID', core).set('Event-Sequence', String(sequence));
  return item;
}
const YEAR_2100_US = 4_102_444_800_000_000;
const dropsOf = async (context: FakeContext, cause: string) => (await context.metrics.drops.get()).values.find((v) => v.labels.cause === cause)?.value ?? 0;
const counterOf = async (context: FakeContext, name: string) => (await context.metrics.registry.getSingleMetric(name)!.get()).values.reduce((n, v) => n + v.value, 0);

describe('forged or skewed timestamps cannot pin state', () => {
  it('an unregister dated 2100 does not make the real re-register be ignored', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config(), fakeContext(NODE_B));
    const now = () => Date.now() * 1000;
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Nats), now(), 'core-a', 10));
    await vi.advanceTimersByTimeAsync(50);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('10.99.0.1');
    context.events.emit(ordered(unregister(NODE_A, '1000', Transport.Multicast), YEAR_2100_US, 'core-forged', 1));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('');
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Nats), now(), 'core-a', 11));
    await vi.advanceTimersByTimeAsync(50);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('10.99.0.1');
    expect(await counterOf(context, 'fsb_location_clock_skew_total')).toBe(1);
    await consumer.stop();
  });

  it('a register dated 2100 does not survive a legitimate register and unregister of the same node', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config(), fakeContext(NODE_B));
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Multicast), YEAR_2100_US, 'core-forged', 1));
    await vi.advanceTimersByTimeAsync(1_000);
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Nats), Date.now() * 1000, 'core-a', 5));
    await vi.advanceTimersByTimeAsync(1_000);
    context.events.emit(ordered(unregister(NODE_A, '1000', Transport.Nats), Date.now() * 1000, 'core-a', 6));
    await vi.advanceTimersByTimeAsync(50);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('');
    expect(consumer.registrations).toBe(0);
    await consumer.stop();
  });

  it('a register dated 2100 on another node does not outrank a later register elsewhere', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const nodeC = { name: 'fs-c', hostname: 'node-c', ipv4: '10.99.0.3', cluster: 'lab' };
    const { consumer, context } = await started(config(), fakeContext(NODE_B));
    context.events.emit(ordered(register(nodeC, '1000', Transport.Multicast), YEAR_2100_US, 'core-c', 1));
    await vi.advanceTimersByTimeAsync(1_000);
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Nats), Date.now() * 1000, 'core-a', 1));
    await vi.advanceTimersByTimeAsync(50);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('10.99.0.1');
    await consumer.stop();
  });

  it('a node whose clock is an hour behind or ahead: its registrations live from when they arrive, its own sequence orders them', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ expiryMarginMs: 0 }), fakeContext(NODE_B));
    const hour = 3_600_000_000;
    for (const [user, offset] of [['behind', -hour], ['ahead', hour]] as const) {
      context.events.emit(ordered(register(NODE_A, user, Transport.Nats, 'Registered(UDP)', '127.0.0.1', '300'), Date.now() * 1000 + offset, 'core-a', 1));
    }
    await vi.advanceTimersByTimeAsync(200_000);
    expect(modDbSelect('127.0.0.1', 'LOCATION_behind')).toBe('10.99.0.1');
    expect(modDbSelect('127.0.0.1', 'LOCATION_ahead')).toBe('10.99.0.1');
    // The clock steps back a minute between register and unregister: Event-Sequence still says which came last.
    for (const [user, offset] of [['behind', -hour - 60_000_000], ['ahead', hour - 60_000_000]] as const) {
      context.events.emit(ordered(unregister(NODE_A, user, Transport.Nats), Date.now() * 1000 + offset, 'core-a', 2));
    }
    await vi.advanceTimersByTimeAsync(50);
    expect(rows()).toEqual([]);
    // Without news a registration ends `expires` after it arrived, whatever the origin's clock said.
    context.events.emit(ordered(register(NODE_A, 'behind', Transport.Nats, 'Registered(UDP)', '127.0.0.1', '300'), Date.now() * 1000 - hour, 'core-a', 3));
    await vi.advanceTimersByTimeAsync(299_000);
    expect(modDbSelect('127.0.0.1', 'LOCATION_behind')).toBe('10.99.0.1');
    await vi.advanceTimersByTimeAsync(2_000);
    expect(modDbSelect('127.0.0.1', 'LOCATION_behind')).toBe('');
    await consumer.stop();
  });

  it('a forged Event-Sequence in the same run does not pin the slot past the next event with a later timestamp', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config(), fakeContext(NODE_B));
    context.events.emit(ordered(unregister(NODE_A, '1000', Transport.Multicast), Date.now() * 1000, 'core-a', Number.MAX_SAFE_INTEGER));
    await vi.advanceTimersByTimeAsync(1_000);
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Nats), Date.now() * 1000, 'core-a', 12));
    await vi.advanceTimersByTimeAsync(50);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('10.99.0.1');
    await consumer.stop();
  });

  it('a forged `expires` or state entry cannot keep a row for more than a day', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const buckets = new Map();
    const { consumer, context } = await started(config({ expiryMarginMs: 0 }), fakeContext(NODE_B, { buckets }));
    context.events.emit(register(NODE_A, 'forever', Transport.Multicast, 'Registered(UDP)', '127.0.0.1', '999999999'));
    const forged = { realm: '127.0.0.1', user: 'kv-forever', hostname: 'node-c', switchname: 'fs-c', ip: '10.99.0.3', ts: YEAR_2100_US, expiresAt: YEAR_2100_US / 1000 };
    await buckets.get('loc').put(stateKeyOf(forged), JSON.stringify(forged));
    await vi.advanceTimersByTimeAsync(86_000_000);
    expect(consumer.registrations).toBe(2);
    await vi.advanceTimersByTimeAsync(1_000_000);
    expect(consumer.registrations).toBe(0);
    expect(rows()).toEqual([]);
    await consumer.stop();
  });

  it('an unregister for a registration never seen leaves a tombstone: an older copy of the register cannot bring the row back; tombstones are forgotten after 10 minutes', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config(), fakeContext(NODE_B));
    const registeredAt = Date.now() * 1000;
    await vi.advanceTimersByTimeAsync(1_000);
    context.events.emit(ordered(unregister(NODE_A, '1000', Transport.Nats), Date.now() * 1000, 'core-a', 8));
    await vi.advanceTimersByTimeAsync(50);
    expect(consumer.tombstones).toBe(1);
    // The register fired before that unregister, redelivered late.
    context.events.emit(ordered(register(NODE_A, '1000', Transport.Nats), registeredAt, 'core-a', 7));
    await vi.advanceTimersByTimeAsync(50);
    expect(rows()).toEqual([]);
    await vi.advanceTimersByTimeAsync(10 * 60_000 + 2_000);
    expect(consumer.tombstones).toBe(0);
    await consumer.stop();
  });

  it('max-clock-skew is a bounded param', () => {
    const xml = (value: string) => defaultConfigXml({ 'consumer:location': { 'max-clock-skew': value } });
    expect(loadConfigText(xml('5s'), 'x.xml', {}).config.consumers.location.maxClockSkewMs).toBe(5_000);
    expect(() => loadConfigText(xml('2h'), 'x.xml', {})).toThrow(/max-clock-skew.*above the maximum/);
  });
});

describe('local registrations belong to the local node', () => {
  it('a remote register or unregister claiming our hostname, over multicast and NATS, leaves the local row alone (counted)', async () => {
    const { consumer, context } = await started(config(), fakeContext(NODE_B));
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Esl)]);
    const impostor = { name: 'fs-x', hostname: NODE_B.hostname, ipv4: '203.0.113.9', cluster: 'lab' };
    const sameName = { name: NODE_B.name, hostname: 'node-x', ipv4: '203.0.113.9', cluster: 'lab' };
    await feed(consumer, context, [
      unregister(impostor, '1000', Transport.Multicast),
      unregister(impostor, '1000', Transport.Nats),
      register(impostor, '1000', Transport.Nats),
      register(sameName, '1000', Transport.Multicast),
    ]);
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1000 | 10.99.0.2']);
    expect(await dropsOf(context, 'claims_local_node')).toBe(4);
    await consumer.stop();
  });

  it("another node deleting or overwriting our KV key does not touch our row, and we write the key back", async () => {
    const buckets = new Map();
    const { consumer, context } = await started(config(), fakeContext(NODE_B, { buckets }));
    await feed(consumer, context, [register(NODE_B, '1000', Transport.Esl)]);
    const bucket = buckets.get('loc');
    const key = stateKeyOf({ realm: '127.0.0.1', user: '1000', hostname: 'node-b' });
    const ours = JSON.parse(bucket.data.get(key));
    await bucket.delete(key);
    await settle();
    expect(JSON.parse(bucket.data.get(key))).toEqual(ours);
    await bucket.put(key, JSON.stringify({ realm: '127.0.0.1', user: '1000', hostname: 'node-b', switchname: 'fs-b', ip: '203.0.113.9', ts: Date.now() * 1000 + 5, expiresAt: Date.now() + 300_000 }));
    await consumer.flush();
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1000 | 10.99.0.2']);
    await consumer.stop();
  });

  it('the purge of a down node that claimed our hostname spares the local rows', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const { consumer, context } = await started(config({ peerDownGraceMs: 1_000 }), fakeContext(NODE_B));
    context.events.emit(register(NODE_B, '1000', Transport.Esl));
    context.events.emit(register({ name: 'fs-x', hostname: NODE_B.hostname, ipv4: '203.0.113.9', cluster: 'lab' }, '1001', Transport.Multicast));
    context.events.emit(peer('multicast::peerdown', 'fs-x'));
    await vi.advanceTimersByTimeAsync(2_000);
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1000 | 10.99.0.2']);
    await consumer.stop();
  });
});

describe('restart: rows remember where they came from', () => {
  const legacyNode = { name: 'fs-legacy', hostname: 'node-legacy', ipv4: '10.99.0.9', cluster: 'lab' };

  it("a legacy node's row (multicast only, never in KV) survives a restart with KV, and still expires on time", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const buckets = new Map();
    const first = await started(config({ expiryMarginMs: 0 }), fakeContext(NODE_B, { buckets }));
    first.context.events.emit(register(legacyNode, '1000', Transport.Multicast, 'Registered(UDP)', '127.0.0.1', '600'));
    first.context.events.emit(register(NODE_A, '1001', Transport.Nats));
    await vi.advanceTimersByTimeAsync(50);
    await first.consumer.stop();
    // A wrote 1001 to KV (the remote copy above came over NATS); the legacy node wrote nothing.
    const a = { realm: '127.0.0.1', user: '1001', hostname: 'node-a', switchname: 'fs-a', ip: '10.99.0.1', ts: Date.now() * 1000, expiresAt: Date.now() + 300_000 };
    await buckets.get('loc').put(stateKeyOf(a), JSON.stringify(a));
    const second = await started(config({ expiryMarginMs: 0 }), fakeContext(NODE_B, { buckets }));
    await vi.advanceTimersByTimeAsync(50);
    expect(rows()).toEqual(['node-legacy | 127.0.0.1 | LOCATION_1000 | 10.99.0.9', 'node-a | 127.0.0.1 | LOCATION_1001 | 10.99.0.1']);
    expect(second.consumer.registrations).toBe(2);
    await vi.advanceTimersByTimeAsync(601_000);
    expect(modDbSelect('127.0.0.1', 'LOCATION_1000')).toBe('');
    await second.consumer.stop();
  });

  it('a bridged node whose registration ended while we were down (its KV key is gone) loses its row at restart', async () => {
    const buckets = new Map();
    const first = await started(config(), fakeContext(NODE_B, { buckets }));
    await feed(first.consumer, first.context, [register(NODE_A, '1001', Transport.Nats), register(NODE_A, '1002', Transport.Multicast)]);
    await first.consumer.stop();
    // A still holds 1003 in KV, so A is a KV writer: its multicast-learned 1002 is KV's to end too.
    const other = { realm: '127.0.0.1', user: '1003', hostname: 'node-a', switchname: 'fs-a', ip: '10.99.0.1', ts: Date.now() * 1000, expiresAt: Date.now() + 300_000 };
    await buckets.get('loc').put(stateKeyOf(other), JSON.stringify(other));
    const second = await started(config(), fakeContext(NODE_B, { buckets }));
    await second.consumer.stop();
    expect(rows()).toEqual(['node-a | 127.0.0.1 | LOCATION_1003 | 10.99.0.1']);
  });

  it("rows of a host nobody recorded and that writes no KV (the Lua scripts' rows before the migration) are left alone", async () => {
    const path = join(dir, 'call_limit.db');
    const db = new Database(path);
    createModDbSchema(db);
    db.prepare('INSERT INTO db_data VALUES (?, ?, ?, ?)').run('node-lua', '127.0.0.1', 'LOCATION_2000', '10.99.0.7');
    db.close();
    const { consumer } = await started(config(), fakeContext(NODE_B));
    await consumer.stop();
    expect(rows()).toEqual(['node-lua | 127.0.0.1 | LOCATION_2000 | 10.99.0.7']);
  });

  it('without NATS a restart keeps the table; a registration that expired while the bridge was down loses its row', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
    const first = await started(config({ expiryMarginMs: 0 }), fakeContext(NODE_B, { withState: false }));
    first.context.events.emit(register(legacyNode, 'short', Transport.Multicast, 'Registered(UDP)', '127.0.0.1', '60'));
    first.context.events.emit(register(legacyNode, 'long', Transport.Multicast, 'Registered(UDP)', '127.0.0.1', '3600'));
    await vi.advanceTimersByTimeAsync(50);
    await first.consumer.stop();
    vi.setSystemTime(Date.now() + 120_000);
    const second = await started(config({ expiryMarginMs: 0 }), fakeContext(NODE_B, { withState: false }));
    await second.consumer.flush();
    expect(rows()).toEqual(['node-legacy | 127.0.0.1 | LOCATION_long | 10.99.0.9']);
    expect(second.consumer.registrations).toBe(1);
    await second.consumer.stop();
  });

  it('a tombstone survives a crash: the older register redelivered after the restart does not create the row', async () => {
    const registeredAt = Date.now() * 1000;
    const first = await started(config(), fakeContext(NODE_B, { withState: false }));
    await feed(first.consumer, first.context, [ordered(unregister(NODE_A, '1000', Transport.Nats), registeredAt + 1_000, 'core-a', 8)]);
    // No stop(): the process dies with the batch already written.
    const second = await started(config(), fakeContext(NODE_B, { withState: false }));
    expect(second.consumer.tombstones).toBe(1);
    await feed(second.consumer, second.context, [ordered(register(NODE_A, '1000', Transport.Nats), registeredAt, 'core-a', 7)]);
    expect(rows()).toEqual([]);
    await second.consumer.stop();
    await first.consumer.stop();
  });

  it('our own registration that KV lost while we were down is written back at restart', async () => {
    const buckets = new Map();
    const first = await started(config(), fakeContext(NODE_B, { buckets }));
    await feed(first.consumer, first.context, [register(NODE_B, '1000', Transport.Esl)]);
    await first.consumer.stop();
    const bucket = buckets.get('loc');
    bucket.data.clear();
    const second = await started(config(), fakeContext(NODE_B, { buckets }));
    await settle();
    expect([...bucket.data.keys()]).toEqual([stateKeyOf({ realm: '127.0.0.1', user: '1000', hostname: 'node-b' })]);
    expect(rows()).toEqual(['node-b | 127.0.0.1 | LOCATION_1000 | 10.99.0.2']);
    await second.consumer.stop();
  });
});
