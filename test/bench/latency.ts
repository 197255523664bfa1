import { execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { PARAMS } from '../../bridge/config/schema.js';
import { FsEvent } from '../../bridge/event/event.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { watchLoop } from './support-eld.js';
import { describeNeighbours, describeStalls, realtimeNeighbours, startStallObserver, type StallReport } from './support-machine.js';
import { loadAverage, percentile, processCpuMs, round, sleep, startBridgeProcess, type BridgeProcess, type ConfigSections } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * A -> B latency at 1,000 events/s: node A's simulator fires PRESENCE_IN (a new call
 * each); the clock stops when B's simulator receives the `CUSTOM multicast::event` B's
 * bridge injects for it: what mod_sofia on B lights the remote lamp from (the BLF
 * consumer, enabled on B, no longer fires its own PRESENCE_IN for a live remote call).
 * Both bridges are the CLI in their own processes; both simulators live in the
 * benchmark's process, so one clock times both ends.
 *
 * Run once per transport: multicast (TTL 0 on 127.0.0.1, loopback on, in the
 * runner's namespace) and NATS (JetStream on a local nats-server 2.9.10), and that
 * under two CPU schedulings (see Scheduling below).
 *
 * The other path the issue names, a registration to its db row on B, is not timed
 * here: the location consumer batches its writes (consumer:location/flush-interval,
 * 20 ms by default) so that FreeSWITCH's own mod_db reads never wait on a long
 * transaction; that bound, not the transport, sets its latency.
 *
 * Baseline (same run): UDP ping-pong on loopback between this process and a child
 * echo process, 1 ping per ms, round-trip time: the floor of any two-process path
 * (A -> B here crosses four processes and three sockets).
 *
 * Beside each measurement, so that a figure says whether it measured the bridges or the
 * machine (support-machine.ts): the stalls of an idle probe process scheduled like the
 * measured ones, the real-time threads of other processes on the machine (a FreeSWITCH
 * lab's threads at SCHED_FIFO 99 preempt everything here), and the CPU per event of the
 * benchmark process and of each bridge (at 1,000 events/s the five processes together
 * come near the 2 cores, and the tail follows that).
 */
const PING_COUNT = 2_000;

async function udpPingPong(count: number): Promise<number[]> {
  const echo = spawn(
    process.execPath,
    ['-e', "const s=require('node:dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address));s.bind(0,'127.0.0.1',()=>console.log(s.address().port));process.stdin.on('end',()=>process.exit(0)).resume();"],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const [line] = (await once(echo.stdout!, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const rtts: number[] = [];
  let sentAt = 0;
  let answered: (() => void) | null = null;
  socket.on('message', () => {
    rtts.push(performance.now() - sentAt);
    answered?.();
  });
  const payload = Buffer.alloc(900, 'x');
  for (let i = 0; i < count; i++) {
    const reply = new Promise<void>((resolve) => (answered = resolve));
    sentAt = performance.now();
    socket.send(payload, port, '127.0.0.1');
    await Promise.race([reply, sleep(100)]);
    await sleep(1);
  }
  socket.close();
  echo.stdin!.end();
  return rtts.sort((a, b) => a - b);
}

function presence(i: number): FsEvent {
  return FsEvent.create('PRESENCE_IN')
    .add('proto', 'any')
    .add('login', 'src/switch_channel.c')
    .add('from', `${1000 + (i % 500)}@bench`)
    .add('status', 'CS_ROUTING')
    .add('Answer-State', 'ringing')
    .add('Unique-ID', `bench-call-${i}`)
    .add('Presence-Call-Direction', 'outbound')
    .add('event_count', '1');
}

interface Measured {
  inject: number[];
  fired: number;
  /** 1-minute load average before and after the measured events: the tail follows it (other work on the 2 cores). */
  load: [number, number];
  /** CPU ms over the measurement: this process (clock and simulators), bridge A, bridge B. */
  cpuUsed: number[];
  /** What an idle process scheduled like the measured ones saw meanwhile (support-machine.ts). */
  stalls: StallReport;
  /** Real-time threads of other processes on the machine, before and after. */
  neighbours: string;
  /** FSB_BENCH_ELD, NATS only: the path split at nats-server. */
  hops: string | null;
}


/** Index of a measured event from its Unique-ID (`bench-call-N`), or -1. */
function callIndex(uuid: string | undefined, first: number): number {
  if (uuid === undefined || !uuid.startsWith('bench-call-')) return -1;
  return Number(uuid.slice(11)) - first;
}

async function measure(transport: 'multicast' | 'nats', nats: NatsServer | null, events: number, scheduling: Scheduling): Promise<Measured> {
  const simA = await EslSimulator.start({ switchname: 'bench-a' });
  const simB = await EslSimulator.start({ switchname: 'bench-b', keepReceived: false });
  const port = 17000 + (process.pid % 1000);
  const common = (name: string, sim: EslSimulator): ConfigSections => ({
    settings: { 'node-name': name, cluster: 'bench' },
    esl: { port: String(sim.port) },
    bindings: { multicast: 'PRESENCE_IN', nats: 'PRESENCE_IN' },
    multicast: transport === 'multicast' ? { enabled: 'true', address: '239.77.7.7', port: String(port), interface: '127.0.0.1', ttl: '0', loopback: 'true' } : { enabled: 'false' },
    nats: transport === 'nats' && nats ? { enabled: 'true', servers: nats.url, 'stream-name': 'BENCH_LATENCY', peers: 'bench-a,bench-b', ...STORAGE_OVERRIDE } : { enabled: 'false' },
  });
  const bridges: BridgeProcess[] = [];
  try {
    bridges.push(await startBridgeProcess(common('bench-a', simA)));
    bridges.push(await startBridgeProcess({ ...common('bench-b', simB), 'consumer:blf': { enabled: 'true' } }));
    await simA.waitForSubscribers(1);
    await simB.waitForSubscribers(1);
    // This process is the clock, so it must not collect garbage of its own while it times:
    // the measured events are built up front and the times go into preallocated arrays.
    const first = 1_000_000;
    const sentAt = new Float64Array(events);
    const injectAt = new Float64Array(events);
    /** [Date.now(), ms] of samples over 2 ms, for FSB_BENCH_ELD (lined up with the processes' stalls). */
    const slow: [number, number][] = [];
    let measuring = false;
    // FSB_BENCH_ELD: also when each event reached nats-server (a core subscription on A's
    // subjects, in this process: nats-server hands a message to core subscribers as it reads
    // it, before the stream stores it), splitting the NATS path into A's half (ESL read,
    // pipeline, publish) and the rest (JetStream store, pull delivery to B, B's injection).
    // Off by default: it adds 1,000 messages/s to this process, which is also the clock.
    const atServer = new Float64Array(events);
    const probe = process.env.FSB_BENCH_ELD && transport === 'nats' && nats ? await connect({ servers: nats.url }) : null;
    probe?.subscribe(new SubjectMapper(shippedDefault('subject-prefix'), 'bench').filter({ node: 'bench-a' }), {
      callback: (_err, msg) => {
        const now = performance.now();
        if (!measuring) return;
        const text = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString('latin1');
        const at = text.indexOf('Unique-ID: bench-call-');
        const i = at < 0 ? -1 : Number(text.slice(at + 22, text.indexOf('\n', at))) - first;
        if (i >= 0 && i < events && atServer[i] === 0) atServer[i] = now;
      },
    });
    if (probe) await probe.flush();
    simB.on('sendevent', (event: FsEvent) => {
      const now = performance.now();
      if (!measuring) return;
      if (event.get('Event-Subclass') !== 'multicast::event') return;
      const i = callIndex(event.get('Orig-Unique-ID'), first);
      if (i < 0 || i >= events || injectAt[i] !== 0) return;
      injectAt[i] = now;
      if (now - sentAt[i] > 2 && slow.length < 2_000) slow.push([Date.now(), Math.round((now - sentAt[i]) * 10) / 10]);
    });
    const fireAt1k = async (batch: readonly FsEvent[], stamp: Float64Array | null) => {
      const began = performance.now();
      for (let i = 0; i < batch.length; ) {
        const due = Math.min(batch.length, Math.floor(performance.now() - began) + 1);
        for (; i < due; i++) {
          if (stamp) stamp[i] = performance.now();
          simA.fire(batch[i]);
        }
        await sleep(1);
      }
    };
    // Warm-up, not counted: 2 s, so the JIT tiers, first-sight paths and the NATS
    // consumer's first pulls settle before the clock starts.
    await fireAt1k(Array.from({ length: 2_000 }, (_, i) => presence(i)), null);
    await sleep(500);
    const measured = Array.from({ length: events }, (_, i) => presence(first + i));
    // Runs with --expose-gc (npm run bench): start the clock on a clean heap.
    (globalThis as { gc?: () => void }).gc?.();
    const neighboursBefore = realtimeNeighbours();
    const observer = await startStallObserver();
    // CPU time of each process over the measurement: at 1,000 events/s the tail follows how
    // close the five processes together come to the 2 cores, and unlike latency it barely
    // moves with the machine's other load, so A/B comparisons can use it.
    const cpuOf = () => [processCpuMs(process.pid), ...bridges.map((b) => b.cpuMs())];
    const cpuBefore = cpuOf();
    measuring = true;
    const loadBefore = loadAverage();
    const measuredFrom = Date.now();
    await fireAt1k(measured, sentAt);
    const arrived = () => injectAt.every((t) => t !== 0);
    const deadline = Date.now() + 3_000;
    while (!arrived() && Date.now() < deadline) await sleep(50);
    measuring = false;
    const cpuUsed = cpuOf().map((ms, i) => ms - cpuBefore[i]);
    const stalls = await observer.stop();
    const latencies = (at: Float64Array) => [...at].flatMap((t, i) => (t === 0 ? [] : [t - sentAt[i]])).sort((a, b) => a - b);
    const inject = latencies(injectAt);
    await probe?.close();
    const hops = probe
      ? `FSB_BENCH_ELD hop split: A -> nats-server ${summary(latencies(atServer))}, nats-server -> injected on B ${summary([...injectAt].flatMap((t, i) => (t === 0 || atServer[i] === 0 ? [] : [t - atServer[i]])).sort((a, b) => a - b))}`
      : null;
    if (process.env.FSB_BENCH_ELD) {
      // Every time stamp, so the slow samples can be lined up with the processes' stalls and a perf sched trace.
      const times = { timeOrigin: performance.timeOrigin, sentAt: [...sentAt], atServer: probe ? [...atServer] : null, injectAt: [...injectAt] };
      writeFileSync(join(process.env.FSB_BENCH_ELD, `slow-${transport}-${scheduling}.json`), JSON.stringify({ from: measuredFrom, to: Date.now(), slow, inject, hops, times }));
    }
    return { inject, fired: events, load: [loadBefore, loadAverage()], cpuUsed, stalls, neighbours: describeNeighbours(neighboursBefore, realtimeNeighbours()), hops };
  } finally {
    for (const bridge of bridges) await bridge.stop();
    await simA.stop();
    await simB.stop();
  }
}

const perEvent = (cpuMs: number, events: number) => Math.round((cpuMs * 1000) / events);

function summary(sorted: number[]): string {
  return `p50 ${round(percentile(sorted, 0.5), 3)} / p99 ${round(percentile(sorted, 0.99), 3)} / p999 ${round(percentile(sorted, 0.999), 3)} / max ${round(sorted.at(-1) ?? NaN, 3)} ms`;
}

/**
 * How the processes of one measurement are scheduled. FreeSWITCH's own systemd unit
 * (debian/freeswitch-systemd.freeswitch.service) runs it with SCHED_RR; ours
 * (config/systemd/fs-event-bridge.service) does the same for the bridge. Under the default
 * policy (CFS/EEVDF) a woken process can wait for others' slices (1.5 ms each on 2 cores
 * with Linux 6.6+) when the two cores are busy, which is the tail this case found: so it
 * measures both, the deployed scheduling as the target and the default next to it.
 */
type Scheduling = 'realtime' | 'default';

/** SCHED_RR priority of the clock, the simulators, both bridges and nats-server (all equal: one core each is what they would have). */
const RR_PRIORITY = 10;

/**
 * Put every thread of this process under `scheduling`; processes started afterwards
 * (bridges, nats-server, the ping echo) inherit it. Returns why it could not, if so
 * (SCHED_RR needs root or CAP_SYS_NICE; chrt is util-linux).
 */
function scheduleSelf(scheduling: Scheduling): string | null {
  const args = scheduling === 'realtime' ? ['--all-tasks', '--rr', '--pid', String(RR_PRIORITY), String(process.pid)] : ['--all-tasks', '--other', '--pid', '0', String(process.pid)];
  try {
    execFileSync('chrt', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    return null;
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    return `chrt ${args.join(' ')} failed: ${stderr || (error as Error).message}`;
  }
}

/** The shipped defaults the NATS rows run with (read from the schema, so the notes cannot go stale). */
const shippedDefault = (name: string) => PARAMS.find((p) => p.section === 'nats' && p.name === name)?.default ?? '?';
/**
 * FSB_BENCH_NATS_STORAGE=memory: the stream in memory (capped at 128 MB, to fit the test
 * server's max_memory_store), to compare with the shipped file storage in the same session
 * (docs/nats.md weighs the two). The notes then say the rows did not run the default.
 */
const STORAGE_OVERRIDE: Record<string, string> = process.env.FSB_BENCH_NATS_STORAGE ? { 'stream-storage': process.env.FSB_BENCH_NATS_STORAGE, 'stream-max-bytes': '128MB' } : {};
const DEFAULTS_NATS_STORAGE = STORAGE_OVERRIDE['stream-storage'] ? `${STORAGE_OVERRIDE['stream-storage']} (FSB_BENCH_NATS_STORAGE: NOT the shipped default, ${shippedDefault('stream-storage')})` : shippedDefault('stream-storage');
const DEFAULTS_NATS_PAYLOAD = shippedDefault('payload-format');

const SCHEDULING_SHORT: Record<Scheduling, string> = { realtime: `SCHED_RR ${RR_PRIORITY}`, default: 'SCHED_OTHER' };

const SCHEDULING_NOTE: Record<Scheduling, string> = {
  realtime: `scheduling as deployed: SCHED_RR ${RR_PRIORITY} for the bridges (config/systemd/fs-event-bridge.service), for the simulators standing in for FreeSWITCH (whose own unit sets SCHED_RR) and for nats-server, which shares the 2 cores here`,
  default: 'default scheduling (SCHED_OTHER for every process): shows what the tail is without the deployed unit',
};

/** p99 targets: as deployed, and with the default scheduling; p999 target for both. */
const P99_TARGET_MS: Record<Scheduling, number> = { realtime: 1, default: 2 };
const P999_TARGET_MS = 5;

/** One row of this case: a percentile against the ping baseline's same percentile (NaN for both when not measured). */
function latencyRow(transport: 'multicast' | 'nats', scheduling: Scheduling, quantile: 'p99' | 'p999', value: number, pingValue: number, met: boolean, notes: string): BenchResult {
  return {
    case: `A -> B latency ${quantile}, ${transport}${scheduling === 'realtime' ? '' : ', default scheduling'}`,
    value: round(value, 3),
    unit: 'ms',
    baseline: `loopback UDP ping-pong RTT ${quantile}`,
    baseline_value: round(pingValue, 3),
    ratio: round(value / pingValue),
    target: quantile === 'p99' ? P99_TARGET_MS[scheduling] : P999_TARGET_MS,
    met,
    notes,
  };
}

async function measureScheduling(scheduling: Scheduling, quick: boolean): Promise<BenchResult[]> {
  const events = quick ? 2_000 : 10_000;
  const refused = scheduleSelf(scheduling);
  if (refused !== null) return (['multicast', 'nats'] as const).flatMap((transport) => (['p99', 'p999'] as const).map((q) => latencyRow(transport, scheduling, q, NaN, NaN, false, `not measured: ${refused}`)));
  const ping = await udpPingPong(quick ? 1_000 : PING_COUNT);
  const pingP99 = percentile(ping, 0.99);
  const pingP999 = percentile(ping, 0.999);
  const nats = await startNatsServer();
  try {
    const results: BenchResult[] = [];
    for (const transport of (['multicast', 'nats'] as const).filter(selected)) {
      const m = await measure(transport, nats, events, scheduling);
      const p99 = percentile(m.inject, 0.99);
      const p999 = percentile(m.inject, 0.999);
      const lost = m.fired - m.inject.length;
      const notes =
        `lower is better; ${SCHEDULING_NOTE[scheduling]}. ${m.fired} PRESENCE_IN at 1000/s on A (new call each) to the multicast::event B's bridge injects into B's simulator: ${summary(m.inject)}, ${lost} missing; ` +
        `baseline ${ping.length} UDP pings: ${summary(ping)}; machine load average (1 min) ${m.load[0]} before / ${m.load[1]} after; ${describeStalls(m.stalls, SCHEDULING_SHORT[scheduling])}; ${m.neighbours}; ` +
        `CPU per event over the measurement (user + system, all threads, 10 ms ticks): benchmark process ${perEvent(m.cpuUsed[0], m.fired)}, bridge A ${perEvent(m.cpuUsed[1], m.fired)}, bridge B ${perEvent(m.cpuUsed[2], m.fired)} µs. ` +
        `Bridges: CLI processes with the shipped defaults${transport === 'nats' ? ` (stream storage ${DEFAULTS_NATS_STORAGE}, payload ${DEFAULTS_NATS_PAYLOAD}: what is deployed unless configured otherwise)` : ''}; simulators and the clock in the benchmark process; 2 cores shared by 3 node processes${transport === 'nats' ? ' and nats-server' : ''}${m.hops ? `. ${m.hops}` : ''}`;
      results.push(
        latencyRow(transport, scheduling, 'p99', p99, pingP99, p99 < P99_TARGET_MS[scheduling] && lost === 0, notes),
        latencyRow(transport, scheduling, 'p999', p999, pingP999, p999 < P999_TARGET_MS && lost === 0, `lower is better; same measurement as the p99 row (${summary(m.inject)}); ${SCHEDULING_NOTE[scheduling]}`),
      );
    }
    return results;
  } finally {
    await nats.dispose();
  }
}

/**
 * FSB_BENCH_LATENCY_ONLY=nats,realtime (any of multicast, nats, realtime, default): only
 * those transports and schedulings, for short alternating A/B runs while working on one path.
 */
const only = (process.env.FSB_BENCH_LATENCY_ONLY ?? '').split(',').filter(Boolean);
function selected(what: 'multicast' | 'nats' | Scheduling): boolean {
  const group = what === 'multicast' || what === 'nats' ? ['multicast', 'nats'] : ['realtime', 'default'];
  return !only.some((o) => group.includes(o)) || only.includes(what);
}

export const latency: BenchCase = async ({ quick }) => {
  if (process.env.FSB_BENCH_ELD) watchLoop(process.env.FSB_BENCH_ELD, 'benchmark process (simulators, clock)');
  // Default first: its processes must not inherit SCHED_RR from the other run.
  const fallback = selected('default') ? await measureScheduling('default', quick) : [];
  const deployed = selected('realtime') ? await measureScheduling('realtime', quick) : [];
  return [...deployed, ...fallback];
};
