import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { EslConfig, InjectConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { createLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { sendeventCommand } from '../../bridge/sources/esl/client.js';
import { EslInjector, type InjectOutcome } from '../../bridge/sources/esl/injector.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { until } from '../support/wait.js';

let sim: EslSimulator | undefined;
let injector: EslInjector | undefined;

afterEach(async () => {
  await injector?.stop(Date.now());
  injector = undefined;
  await sim?.stop();
  sim = undefined;
});

function eslConfig(port: number, over: Partial<EslConfig> = {}): EslConfig {
  return { host: '127.0.0.1', port, password: 'ClueCon', reconnectMaxMs: 200, queueMaxEvents: 1000, queueMaxBytes: 16 * 1024 ** 2, maxFrameBytes: 1024 ** 2, commandTimeoutMs: 2000, ...over };
}

interface Harness {
  injector: EslInjector;
  metrics: Metrics;
  logs: { level: number; msg: string }[];
  written: string[];
}

function start(port: number, inject: InjectConfig, over: Partial<EslConfig> = {}, windowBytes?: number): Harness {
  const metrics = new Metrics();
  const logs: { level: number; msg: string }[] = [];
  const logger = createLogger('debug', {
    stream: new Writable({
      write(chunk, _enc, done) {
        logs.push(JSON.parse(chunk.toString()));
        done();
      },
    }),
  });
  const written: string[] = [];
  injector = new EslInjector(eslConfig(port, over), inject, { logger, metrics, nodeName: 'fs-b', windowBytes, onWritten: (keys) => written.push(...keys) });
  injector.start();
  return { injector, metrics, logs, written };
}

/** A remote-looking event: about the size of a sofia::register as mod_event_multicast injects it. */
function remoteEvent(i: number, user: string | null): FsEvent {
  const event = FsEvent.create('CUSTOM', 'multicast::event').add('Multicast', 'yes').add('Orig-Event-Name', 'CUSTOM').add('Orig-Event-Subclass', 'test::burst');
  event.add('Orig-Core-UUID', 'b5b1b0c8-8f7e-4b9e-9a55-000000000001').add('Orig-Event-Sequence', String(i));
  for (let h = 0; h < 20; h++) event.add(`Orig-Header-${h}`, `value ${h} of event ${i}`);
  if (user) event.add('Orig-from-user', user);
  event.add('Seq', String(i));
  return event;
}

describe('EslInjector against the simulator', () => {
  it('delivers a 5,000-event burst whole, in order per key, at the rate FreeSWITCH reads, within its byte budget', async () => {
    sim = await EslSimulator.start({ keepReceived: true });
    // read_packet's pace: a few MB of headers per second per connection.
    sim.setIngestRate(2_000_000);
    const cap = 4 * 1024 * 1024;
    const h = start(sim.port, { connections: 2, queueMaxBytes: cap });
    await h.injector.ready(5000);
    const total = 5_000;
    const outcomes = new Map<InjectOutcome, number>();
    let refused = 0;
    let offered = 0;
    let maxBytes = 0;
    // Offer as a source would: as fast as they come, waiting when the queue says it is full.
    while (offered < total) {
      const event = remoteEvent(offered, `u${offered % 50}`);
      const ok = h.injector.offer({
        command: sendeventCommand(event),
        orderKey: `user:u${offered % 50}`,
        key: `k${offered}`,
        done: (outcome) => outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1),
      });
      maxBytes = Math.max(maxBytes, h.injector.bytes);
      if (!ok) {
        refused++;
        const room = h.injector.room();
        expect(room).not.toBeNull();
        await room;
        continue;
      }
      offered++;
    }
    await until(() => (outcomes.get('injected') ?? 0) === total, 60_000);
    expect([...outcomes.keys()]).toEqual(['injected']);
    expect(maxBytes).toBeLessThanOrEqual(cap + 4096);
    // The queue filled and the offerer waited: that is what the byte budget is for.
    expect(refused).toBeGreaterThan(0);
    expect(sim.received).toHaveLength(total);
    // Per order key, FreeSWITCH got them in the order offered.
    const lastSeen = new Map<string, number>();
    for (const e of sim.received) {
      const user = e.get('Orig-from-user')!;
      const seq = Number(e.get('Seq'));
      expect(seq).toBeGreaterThan(lastSeen.get(user) ?? -1);
      lastSeen.set(user, seq);
    }
    // Both connections carried a share.
    expect(sim.sendeventsPerConnection.every((n) => n > total / 10)).toBe(true);
    expect(h.written).toHaveLength(total);
    expect(new Set(h.written).size).toBe(total);
    expect(h.injector.bytes).toBe(0);
  }, 90_000);

  it('never times out a command that waits its turn; a silent FreeSWITCH is logged once, and its answers are still counted', async () => {
    sim = await EslSimulator.start();
    const h = start(sim.port, { connections: 1, queueMaxBytes: 8 * 1024 ** 2 }, { commandTimeoutMs: 300 });
    await h.injector.ready(5000);
    // FreeSWITCH reads 200 bytes/s: the burst takes far longer than the command timeout.
    sim.setIngestRate(200);
    const outcomes: InjectOutcome[] = [];
    for (let i = 0; i < 30; i++) {
      expect(h.injector.offer({ command: sendeventCommand(remoteEvent(i, null)), orderKey: null, done: (o) => outcomes.push(o) })).toBe(true);
    }
    await until(() => h.logs.some((l) => /has not answered an injection/.test(l.msg)), 10_000);
    // The first may have been read at once; the others are waiting, and none failed.
    expect(outcomes.length).toBeLessThan(30);
    expect(outcomes.every((o) => o === 'injected')).toBe(true);
    sim.setIngestRate(0);
    await until(() => outcomes.length === 30, 10_000);
    expect(new Set(outcomes)).toEqual(new Set(['injected']));
    expect(h.logs.filter((l) => /has not answered an injection/.test(l.msg))).toHaveLength(1);
    expect(h.logs.some((l) => /answers injections again/.test(l.msg))).toBe(true);
  });

  it('refuses beyond its byte budget (nothing queued), and takes again once FreeSWITCH caught up', async () => {
    sim = await EslSimulator.start();
    sim.setIngestRate(50_000);
    const cap = 1024 * 1024;
    const h = start(sim.port, { connections: 1, queueMaxBytes: cap });
    await h.injector.ready(5000);
    let accepted = 0;
    const done: InjectOutcome[] = [];
    for (let i = 0; ; i++) {
      const ok = h.injector.offer({ command: sendeventCommand(remoteEvent(i, null)), orderKey: null, done: (o) => done.push(o) });
      if (!ok) break;
      accepted++;
    }
    expect(h.injector.bytes).toBeGreaterThanOrEqual(cap);
    expect(h.injector.bytes).toBeLessThan(cap + 4096);
    // The gauges follow once per event-loop turn.
    await new Promise((resolve) => setImmediate(resolve));
    expect(await h.metrics.queueBytes.get()).toMatchObject({ values: [{ labels: { component: 'inject' }, value: h.injector.bytes }] });
    sim.setIngestRate(0);
    await until(() => done.length === accepted, 20_000);
    expect(sim.received).toHaveLength(accepted);
    expect(h.injector.offer({ command: sendeventCommand(remoteEvent(-1, null)), orderKey: null })).toBe(true);
  });

  /** 400 injections on one connection, the simulator slow enough that much of the burst is written and unread (in its socket) when the connection ends. */
  async function burstInFlight(simulator: EslSimulator) {
    simulator.setIngestRate(20_000);
    const h = start(simulator.port, { connections: 1, queueMaxBytes: 8 * 1024 ** 2 }, {}, 8 * 1024);
    await h.injector.ready(5000);
    const outcomes = new Map<number, InjectOutcome>();
    const total = 400;
    for (let i = 0; i < total; i++) {
      h.injector.offer({ command: sendeventCommand(remoteEvent(i, null)), orderKey: null, key: `k${i}`, done: (o) => outcomes.set(i, o) });
    }
    await until(() => simulator.received.length >= 5);
    return { h, outcomes, total };
  }

  it('when FreeSWITCH closes the connection with injections in flight: what it had not read is written again first, every event arrives once', async () => {
    sim = await EslSimulator.start();
    const { h, outcomes, total } = await burstInFlight(sim);
    await sim.dropClients();
    sim.setIngestRate(0);
    await until(() => outcomes.size === total, 30_000);
    // Sent = injected: nothing unconfirmed, nothing lost, nothing counted twice.
    expect([...new Set(outcomes.values())]).toEqual(['injected']);
    const seqs = sim.received.map((e) => Number(e.get('Seq')));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(seqs).toEqual(Array.from({ length: total }, (_, i) => i));
    const resent = (await h.metrics.registry.getSingleMetric('fsb_inject_resent_total')!.get()).values[0].value;
    expect(resent).toBeGreaterThan(0);
    expect(h.logs.filter((l) => /closed the ESL connection before answering/.test(l.msg))).toHaveLength(1);
    expect(new Set(h.written).size).toBe(total);
    expect(h.injector.bytes).toBe(0);
  });

  it('when the bridge resets the connection itself (a broken stream): what was written is unconfirmed, never written twice, what was queued goes after the reconnect', async () => {
    sim = await EslSimulator.start();
    const { h, outcomes, total } = await burstInFlight(sim);
    // A frame the parser refuses: the client closes the connection (FreeSWITCH reads what reached its socket).
    sim.sendRaw('Content-Length: x\n\n');
    await until(() => h.logs.some((l) => /desynchronised/.test(l.msg)));
    sim.setIngestRate(0);
    await until(() => outcomes.size === total, 30_000);
    const byOutcome = (o: InjectOutcome) => [...outcomes].filter(([, v]) => v === o).map(([i]) => i);
    const unconfirmed = byOutcome('unconfirmed');
    expect(unconfirmed.length).toBeGreaterThan(0);
    expect(byOutcome('injected').length + unconfirmed.length).toBe(total);
    // Nothing reached FreeSWITCH twice, and every injected one did.
    const seqs = sim.received.map((e) => Number(e.get('Seq')));
    expect(new Set(seqs).size).toBe(seqs.length);
    for (const i of byOutcome('injected')) expect(seqs).toContain(i);
    // Unconfirmed ones were recorded as written: after a crash, their redelivery is not injected again.
    for (const i of unconfirmed) expect(h.written).toContain(`k${i}`);
    expect(h.logs.some((l) => /written but not answered/.test(l.msg))).toBe(true);
    expect(h.metrics.registry.getSingleMetric('fsb_inject_resent_total')).toBeDefined();
    expect((await h.metrics.registry.getSingleMetric('fsb_inject_resent_total')!.get()).values[0]?.value ?? 0).toBe(0);
  });
});
