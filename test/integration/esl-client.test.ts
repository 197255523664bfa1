import { Writable } from 'node:stream';
import type pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { EslConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { AuthError, CommandError, HeaderInjectionError, InvalidEslHeaderError, NotConnectedError } from '../../bridge/errors.js';
import { createLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { LOOP_GUARD_HEADER } from '../../bridge/pipeline/types.js';
import { EslClient, EslState } from '../../bridge/sources/esl/client.js';
import { EslSimulator, type Chunking } from '../support/esl-simulator.js';
import { until } from '../support/wait.js';

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** The production logger (its redaction included) writing JSON lines into an array; `raw` keeps the text as written. */
function captureLogger(): { logger: pino.Logger; lines: LogLine[]; raw: string[] } {
  const lines: LogLine[] = [];
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      raw.push(chunk.toString());
      lines.push(JSON.parse(chunk.toString()));
      done();
    },
  });
  return { logger: createLogger('debug', { stream }), lines, raw };
}

function config(port: number, over: Partial<EslConfig> = {}): EslConfig {
  return {
    host: '127.0.0.1',
    port,
    password: 'ClueCon',
    reconnectMaxMs: 1000,
    queueMaxEvents: 10_000,
    queueMaxBytes: 64 * 1024 * 1024,
    maxFrameBytes: 1024 * 1024,
    commandTimeoutMs: 2000,
    ...over,
  };
}

async function metricValue(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  return data.values
    .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
    .reduce((sum, v) => sum + v.value, 0);
}

let sim: EslSimulator;
let client: EslClient | undefined;

interface Harness {
  logger: pino.Logger;
  client: EslClient;
  metrics: Metrics;
  lines: LogLine[];
  raw: string[];
  received: FsEvent[];
}

/** A started client with a consumer that collects every event. */
async function connect(
  subscription: string | null,
  over: Partial<EslConfig> = {},
  extra: { format?: 'plain' | 'json'; consume?: boolean; stableAfterMs?: number } = {},
): Promise<Harness> {
  const metrics = new Metrics();
  const { logger, lines, raw } = captureLogger();
  client = new EslClient(config(sim.port, over), { subscription, logger, metrics, nodeName: 'fs-test', format: extra.format, stableAfterMs: extra.stableAfterMs });
  const received: FsEvent[] = [];
  client.start();
  if (extra.consume !== false) {
    const c = client;
    void (async () => {
      for await (const batch of c.events()) received.push(...batch);
    })();
  }
  return { logger, client, metrics, lines, raw, received };
}

afterEach(async () => {
  await client?.stop();
  client = undefined;
  await sim?.stop();
});

describe('EslClient against the simulator', () => {
  it('authenticates, subscribes, reports connected once and receives plain events', async () => {
    sim = await EslSimulator.start();
    const h = await connect('HEARTBEAT');
    const states: string[] = [];
    h.client.on('state', (s) => states.push(s));
    await h.client.ready(2000);
    sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready'));
    await until(() => h.received.length === 1);
    expect(h.received[0].get('Event-Info')).toBe('System Ready');
    expect(states).toEqual(['connected']);
    expect(sim.commands).toEqual(['auth ClueCon', 'event plain BACKGROUND_JOB HEARTBEAT']);
    expect(h.lines.filter((l) => l.msg === 'ESL connected')).toHaveLength(1);
    expect(await metricValue(h.metrics, 'fsb_events_in_total', { transport: 'esl', node: 'fs-test' })).toBe(1);
  });

  it('surfaces a refused password as AuthError, keeps retrying, and connects once it is fixed', async () => {
    sim = await EslSimulator.start({ password: 'other' });
    const h = await connect('ALL');
    await until(() => h.client.lastError instanceof AuthError && sim.commands.length >= 3);
    expect(h.client.state).toBe(EslState.Disconnected);
    expect(h.client.lastError?.message).toMatch(/-ERR invalid/);
    // Logged once although it was retried.
    expect(h.lines.filter((l) => /authentication failed/.test(l.msg))).toHaveLength(1);
    await sim.stop();
    sim = await EslSimulator.start({ port: sim.port, password: 'ClueCon' });
    await h.client.ready(3000);
    expect(h.client.lastError).toBeNull();
  });

  it('delivers only what the subscription names, by event name and CUSTOM subclass', async () => {
    sim = await EslSimulator.start();
    const h = await connect('PRESENCE_IN CUSTOM sofia::register multicast::event');
    await h.client.ready(2000);
    sim.fire(FsEvent.create('HEARTBEAT'));
    sim.fire(FsEvent.create('PRESENCE_IN').add('status', 'CS_ROUTING'));
    sim.fire(FsEvent.create('CUSTOM', 'sofia::expire'));
    sim.fire(FsEvent.create('CUSTOM', 'sofia::register').add('status', 'Registered(UDP)'));
    sim.fire(FsEvent.create('CUSTOM', 'multicast::event'));
    sim.fire(FsEvent.create('CHANNEL_CREATE'));
    sim.fire(FsEvent.create('HEARTBEAT'));
    await until(() => h.received.length === 3);
    await new Promise((r) => setTimeout(r, 30));
    expect(h.received.map((e) => e.subclass ?? e.name)).toEqual(['PRESENCE_IN', 'sofia::register', 'multicast::event']);
  });

  it('receives events in json format identically to plain', async () => {
    sim = await EslSimulator.start();
    const plain = await connect('ALL');
    const plainClient = plain.client;
    const json = await connect('ALL', {}, { format: 'json' });
    await plainClient.ready(2000);
    await json.client.ready(2000);
    const events = EslSimulator.loadCapture('a-plain.raw').slice(0, 40);
    await sim.replay(events);
    await until(() => plain.received.length === 40 && json.received.length === 40);
    expect(json.received.map((e) => e.headers)).toEqual(plain.received.map((e) => e.headers));
    expect(json.received.map((e) => e.body)).toEqual(plain.received.map((e) => e.body));
    await plainClient.stop();
  });

  it('runs api, bgapi and sendevent, and maps -ERR replies to CommandError', async () => {
    sim = await EslSimulator.start({ api: { version: 'FreeSWITCH Version 1.10.12-release\n' } });
    const h = await connect('CUSTOM multicast::event');
    await h.client.ready(2000);
    expect(await h.client.api('version')).toBe('FreeSWITCH Version 1.10.12-release\n');
    expect(await h.client.api('nosuch')).toBe('-ERR nosuch Command not found!\n');

    sim.setApi('db', (arg) => `+OK ${arg}\n`);
    const job = await h.client.bgapi('db insert/realm/key/value');
    expect(job.jobUuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(await job.result).toBe('+OK insert/realm/key/value\n');
    // The implicit BACKGROUND_JOB subscription does not leak into the event stream.
    await new Promise((r) => setTimeout(r, 20));
    expect(h.received.filter((e) => e.name === 'BACKGROUND_JOB')).toHaveLength(0);

    const out = FsEvent.create('CUSTOM', 'multicast::event')
      .add('Orig-Event-Name', 'PRESENCE_IN')
      .add('Orig-from', '1000@127.0.0.1')
      .add('Odd', 'a:b %41+c é');
    out.body = 'line one\r\nline two\n';
    const uuid = await h.client.sendEvent(out);
    expect(uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(sim.received).toHaveLength(1);
    expect(sim.received[0].headers).toEqual(out.headers);
    expect(sim.received[0].body).toBe(out.body);
    await until(() => h.received.length === 1);
    expect(h.received[0].get('Event-UUID')).toBe(uuid);
    expect(h.received[0].get('Odd')).toBe('a:b %41+c é');
    expect(h.received[0].body).toBe('line one\r\nline two\n');

    await expect(h.client.sendEvent(FsEvent.create('NOT AN EVENT'))).rejects.toBeInstanceOf(InvalidEslHeaderError);
  });

  it('rejects CR/LF, NUL, empty and colon names before anything reaches FreeSWITCH', async () => {
    sim = await EslSimulator.start();
    const h = await connect('ALL');
    await h.client.ready(2000);
    const before = sim.commands.length;
    const bad: [FsEvent, unknown][] = [
      [FsEvent.create('CUSTOM', 'multicast::event').add('X', 'a\nEvent-Name: SHUTDOWN'), HeaderInjectionError],
      [FsEvent.create('CUSTOM', 'multicast::event').add('X', 'a\rb'), HeaderInjectionError],
      [FsEvent.create('CUSTOM', 'multicast::event').add('X\nY', 'v'), HeaderInjectionError],
      [FsEvent.create('CUSTOM', 'multicast::event\n\nexit'), HeaderInjectionError],
      [FsEvent.create('CUSTOM', 'multicast::event').add('', 'v'), InvalidEslHeaderError],
      [FsEvent.create('CUSTOM', 'multicast::event').add('A:B', 'v'), InvalidEslHeaderError],
      [FsEvent.create('CUSTOM', 'multicast::event').add('X', 'a\0b'), InvalidEslHeaderError],
    ];
    for (const [event, type] of bad) await expect(h.client.sendEvent(event)).rejects.toBeInstanceOf(type);
    await expect(h.client.api('status\n\nsendevent SHUTDOWN')).rejects.toBeInstanceOf(HeaderInjectionError);
    await expect(h.client.bgapi('status\rx')).rejects.toBeInstanceOf(HeaderInjectionError);
    await h.client.api('probe');
    expect(sim.commands.slice(before)).toEqual(['api probe']);
    expect(sim.received).toHaveLength(0);
  });

  it('maps a -ERR command reply to CommandError and rejects commands while disconnected', async () => {
    sim = await EslSimulator.start();
    const h = await connect('ALL');
    await h.client.ready(2000);
    const empty = new FsEvent([['Event-Name', 'CUSTOM']]);
    // The simulator (like FreeSWITCH) answers unknown commands with -ERR command not found.
    await expect((h.client as unknown as { command(t: string): Promise<unknown> }).command('bogus\n\n')).rejects.toBeInstanceOf(CommandError);
    await sim.stop();
    await until(() => h.client.state === EslState.Disconnected);
    await expect(h.client.sendEvent(empty)).rejects.toBeInstanceOf(NotConnectedError);
  });

  const chunkings: [string, Chunking, number][] = [
    ['byte by byte', { mode: 'byte' }, 25],
    ['random sizes', { mode: 'random', min: 1, max: 3000, seed: 42 }, 200],
    ['fixed 7-byte', { mode: 'fixed', size: 7 }, 60],
  ];
  it.each(chunkings)('gets every fixture event intact and in order with writes cut %s', async (_name, chunking, count) => {
    sim = await EslSimulator.start();
    const h = await connect('ALL');
    await h.client.ready(2000);
    sim.setChunking(chunking);
    const events = EslSimulator.loadCapture('a-plain.raw').slice(0, count);
    await sim.replay(events, { verbatim: true });
    await until(() => h.received.length === count, 15_000);
    expect(h.received.map((e) => e.headers)).toEqual(events.map((e) => e.event.headers));
    expect(h.received.map((e) => e.body)).toEqual(events.map((e) => e.event.body));
  });

  it('reconnects and resubscribes within 1 s of FreeSWITCH coming back, logging each state change once', async () => {
    sim = await EslSimulator.start();
    // The next attempt can be a whole backoff cap away; 800 ms plus the handshake stays under 1 s.
    const h = await connect('HEARTBEAT CUSTOM sofia::register', { reconnectMaxMs: 800 });
    await h.client.ready(2000);
    const states: string[] = [];
    h.client.on('state', (s) => states.push(s));
    await sim.stop();
    await until(() => h.client.state === EslState.Disconnected);
    // Down long enough for the backoff to reach its cap.
    await new Promise((r) => setTimeout(r, 2500));
    await sim.restart();
    const back = Date.now();
    await h.client.ready(3000);
    await sim.waitForSubscribers(1);
    const took = Date.now() - back;
    expect(took).toBeLessThan(1000);
    expect(states).toEqual(['disconnected', 'connected']);
    expect(sim.commands.filter((c) => c.startsWith('event '))).toEqual([
      'event plain BACKGROUND_JOB HEARTBEAT CUSTOM sofia::register',
      'event plain BACKGROUND_JOB HEARTBEAT CUSTOM sofia::register',
    ]);
    expect(h.lines.filter((l) => l.msg === 'ESL disconnected, retrying')).toHaveLength(1);
    expect(h.lines.filter((l) => l.msg === 'ESL connected')).toHaveLength(2);
    expect(h.lines.filter((l) => l.level >= 40 && l.msg !== 'ESL disconnected, retrying')).toEqual([]);
    sim.fire(FsEvent.create('CUSTOM', 'sofia::register'));
    await until(() => h.received.length === 1);
    expect(await metricValue(h.metrics, 'fsb_esl_reconnects_total')).toBe(1);
  });

  it('counts the events skipped across a reconnect as a gap', async () => {
    sim = await EslSimulator.start();
    const h = await connect('HEARTBEAT');
    await h.client.ready(2000);
    // Numbers skipped while connected are a filtered subscription at work, not loss.
    sim.fire(FsEvent.create('HEARTBEAT'));
    sim.skipSequence(3);
    sim.fire(FsEvent.create('HEARTBEAT'));
    await until(() => h.received.length === 2);
    expect(await metricValue(h.metrics, 'fsb_esl_reconnect_sequence_skipped_total')).toBe(0);

    await sim.dropClients();
    sim.skipSequence(7);
    await h.client.ready(3000);
    sim.fire(FsEvent.create('HEARTBEAT'));
    await until(() => h.received.length === 3);
    expect(h.received.map((e) => e.sequence)).toEqual([1, 5, 13]);
    // An upper bound (a filtered subscription skips numbers by design), kept out of the exact-loss counter.
    expect(await metricValue(h.metrics, 'fsb_esl_reconnect_sequence_skipped_total')).toBe(7);
    expect(await metricValue(h.metrics, 'fsb_sequence_gap_events_total')).toBe(0);
    expect(await metricValue(h.metrics, 'fsb_esl_reconnects_total')).toBe(1);
    const gapLogs = h.lines.filter((l) => /events lost/.test(l.msg));
    expect(gapLogs).toHaveLength(1);
    expect(gapLogs[0]).toMatchObject({ from: 6, to: 12, lost: 7 });
  });

  it('does not count a restarted FreeSWITCH (new Core-UUID) as a gap', async () => {
    sim = await EslSimulator.start({ firstSequence: 500 });
    const h = await connect('HEARTBEAT');
    await h.client.ready(2000);
    sim.fire(FsEvent.create('HEARTBEAT'));
    await until(() => h.received.length === 1);
    await sim.restart({ newCoreUuid: true });
    await h.client.ready(3000);
    await sim.waitForSubscribers(1);
    sim.skipSequence(40);
    sim.fire(FsEvent.create('HEARTBEAT'));
    await until(() => h.received.length === 2);
    expect(h.received[1].coreUuid).not.toBe(h.received[0].coreUuid);
    expect(await metricValue(h.metrics, 'fsb_sequence_gap_events_total')).toBe(0);
    expect(h.lines.filter((l) => /FreeSWITCH restarted/.test(l.msg))).toHaveLength(1);
  });

  it('filters events carrying the loop guard header and counts them as filtered, not dropped', async () => {
    sim = await EslSimulator.start();
    const h = await connect('CUSTOM multicast::event');
    await h.client.ready(2000);
    await h.client.sendEvent(FsEvent.create('CUSTOM', 'multicast::event').add(LOOP_GUARD_HEADER, 'fs-test'));
    sim.fire(FsEvent.create('CUSTOM', 'multicast::event').add('Orig-Event-Name', 'HEARTBEAT'));
    await until(() => h.received.length === 1);
    expect(h.received[0].get('Orig-Event-Name')).toBe('HEARTBEAT');
    expect(await metricValue(h.metrics, 'fsb_filtered_total', { component: 'esl', cause: 'loop_guard' })).toBe(1);
    expect(await metricValue(h.metrics, 'fsb_drops_total', { component: 'esl', cause: 'loop_guard' })).toBe(0);
  });

  it('pauses the socket when the consumer lags, never queues past the cap, and loses nothing', async () => {
    sim = await EslSimulator.start();
    const cap = 50;
    const h = await connect('ALL', { queueMaxEvents: cap }, { consume: false });
    await h.client.ready(2000);
    const events = EslSimulator.loadCapture('a-plain.raw');
    const total = 3000;
    let maxQueue = 0;
    const watch = setInterval(() => (maxQueue = Math.max(maxQueue, h.client.queueLength)), 1);
    const replay = sim.replay(events, { count: total, loop: true });
    await until(() => h.client.readPaused);
    await new Promise((r) => setTimeout(r, 200));
    // Paused with a full queue while the simulator still has events to send.
    expect(h.client.readPaused).toBe(true);
    expect(h.client.queueLength).toBe(cap);
    expect(await metricValue(h.metrics, 'fsb_queue_depth', { component: 'esl' })).toBe(cap);

    const received: FsEvent[] = [];
    for await (const batch of h.client.events()) {
      expect(batch.length).toBeLessThanOrEqual(cap);
      received.push(...batch);
      if (received.length === total) break;
    }
    clearInterval(watch);
    expect(await replay).toBe(total);
    expect(maxQueue).toBeLessThanOrEqual(cap);
    const seqs = received.map((e) => e.sequence!);
    expect(seqs[seqs.length - 1] - seqs[0]).toBe(total - 1);
    expect(seqs.every((s, i) => i === 0 || s === seqs[i - 1] + 1)).toBe(true);
  });

  it('treats an oversized frame as a broken stream: counted, reconnected, and events flow again', async () => {
    sim = await EslSimulator.start();
    const h = await connect('ALL', { maxFrameBytes: 4096 });
    await h.client.ready(2000);
    const big = FsEvent.create('CUSTOM', 'test::big');
    big.body = 'x'.repeat(10_000);
    sim.fire(big);
    await until(() => sim.commands.filter((c) => c.startsWith('auth')).length === 2);
    await h.client.ready(3000);
    await sim.waitForSubscribers(1);
    sim.fire(FsEvent.create('HEARTBEAT'));
    await until(() => h.received.length === 1);
    expect(h.received[0].name).toBe('HEARTBEAT');
    expect(await metricValue(h.metrics, 'fsb_esl_stream_errors_total', { cause: 'frame_too_large' })).toBe(1);
    expect(h.lines.filter((l) => /desynchronised/.test(l.msg))).toHaveLength(1);
  });

  it('never logs the ESL password, even when auth gets no reply (13.9)', async () => {
    const password = 'S3cret-Pa55word';
    sim = await EslSimulator.start({ password });
    sim.ignore(/^auth /);
    const h = await connect('ALL', { password, commandTimeoutMs: 200 });
    const retries: number[] = [];
    h.client.on('retry', (delay: number) => retries.push(delay));
    await until(() => retries.length >= 3);
    // The timeout is reported, with the command it was for, and without its secret.
    expect(h.client.lastError?.message).toBe('auth [redacted]: no reply within 200 ms');
    expect(h.lines.some((l) => l.err === 'auth [redacted]: no reply within 200 ms')).toBe(true);
    expect(h.raw.length).toBeGreaterThan(0);
    expect(h.raw.join('')).not.toContain(password);
    // Whoever logs a config section or an error's fields, the secret fields are censored too.
    h.logger.warn({ esl: { host: 'h', password }, nats: { pass: password, token: password }, psk: password }, 'config');
    expect(h.raw.join('')).not.toContain(password);
    expect(h.lines[h.lines.length - 1]).toMatchObject({ esl: { host: 'h', password: '[redacted]' }, nats: { pass: '[redacted]', token: '[redacted]' }, psk: '[redacted]' });
  });

  it('backs off on a broken frame right after a good handshake instead of reconnecting in a storm, logging the cause once (13.11)', async () => {
    sim = await EslSimulator.start();
    // Every connection authenticates and subscribes fine, then FreeSWITCH sends a frame that cannot be parsed.
    const h = await connect('ALL', { reconnectMaxMs: 800 });
    h.client.on('state', (state: string) => state === 'connected' && sim.sendRaw('Content-Length: not-a-number\n\n'));
    const retries: number[] = [];
    h.client.on('retry', (delay: number) => retries.push(delay));
    await until(() => retries.length >= 6, 20_000);
    // Doubling from the first failure up to the cap: a good auth does not reset it.
    expect(retries.slice(0, 6)).toEqual([200, 400, 800, 800, 800, 800]);
    expect(await metricValue(h.metrics, 'fsb_esl_stream_errors_total', { cause: 'frame_parse' })).toBeGreaterThanOrEqual(6);
    expect(h.lines.filter((l) => /desynchronised/.test(l.msg)), JSON.stringify(h.lines.map((l) => l.msg))).toHaveLength(1);
    expect(h.lines.filter((l) => l.msg === 'ESL disconnected, retrying')).toHaveLength(1);
    expect(h.lines.filter((l) => l.msg === 'ESL connected')).toHaveLength(2);
  });

  it('starts the backoff over once a connection has stayed up (a restarted FreeSWITCH is rejoined at once)', async () => {
    sim = await EslSimulator.start();
    const h = await connect('ALL', { reconnectMaxMs: 800 }, { stableAfterMs: 300 });
    const retries: number[] = [];
    h.client.on('retry', (delay: number) => retries.push(delay));
    await h.client.ready(2000);
    await until(() => h.client.consecutiveFailures === 0 && h.lines.length > 0);
    await new Promise((r) => setTimeout(r, 400));
    await sim.dropClients();
    await until(() => retries.length === 1);
    expect(retries).toEqual([100]);
    await h.client.ready(3000);
  });

  it('bounds its queue in bytes too: 1 MB events pause the socket at queue-max-bytes, and nothing is lost (13.12)', async () => {
    sim = await EslSimulator.start();
    const cap = 4 * 1024 * 1024;
    const h = await connect('CUSTOM test::big', { queueMaxEvents: 10_000, queueMaxBytes: cap, maxFrameBytes: 2 * 1024 * 1024 }, { consume: false });
    await h.client.ready(2000);
    const big = FsEvent.create('CUSTOM', 'test::big');
    big.body = 'x'.repeat(1024 * 1024);
    const total = 40;
    const replay = sim.replay([big], { count: total, loop: true });
    await until(() => h.client.readPaused);
    await new Promise((r) => setTimeout(r, 200));
    expect(h.client.readPaused).toBe(true);
    // The event that crossed the limit is the last one taken: at most one event over it.
    expect(h.client.queuedBytes).toBeGreaterThanOrEqual(cap);
    expect(h.client.queuedBytes).toBeLessThan(cap + 1024 * 1024 + 4096);
    expect(h.client.queueLength).toBeLessThan(total);
    expect(await metricValue(h.metrics, 'fsb_queue_bytes', { component: 'esl' })).toBe(h.client.queuedBytes);
    let received = 0;
    let maxBytes = 0;
    for await (const batch of h.client.events()) {
      maxBytes = Math.max(maxBytes, batch.reduce((sum, e) => sum + (e.body?.length ?? 0), 0));
      received += batch.length;
      if (received === total) break;
    }
    expect(await replay).toBe(total);
    expect(maxBytes).toBeLessThan(cap + 1024 * 1024 + 4096);
  });

  it('pipelines commands on a command-only connection: one write, replies matched in order, no subscription', async () => {
    sim = await EslSimulator.start();
    sim.setIngestRate(200_000);
    const h = await connect(null);
    await h.client.ready(2000);
    expect(sim.commands).toEqual(['auth ClueCon']);
    const n = 200;
    const commands = Array.from({ length: n }, (_, i) => `sendevent CUSTOM\nEvent-Subclass: test::seq\nSeq: ${i}\n\n`);
    const replies: (string | null)[] = [];
    let written: Error | null | undefined;
    const sent = h.client.pipeline(
      commands,
      commands.map(() => (error, frame) => replies.push(error ? error.message : (frame?.headers['Reply-Text'] ?? null))),
      (error) => (written = error),
    );
    expect(sent).toBe(true);
    await until(() => replies.length === n);
    expect(written).toBeNull();
    expect(replies.every((r) => r?.startsWith('+OK '))).toBe(true);
    expect(sim.received.map((e) => e.get('Seq'))).toEqual(commands.map((_, i) => String(i)));
    // The Event-UUIDs FreeSWITCH gave come back in command order.
    expect(new Set(replies).size).toBe(n);
  });

  it('stops gracefully with exit and rejects pending bgapi jobs', async () => {
    sim = await EslSimulator.start();
    sim.setApi('slow', () => 'done\n');
    const h = await connect('ALL');
    await h.client.ready(2000);
    await h.client.stop();
    expect(h.client.state).toBe(EslState.Stopped);
    expect(sim.commands[sim.commands.length - 1]).toBe('exit');
    await expect(h.client.api('slow')).rejects.toBeInstanceOf(NotConnectedError);
    client = undefined;
  });
});
