import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { loadLabEnv, type LabEnv } from '../freeswitch/env.js';
import { FsNode } from '../freeswitch/lab.js';
import { JsonLineProcess } from '../support/netns.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { loadAverage, machineCpu, processCpuMs, round, sleep, startBridgeProcess, threadCpuMs, type BridgeProcess } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * Side by side with the legacy module on real FreeSWITCH (`npm run bench -- --freeswitch`,
 * run where FSB_FS_PHONE_IP lives, e.g. `ip netns exec labP`): node A fires EVENTS
 * `CUSTOM sofia::expire` events from one Lua loop (`luarun`, a thread inside FreeSWITCH),
 * each marked with a run id and a sequence number; a counter on node B's network
 * (support-datagram-counter.ts, started with FSB_FS_B_EXEC) counts the datagrams that
 * reach the group. The event is one the lab's mod_event_multicast binds
 * (event_multicast.conf.xml of the fixture lab: HEARTBEAT RE_SCHEDULE PRESENCE_IN CUSTOM
 * sofia::register sofia::unregister sofia::expire), and one nothing on A consumes.
 *
 * Runs, one after the other on the same node:
 * - nothing listening: what the Lua loop alone costs FreeSWITCH (the CPU baseline);
 * - mod_event_multicast loaded on A (`load`, then `unload` after the run);
 * - the bridge on A (`fs-event-bridge run` on A's network, SCHED_RR 10 as
 *   config/systemd runs it), multicast and NATS on, the module's bindings on both; then
 *   the same with NATS off (what NATS adds to the bridge's time);
 * - a bare ESL listener (this process, reading and counting) in each ESL format the bridge
 *   could use, with the bridge's bindings and with `ALL`: what the ESL listener alone costs
 *   FreeSWITCH, format by format.
 * All of it ROUNDS times, interleaved (module and bridge back to back, so both see the same
 * load); counts and times from the best round, FreeSWITCH's CPU the least of the rounds
 * (other work on the machine only ever adds to it), every round in the notes.
 *
 * Every time counts from the moment the luarun is sent, the same for every contender, with
 * the same receiver. FreeSWITCH's own CPU: utime + stime of its process (/proc/PID/stat, PID
 * from `${run_dir}/freeswitch.pid`) from the luarun until the last event was counted and
 * its CPU stopped moving, minus its idle rate measured just before (timers, the HEARTBEAT
 * thread); and the same without the Lua loop's own thread (/proc/PID/task, the thread born
 * after the luarun and gone at the end): what delivering the events costs FreeSWITCH, which
 * unlike the whole does not carry the loop's own variance. The ESL sockets' kernel queues
 * are sampled too: they tell whether the reader or FreeSWITCH is the one waiting.
 */
const EVENTS = 50_000;
/** FSB_BENCH_FS_ROUNDS=N: fewer or more rounds (a quick look on a lab someone else waits for). */
const ROUNDS = Number(process.env.FSB_BENCH_FS_ROUNDS ?? 3);
/**
 * FSB_BENCH_FS_BRIDGE_SCHED=other|rrN: the bridge at default scheduling or SCHED_RR N instead of SCHED_RR 10 (config/systemd), to
 * see what its priority does. At 10 it preempts FreeSWITCH's FIFO-1 threads, the `luarun` among them (docs/decisions.md).
 */
const SCHED = process.env.FSB_BENCH_FS_BRIDGE_SCHED ?? 'rr10';
const BRIDGE_PREFIX = SCHED === 'other' ? [] : ['chrt', '--rr', SCHED.replace(/^rr/, '')];
/** FSB_BENCH_FS_LISTENERS=0: leave out the bare listeners' runs. */
const WITH_LISTENERS = process.env.FSB_BENCH_FS_LISTENERS !== '0';
const COUNTER = fileURLToPath(new URL('./support-datagram-counter.js', import.meta.url));
/** The lab module's own bindings (fixture event_multicast.conf.xml), minus multicast::event which no bridge forwards. */
const BINDINGS = 'HEARTBEAT RE_SCHEDULE PRESENCE_IN CUSTOM sofia::register sofia::unregister sofia::expire';

interface Figures {
  /** ms from sending the luarun to the last event counted. */
  tookMs: number;
  /** ms from sending the luarun to the first event counted. */
  firstMs: number;
  counted: number;
  /** FreeSWITCH CPU per event, µs, idle rate removed: every thread, the Lua loop's included. */
  fsCpuUs: number;
  /** The same without the Lua loop's own thread: what delivering the events costs FreeSWITCH (dispatch, listener or module). */
  forwardUs: number;
  /** How long the Lua loop's thread lived: how fast FreeSWITCH took the 50,000 events in. */
  loopMs: number;
  /** 1-minute load average when the run began. */
  load: number;
  /** Share of the machine's cores busy during the run. */
  machineBusy: number;
  extra: Record<string, number | string>;
}

/** CPU of FreeSWITCH: the process's utime + stime in ms, whole or thread by thread. */
class FsCpu {
  constructor(readonly pid: number) {}

  now(): number {
    return processCpuMs(this.pid);
  }

  /** CPU ms of every live thread. */
  threads(): Map<number, number> {
    return threadCpuMs(this.pid);
  }

  /** ms of CPU per ms of wall time while nothing is fired. */
  async idleRate(ms = 1_000): Promise<number> {
    const cpu = this.now();
    const began = Date.now();
    await sleep(ms);
    return (this.now() - cpu) / (Date.now() - began);
  }
}

/**
 * The ESL sockets' queues from the kernel's TCP tables (tx_queue:rx_queue of
 * /proc/PID/net/tcp): FreeSWITCH's side (bytes it wrote that the reader has not taken)
 * and the readers' side (bytes received that the reader has not read yet). A reader whose
 * receive queue is never empty while FreeSWITCH sends is the bottleneck; one whose queue is
 * mostly empty waits for FreeSWITCH. `tables`: the tables' text.
 */
export function eslQueues(tables: readonly string[], eslPort: number): { fsSendQ: number; readerRecvQ: number } {
  const port = eslPort.toString(16).toUpperCase().padStart(4, '0');
  let fsSendQ = 0;
  let readerRecvQ = 0;
  for (const table of tables) {
    for (const line of table.split('\n').slice(1)) {
      const [, local, remote, state, queues] = line.trim().split(/\s+/);
      if (state !== '01' || queues === undefined) continue; // ESTABLISHED only
      const [tx, rx] = queues.split(':').map((hex) => parseInt(hex, 16));
      if (local.endsWith(`:${port}`)) fsSendQ = Math.max(fsSendQ, tx);
      else if (remote.endsWith(`:${port}`)) readerRecvQ = Math.max(readerRecvQ, rx);
    }
  }
  return { fsSendQ, readerRecvQ };
}

/** A bare ESL listener: auth, `event FORMAT BINDINGS`, counts the frames that carry the run's marker. */
class EslCounter {
  counted = 0;
  firstAt = 0;
  lastAt = 0;
  private marker = Buffer.alloc(0);
  private readonly socket: net.Socket;
  private readonly subscribed: Promise<void>;

  constructor(
    lab: LabEnv,
    private readonly format: 'plain' | 'json',
    bindings: string,
  ) {
    const parser = new EslFrameParser({ maxFrameBytes: 64 * 1024 ** 2 });
    this.socket = net.connect(lab.a.esl);
    this.subscribed = new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.on('data', (chunk) => {
        for (const frame of parser.push(chunk)) {
          const type = frame.headers['Content-Type'];
          if (type === 'auth/request') this.socket.write(`auth ${lab.a.eslPassword}\n\nevent ${format} ${bindings}\n\n`);
          else if (type === 'command/reply' && frame.headers['Reply-Text']?.startsWith('+OK event')) resolve();
          else if (frame.body && this.marker.length > 0 && frame.body.indexOf(this.marker) >= 0) {
            const now = Date.now();
            if (this.counted++ === 0) this.firstAt = now;
            this.lastAt = now;
          }
        }
      });
    });
  }

  ready(): Promise<void> {
    return this.subscribed;
  }

  arm(run: string): void {
    // The header as each format writes it: with ALL, the API event of the luarun itself carries the run id in its argument.
    this.marker = Buffer.from(this.format === 'plain' ? `\nFSB-Bench-Run: ${run}\n` : `"FSB-Bench-Run":"${run}"`);
    this.counted = this.firstAt = this.lastAt = 0;
  }

  close(): void {
    this.socket.destroy();
  }
}

function luaLoop(run: string): string {
  return `luarun ~for i=1,${EVENTS} do local e=freeswitch.Event('CUSTOM','sofia::expire') e:addHeader('FSB-Bench-Run','${run}') e:addHeader('FSB-Bench-Seq',tostring(i)) e:fire() end`;
}

interface Progress {
  /** Events counted so far by whatever this run counts (datagrams, ESL events, stored messages). */
  counted(): Promise<number>;
  /** Events it must count before the run is over (0: nothing counts, the run ends when FreeSWITCH's CPU settles). */
  expected: number;
}

interface Measured {
  /** Date.now() just before the luarun was sent: every time of the run counts from here. */
  firedAt: number;
  wallMs: number;
  fsCpuUs: number;
  forwardUs: number;
  loopMs: number;
  load: number;
  /** Share of the machine's cores busy (anyone's work) from the luarun to the end of the run. */
  machineBusy: number;
  /** Largest ESL socket queues seen (bytes), and the share of samples while events were due in which the reader had unread bytes. */
  fsSendQMax: number;
  readerRecvQMax: number;
  readerBehindShare: number;
}

/**
 * Fires the Lua loop and waits until everything is counted (or nothing moved for 3 s)
 * and FreeSWITCH's CPU has not moved for 300 ms. FreeSWITCH's idle rate is measured
 * first, so every time counts from the luarun itself. Every 50 ms: FreeSWITCH's
 * threads (the one born after the luarun and gone at the end is the Lua loop's: its CPU
 * is the firing, the rest is what delivering costs) and the ESL sockets' queues.
 */
async function fireAndMeasure(a: FsNode, cpu: FsCpu, run: string, progress: Progress, tcpTables: readonly string[], eslPort: number): Promise<Measured> {
  const idle = await cpu.idleRate();
  const load = loadAverage();
  const threadsBefore = cpu.threads();
  const born = new Map<number, { cpuMs: number; seenAt: number }>();
  let fsSendQMax = 0;
  let readerRecvQMax = 0;
  let samplesDue = 0;
  let samplesBehind = 0;
  const cpuBefore = cpu.now();
  const jiffiesBefore = machineCpu();
  const firedAt = Date.now();
  const answer = await a.api(luaLoop(run));
  if (!answer.startsWith('+OK')) throw new Error(`luarun refused: ${answer}`);
  let last = -1;
  let movedAt = Date.now();
  let cpuLast = cpu.now();
  let cpuMovedAt = Date.now();
  for (;;) {
    await sleep(50);
    const now = Date.now();
    for (const [tid, cpuMs] of cpu.threads()) if (!threadsBefore.has(tid)) born.set(tid, { cpuMs, seenAt: now });
    const counted = await progress.counted();
    if (counted !== last) {
      last = counted;
      movedAt = now;
    }
    const queues = eslQueues(tcpTables.map((table) => readFileSync(table, 'utf8')), eslPort);
    fsSendQMax = Math.max(fsSendQMax, queues.fsSendQ);
    readerRecvQMax = Math.max(readerRecvQMax, queues.readerRecvQ);
    if (counted > 0 && counted < progress.expected) {
      samplesDue++;
      if (queues.readerRecvQ > 0) samplesBehind++;
    }
    const cpuNow = cpu.now();
    if (cpuNow !== cpuLast) {
      cpuLast = cpuNow;
      cpuMovedAt = now;
    }
    const complete = counted >= progress.expected || now - movedAt > 3_000;
    if (complete && now - cpuMovedAt >= 300 && now - firedAt > 500) break;
    if (now - firedAt > 60_000) break;
  }
  const wallMs = cpuMovedAt - firedAt;
  const used = cpuLast - cpuBefore - idle * wallMs;
  const jiffies = machineCpu();
  // Threads born during the run and gone at its end: the Lua loop's (a dispatch thread FreeSWITCH adds when its queue fills stays).
  const alive = cpu.threads();
  const loops = [...born].filter(([tid]) => !alive.has(tid)).map(([, t]) => t);
  const loopCpuMs = loops.reduce((sum, t) => sum + t.cpuMs, 0);
  const loopMs = loops.length > 0 ? Math.max(...loops.map((t) => t.seenAt)) - firedAt : NaN;
  return {
    firedAt,
    wallMs,
    fsCpuUs: (used * 1000) / EVENTS,
    forwardUs: ((used - loopCpuMs) * 1000) / EVENTS,
    loopMs,
    load,
    machineBusy: (jiffies.busy - jiffiesBefore.busy) / (jiffies.total - jiffiesBefore.total),
    fsSendQMax,
    readerRecvQMax,
    readerBehindShare: samplesDue > 0 ? samplesBehind / samplesDue : NaN,
  };
}

async function fsPid(a: FsNode): Promise<number> {
  const runDir = await a.api('global_getvar run_dir');
  const pid = Number(readFileSync(join(runDir, 'freeswitch.pid'), 'utf8').trim());
  if (!(pid > 0)) throw new Error(`no FreeSWITCH pid in ${runDir}/freeswitch.pid`);
  processCpuMs(pid); // fails here when /proc/PID is not this host's FreeSWITCH
  return pid;
}

type Counter = JsonLineProcess<{ type: string; distinct?: number; datagrams?: number; firstAt?: number; lastAt?: number; kernelDrops?: number; rcvbuf?: number }>;

function startCounter(lab: LabEnv): Counter {
  // SCHED_RR above the bridge's 10: the instrument must not be starved by a busy machine (at default priority it read nothing during a 4 s burst, and its buffer overflowed).
  const [command, ...args] = [...lab.b.exec, 'chrt', '--rr', '20', process.execPath, COUNTER, lab.multicast.host, String(lab.multicast.port), lab.b.sip.host];
  return new JsonLineProcess(spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] }));
}

let runNumber = 0;
const newRun = () => `fsb${process.pid}r${++runNumber}`;

/** What every run of one benchmark shares. */
/** B in A's nats/peers: B's bridge is not run here, so only A's own name matters (it leaves itself out). */
const FS_B_NODE_NAME = 'fs-b';

interface Lab {
  lab: LabEnv;
  a: FsNode;
  cpu: FsCpu;
  counter: Counter;
  nats: NatsServer;
  /** The TCP tables that hold the ESL sockets: A's network (FreeSWITCH, the bridge) and this process's (the bare listeners). */
  tcpTables: string[];
}

const measure = (l: Lab, run: string, progress: Progress) => fireAndMeasure(l.a, l.cpu, run, progress, l.tcpTables, l.lab.a.esl.port);

function figures(m: Measured, firstAt: number, lastAt: number, counted: number, extra: Figures['extra']): Figures {
  return {
    tookMs: lastAt - m.firedAt,
    firstMs: firstAt - m.firedAt,
    counted,
    fsCpuUs: m.fsCpuUs,
    forwardUs: m.forwardUs,
    loopMs: m.loopMs,
    load: m.load,
    machineBusy: m.machineBusy,
    extra,
  };
}

const queueExtra = (m: Measured) => ({ fsEslSendQMaxBytes: m.fsSendQMax, readerRecvQMaxBytes: m.readerRecvQMax, readerBehindShare: round(m.readerBehindShare, 2) });

async function multicastRun(l: Lab, more?: Progress): Promise<{ figures: Figures; measured: Measured }> {
  const run = newRun();
  await l.counter.request({ run, count: EVENTS }, 'armed');
  const distinct = async () => ((await l.counter.request({ report: true }, 'report')).distinct ?? 0) + (more ? Math.min(EVENTS, await more.counted()) : 0);
  const measured = await measure(l, run, { counted: distinct, expected: EVENTS * (more ? 2 : 1) });
  const report = await l.counter.request({ report: true }, 'report');
  return {
    measured,
    figures: figures(measured, report.firstAt ?? 0, report.lastAt ?? 0, report.distinct ?? 0, {
      datagrams: report.datagrams ?? 0,
      receiverKernelDrops: report.kernelDrops ?? -1,
      receiverRcvbuf: report.rcvbuf ?? 0,
    }),
  };
}

async function moduleRun(l: Lab): Promise<Figures> {
  const loaded = await l.a.api('load mod_event_multicast');
  if (!loaded.startsWith('+OK')) throw new Error(`load mod_event_multicast: ${loaded}`);
  try {
    await sleep(500);
    return (await multicastRun(l)).figures;
  } finally {
    await l.a.api('unload mod_event_multicast');
  }
}

async function bridgeRun(l: Lab, withNats: boolean): Promise<Figures> {
  const { lab, a, nats } = l;
  const bridge: BridgeProcess = await startBridgeProcess(
    {
      settings: { 'node-name': a.info.switchname, hostname: a.info.hostname, ipv4: a.info.ipv4, cluster: 'fsbench' },
      esl: { host: lab.a.esl.host, port: String(lab.a.esl.port), password: lab.a.eslPassword },
      bindings: { multicast: BINDINGS, nats: BINDINGS },
      multicast: { enabled: 'true', address: lab.multicast.host, port: String(lab.multicast.port), interface: a.info.ipv4, ttl: '1', loopback: 'false', ...(lab.psk ? { psk: lab.psk } : {}) },
      // As deployed: nats/peers lists the cluster, so JetStream does not send A its own events back.
      nats: { enabled: String(withNats), servers: nats.url, peers: `${a.info.switchname},${FS_B_NODE_NAME}` },
    },
    { prefix: [...lab.a.exec, ...BRIDGE_PREFIX], statusHost: a.info.ipv4 },
  );
  const client = withNats ? await connectNats({ servers: [nats.url], auth: {}, tls: null }, { logger: silentLogger() }) : null;
  try {
    let natsDoneAt = 0;
    let natsCounted: Progress | undefined;
    if (client) {
      const jsm = await jetstreamManager(client);
      const subject = new SubjectMapper('fs', 'fsbench').subject(a.info.switchname, 'CUSTOM', 'sofia::expire');
      const stored = async () => (await jsm.streams.info('FS_EVENTS', { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
      const before = await stored();
      natsCounted = {
        counted: async () => {
          const n = (await stored()) - before;
          if (n >= EVENTS && natsDoneAt === 0) natsDoneAt = Date.now();
          return n;
        },
        expected: EVENTS,
      };
    }
    const bridgeCpuBefore = bridge.cpuMs();
    const mainThreadBefore = processCpuMs(bridge.pid, bridge.pid);
    const { figures: f, measured } = await multicastRun(l, natsCounted);
    const mainThreadMs = processCpuMs(bridge.pid, bridge.pid) - mainThreadBefore;
    const natsStored = natsCounted ? await natsCounted.counted() : 0;
    // The bridge's busy window: from the luarun until both sinks had everything.
    const forwardingMs = Math.max(f.tookMs, natsDoneAt === 0 ? 0 : natsDoneAt - measured.firedAt);
    return {
      ...f,
      extra: {
        ...f.extra,
        ...(client ? { natsStored, natsCompleteMs: natsDoneAt === 0 ? 'never' : `${natsDoneAt - measured.firedAt} (polled every 50 ms)` } : {}),
        bridgeCpuUsPerEvent: round(((bridge.cpuMs() - bridgeCpuBefore) * 1000) / EVENTS, 1),
        bridgeMainThreadBusy: round(mainThreadMs / forwardingMs, 2),
        ...queueExtra(measured),
        bridgeDrops: await bridge.metric('fsb_drops_total'),
        bridgeEslIn: await bridge.metric('fsb_events_in_total', { transport: 'esl' }),
      },
    };
  } finally {
    await client?.close();
    await bridge.stop();
  }
}

/** Nothing listening for the events: what the Lua loop alone costs FreeSWITCH. */
async function aloneRun(l: Lab): Promise<Figures> {
  const m = await measure(l, newRun(), { counted: async () => 0, expected: 0 });
  return { ...figures(m, m.firedAt, m.firedAt + m.wallMs, 0, {}), firstMs: 0 };
}

async function listenerRun(l: Lab, format: 'plain' | 'json', bindings: string): Promise<Figures> {
  const listener = new EslCounter(l.lab, format, bindings);
  try {
    await listener.ready();
    const run = newRun();
    listener.arm(run);
    const m = await measure(l, run, { counted: async () => listener.counted, expected: EVENTS });
    return figures(m, listener.firstAt, listener.lastAt, listener.counted, queueExtra(m));
  } finally {
    listener.close();
  }
}

const best = (runs: Figures[]) => runs.reduce((x, y) => (y.counted > x.counted || (y.counted === x.counted && y.tookMs < x.tookMs) ? y : x));
const rate = (f: Figures) => Math.round(f.counted / (f.tookMs / 1000));
const median = (values: number[]) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];
const describe = (f: Figures) =>
  `${f.counted} of ${EVENTS} in ${f.tookMs} ms (${rate(f).toLocaleString('en-US')}/s), first after ${f.firstMs} ms, Lua loop done after ${f.loopMs} ms, ` +
  `FreeSWITCH CPU ${round(f.fsCpuUs, 1)} µs per event of which ${round(f.forwardUs, 1)} µs outside the Lua loop's thread, load ${f.load}, cores busy ${round(f.machineBusy * 100, 0)}%` +
  (Object.keys(f.extra).length > 0 ? ` (${Object.entries(f.extra).map(([k, v]) => `${k} ${v}`).join(', ')})` : '');
const rounds = (runs: Figures[]) => runs.map((r) => `${r.tookMs} ms / ${round(r.fsCpuUs, 1)} µs / ${round(r.forwardUs, 1)} µs fwd / first ${r.firstMs} ms / load ${r.load} / busy ${round(r.machineBusy * 100, 0)}%`).join('; ');

type ListenerKind = 'plain' | 'json' | 'plainAll' | 'jsonAll';
const LISTENERS: Record<ListenerKind, { format: 'plain' | 'json'; bindings: string; label: string }> = {
  plain: { format: 'plain', bindings: BINDINGS, label: 'event plain, the module bindings' },
  json: { format: 'json', bindings: BINDINGS, label: 'event json, the module bindings' },
  plainAll: { format: 'plain', bindings: 'ALL', label: 'event plain ALL' },
  jsonAll: { format: 'json', bindings: 'ALL', label: 'event json ALL' },
};

export const freeswitch: BenchCase = async () => {
  const lab = loadLabEnv();
  const a = await FsNode.connect(lab.a);
  const counter = startCounter(lab);
  const nats = await startNatsServer({ address: lab.phoneIp });
  try {
    await counter.waitFor((r) => r.type === 'ready', 15_000);
    const version = await a.api('version');
    const pid = await fsPid(a);
    const l: Lab = { lab, a, cpu: new FsCpu(pid), counter, nats, tcpTables: [`/proc/${pid}/net/tcp`, '/proc/self/net/tcp'] };
    if ((await a.api('module_exists mod_event_multicast')) === 'true') await a.api('unload mod_event_multicast');
    const alones: Figures[] = [];
    const modules: Figures[] = [];
    const bridges: Figures[] = [];
    const multicastOnly: Figures[] = [];
    const listenerRuns: Record<ListenerKind, Figures[]> = { plain: [], json: [], plainAll: [], jsonAll: [] };
    // Interleaved: the module and the bridge back to back in every round, so a change in the machine's load hits both.
    for (let r = 0; r < ROUNDS; r++) {
      alones.push(await aloneRun(l));
      modules.push(await moduleRun(l));
      bridges.push(await bridgeRun(l, true));
      multicastOnly.push(await bridgeRun(l, false));
      if (WITH_LISTENERS) for (const kind of Object.keys(LISTENERS) as ListenerKind[]) listenerRuns[kind].push(await listenerRun(l, LISTENERS[kind].format, LISTENERS[kind].bindings));
    }
    // FreeSWITCH's CPU per event: the least of the rounds (other work on the machine only ever adds to it).
    const leastCpu = (runs: Figures[]) => ({ ...best(runs), fsCpuUs: Math.min(...runs.map((x) => x.fsCpuUs)), forwardUs: Math.min(...runs.map((x) => x.forwardUs)) });
    const alone = leastCpu(alones);
    const module = leastCpu(modules);
    const bridge = leastCpu(bridges);
    const bridgeMulticastOnly = leastCpu(multicastOnly);
    // Per round, bridge time over module time: both ran back to back under the same load.
    const roundRatios = bridges.map((b, i) => round(b.tookMs / modules[i].tookMs));
    const setup =
      `FreeSWITCH ${version} on ${a.info.switchname} (${lab.a.esl.host}); ${EVENTS} CUSTOM sofia::expire fired by one luarun Lua loop on A; datagrams counted on B's network (${lab.b.sip.host}) on ${lab.multicast.host}:${lab.multicast.port}; ` +
      `times from the luarun (after FreeSWITCH's idle rate is measured); ${ROUNDS} rounds, each of: nothing listening, the module, the bridge (multicast + NATS), the bridge (multicast only), the four bare listeners; time and counts from the best round, FreeSWITCH CPU the least of the rounds ` +
      `(module rounds: ${rounds(modules)}; bridge rounds: ${rounds(bridges)}; bridge/module time per round: ${roundRatios.join(', ')}); ` +
      `the Lua loop alone (nothing listening): ${rounds(alones)}`;
    const bridgeLost = EVENTS - bridge.counted + (EVENTS - Number(bridge.extra.natsStored ?? 0));
    const cpuRow = (caseName: string, f: Figures, notes: string): BenchResult => ({
      case: caseName,
      value: round(f.forwardUs, 1),
      unit: 'µs FreeSWITCH CPU per event',
      baseline: 'mod_event_multicast, same measure',
      baseline_value: round(module.forwardUs, 1),
      ratio: round(f.forwardUs / module.forwardUs),
      target: 1,
      met: f.forwardUs <= module.forwardUs && f.counted === EVENTS,
      notes:
        `lower is better; target: ratio <= 1 (no more FreeSWITCH CPU than the module; the target column is the ratio). FreeSWITCH's CPU per event outside the Lua loop's own thread ` +
        `(the dispatch thread(s), the ESL listener's thread or the module's sends; the least of the rounds), the loop's firing excluded; with nothing listening it is ${round(alone.forwardUs, 1)} µs. ` +
        `Whole process, the loop included: ${round(f.fsCpuUs, 1)} µs vs the module's ${round(module.fsCpuUs, 1)} µs (loop alone ${round(alone.fsCpuUs, 1)} µs). ${notes}. ${setup}`,
    });
    return [
      {
        case: 'real FreeSWITCH: bridge (multicast + NATS) vs mod_event_multicast, time for 50,000 events',
        value: bridge.tookMs,
        unit: 'ms',
        baseline: 'mod_event_multicast on the same node, same run',
        baseline_value: module.tookMs,
        ratio: round(bridge.tookMs / module.tookMs),
        target: 1,
        met: bridge.tookMs <= module.tookMs && bridgeLost === 0,
        notes:
          `lower is better; target: ratio <= 1 (the target column is the ratio) with 0 lost on both transports; multicast time (luarun to the last datagram on B's network), NATS completion in the notes. ` +
          `Median of the per-round ratios ${median(roundRatios)}. Bridge: ${describe(bridge)}. Bridge with NATS off: ${describe(bridgeMulticastOnly)}. Module: ${describe(module)}. ${setup}`,
      },
      {
        case: 'real FreeSWITCH: bridge (multicast + NATS) vs mod_event_multicast, rate',
        value: rate(bridge),
        unit: 'events/s',
        baseline: 'mod_event_multicast on the same node, same run',
        baseline_value: rate(module),
        ratio: round(rate(bridge) / rate(module)),
        target: 1,
        met: rate(bridge) >= rate(module) && bridgeLost === 0,
        notes: `higher is better; target: ratio >= 1 (the target column is the ratio). Bridge with NATS off: ${rate(bridgeMulticastOnly).toLocaleString('en-US')}/s`,
      },
      {
        case: 'real FreeSWITCH: first datagram after the luarun, bridge vs mod_event_multicast',
        value: median(bridges.map((b) => b.firstMs)),
        unit: 'ms',
        baseline: 'mod_event_multicast, same run',
        baseline_value: median(modules.map((m) => m.firstMs)),
        ratio: round(median(bridges.map((b) => b.firstMs)) / Math.max(1, median(modules.map((m) => m.firstMs)))),
        target: 1,
        met: median(bridges.map((b) => b.firstMs)) <= median(modules.map((m) => m.firstMs)),
        notes:
          `lower is better; from the luarun to the first datagram on B's network, median of the rounds. Per round: bridge ${bridges.map((b) => b.firstMs).join(' / ')} ms, module ${modules.map((m) => m.firstMs).join(' / ')} ms, ` +
          `bare ESL listener (plain, bindings) first event ${listenerRuns.plain.map((x) => x.firstMs).join(' / ')} ms: mod_event_socket's listener thread polls its socket for up to 20 ms between looks at its event queue, the module sends from the dispatch thread itself`,
      },
      {
        case: 'real FreeSWITCH: bridge (multicast + NATS), lost',
        value: bridgeLost,
        unit: 'events lost',
        baseline: 'mod_event_multicast lost, same run',
        baseline_value: EVENTS - module.counted,
        ratio: round(bridgeLost / EVENTS, 6),
        target: 0,
        met: bridgeLost === 0,
        notes: `lower is better; multicast ${EVENTS - bridge.counted} of ${EVENTS} not counted on B's network, NATS ${EVENTS - Number(bridge.extra.natsStored ?? 0)} not stored; the module lost ${EVENTS - module.counted}`,
      },
      cpuRow('real FreeSWITCH: FreeSWITCH CPU per event, bridge (its ESL listener, event plain, the module bindings)', bridge, `Bridge: ${describe(bridge)}. Module: ${describe(module)}`),
      ...(Object.keys(LISTENERS) as ListenerKind[]).filter((kind) => listenerRuns[kind].length > 0).map((kind) => {
        const f = leastCpu(listenerRuns[kind]);
        return cpuRow(`real FreeSWITCH: FreeSWITCH CPU per event, bare ESL listener, ${LISTENERS[kind].label}`, f, `${describe(f)}; rounds: ${rounds(listenerRuns[kind])}`);
      }),
    ];
  } finally {
    await counter.stop();
    await nats.dispose();
    await a.close();
  }
};
