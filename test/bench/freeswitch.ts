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
import { processCpuMs, round, sleep, startBridgeProcess, type BridgeProcess } from './support-processes.js';
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
 *   config/systemd runs it), multicast and NATS on, the module's bindings on both;
 * - a bare ESL listener (this process, reading and counting) in each ESL format the bridge
 *   could use, with the bridge's bindings and with `ALL`: what the ESL listener alone costs
 *   FreeSWITCH, format by format.
 * All of it ROUNDS times, interleaved; counts and times from the best round, FreeSWITCH's CPU the least
 * of the rounds (other work on the machine only ever adds to it).
 *
 * FreeSWITCH's own CPU: utime + stime of its process (/proc/PID/stat, PID from
 * `${run_dir}/freeswitch.pid`) from the luarun until the last event was counted and its
 * CPU stopped moving, minus its idle rate measured just before (timers, the HEARTBEAT
 * thread). Per event, next to the no-listener run's: what forwarding adds is the difference.
 */
const EVENTS = 50_000;
const ROUNDS = 3;
const COUNTER = fileURLToPath(new URL('./support-datagram-counter.js', import.meta.url));
/** The lab module's own bindings (fixture event_multicast.conf.xml), minus multicast::event which no bridge forwards. */
const BINDINGS = 'HEARTBEAT RE_SCHEDULE PRESENCE_IN CUSTOM sofia::register sofia::unregister sofia::expire';

interface Figures {
  /** ms from the luarun to the last event counted. */
  tookMs: number;
  firstMs: number;
  counted: number;
  /** FreeSWITCH CPU per event, µs, idle rate removed. */
  fsCpuUs: number;
  extra: Record<string, number | string>;
}

/** CPU of FreeSWITCH: the process's utime + stime in ms. */
class FsCpu {
  constructor(readonly pid: number) {}

  now(): number {
    return processCpuMs(this.pid);
  }

  /** ms of CPU per ms of wall time while nothing is fired. */
  async idleRate(ms = 1_000): Promise<number> {
    const cpu = this.now();
    const began = Date.now();
    await sleep(ms);
    return (this.now() - cpu) / (Date.now() - began);
  }
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

/**
 * Fires the Lua loop and waits until everything is counted (or nothing moved for 3 s)
 * and FreeSWITCH's CPU has not moved for 300 ms. Returns wall time and FreeSWITCH's CPU
 * per event above its idle rate.
 */
async function fireAndMeasure(a: FsNode, cpu: FsCpu, run: string, progress: Progress): Promise<{ wallMs: number; fsCpuUs: number }> {
  const idle = await cpu.idleRate();
  const cpuBefore = cpu.now();
  const began = Date.now();
  const answer = await a.api(luaLoop(run));
  if (!answer.startsWith('+OK')) throw new Error(`luarun refused: ${answer}`);
  let last = -1;
  let movedAt = Date.now();
  let cpuLast = cpu.now();
  let cpuMovedAt = Date.now();
  for (;;) {
    await sleep(50);
    const now = Date.now();
    const counted = await progress.counted();
    if (counted !== last) {
      last = counted;
      movedAt = now;
    }
    const cpuNow = cpu.now();
    if (cpuNow !== cpuLast) {
      cpuLast = cpuNow;
      cpuMovedAt = now;
    }
    const complete = counted >= progress.expected || now - movedAt > 3_000;
    if (complete && now - cpuMovedAt >= 300 && now - began > 500) break;
    if (now - began > 60_000) break;
  }
  const wallMs = cpuMovedAt - began;
  const used = cpuLast - cpuBefore - idle * wallMs;
  return { wallMs, fsCpuUs: (used * 1000) / EVENTS };
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

async function multicastRun(a: FsNode, cpu: FsCpu, counter: Counter, more?: Progress): Promise<Figures> {
  const run = newRun();
  await counter.request({ run, count: EVENTS }, 'armed');
  const distinct = async () => ((await counter.request({ report: true }, 'report')).distinct ?? 0) + (more ? Math.min(EVENTS, await more.counted()) : 0);
  const began = Date.now();
  const { fsCpuUs } = await fireAndMeasure(a, cpu, run, { counted: distinct, expected: EVENTS * (more ? 2 : 1) });
  const report = await counter.request({ report: true }, 'report');
  return {
    tookMs: (report.lastAt ?? 0) - began,
    firstMs: (report.firstAt ?? 0) - began,
    counted: report.distinct ?? 0,
    fsCpuUs,
    extra: { datagrams: report.datagrams ?? 0, receiverKernelDrops: report.kernelDrops ?? -1, receiverRcvbuf: report.rcvbuf ?? 0 },
  };
}

async function moduleRun(a: FsNode, cpu: FsCpu, counter: Counter): Promise<Figures> {
  const loaded = await a.api('load mod_event_multicast');
  if (!loaded.startsWith('+OK')) throw new Error(`load mod_event_multicast: ${loaded}`);
  try {
    await sleep(500);
    return await multicastRun(a, cpu, counter);
  } finally {
    await a.api('unload mod_event_multicast');
  }
}

async function bridgeRun(a: FsNode, lab: LabEnv, cpu: FsCpu, counter: Counter, nats: NatsServer): Promise<Figures> {
  const bridge: BridgeProcess = await startBridgeProcess(
    {
      settings: { 'node-name': a.info.switchname, hostname: a.info.hostname, ipv4: a.info.ipv4, cluster: 'fsbench' },
      esl: { host: lab.a.esl.host, port: String(lab.a.esl.port), password: lab.a.eslPassword },
      bindings: { multicast: BINDINGS, nats: BINDINGS },
      multicast: { enabled: 'true', address: lab.multicast.host, port: String(lab.multicast.port), interface: a.info.ipv4, ttl: '1', loopback: 'false', ...(lab.psk ? { psk: lab.psk } : {}) },
      nats: { enabled: 'true', servers: nats.url },
    },
    { prefix: [...lab.a.exec, 'chrt', '--rr', '10'], statusHost: a.info.ipv4 },
  );
  const client = await connectNats({ servers: [nats.url], auth: {}, tls: null }, { logger: silentLogger() });
  try {
    const jsm = await jetstreamManager(client);
    const subject = new SubjectMapper('fs', 'fsbench').subject(a.info.switchname, 'CUSTOM', 'sofia::expire');
    const stored = async () => (await jsm.streams.info('FS_EVENTS', { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
    const storedBefore = await stored();
    let natsDoneAt = 0;
    const natsCounted = {
      counted: async () => {
        const n = (await stored()) - storedBefore;
        if (n >= EVENTS && natsDoneAt === 0) natsDoneAt = Date.now();
        return n;
      },
      expected: EVENTS,
    };
    const bridgeCpuBefore = bridge.cpuMs();
    const began = Date.now();
    const figures = await multicastRun(a, cpu, counter, natsCounted);
    const natsStored = await natsCounted.counted();
    return {
      ...figures,
      extra: {
        ...figures.extra,
        natsStored,
        natsCompleteMs: natsDoneAt === 0 ? 'never' : `${natsDoneAt - began} (polled every 50 ms)`,
        bridgeCpuUsPerEvent: round(((bridge.cpuMs() - bridgeCpuBefore) * 1000) / EVENTS, 1),
        bridgeDrops: await bridge.metric('fsb_drops_total'),
        bridgeEslIn: await bridge.metric('fsb_events_in_total', { transport: 'esl' }),
      },
    };
  } finally {
    await client.close();
    await bridge.stop();
  }
}

/** Nothing listening for the events: what the Lua loop alone costs FreeSWITCH. */
async function aloneRun(a: FsNode, cpu: FsCpu): Promise<Figures> {
  const { wallMs, fsCpuUs } = await fireAndMeasure(a, cpu, newRun(), { counted: async () => 0, expected: 0 });
  return { tookMs: wallMs, firstMs: 0, counted: 0, fsCpuUs, extra: {} };
}

async function listenerRun(a: FsNode, lab: LabEnv, cpu: FsCpu, format: 'plain' | 'json', bindings: string): Promise<Figures> {
  const listener = new EslCounter(lab, format, bindings);
  try {
    await listener.ready();
    const run = newRun();
    listener.arm(run);
    const began = Date.now();
    const { fsCpuUs } = await fireAndMeasure(a, cpu, run, { counted: async () => listener.counted, expected: EVENTS });
    return { tookMs: listener.lastAt - began, firstMs: listener.firstAt - began, counted: listener.counted, fsCpuUs, extra: {} };
  } finally {
    listener.close();
  }
}

const best = (runs: Figures[]) => runs.reduce((x, y) => (y.counted > x.counted || (y.counted === x.counted && y.tookMs < x.tookMs) ? y : x));
const rate = (f: Figures) => Math.round(f.counted / (f.tookMs / 1000));
const describe = (f: Figures) =>
  `${f.counted} of ${EVENTS} in ${f.tookMs} ms (${rate(f).toLocaleString('en-US')}/s), first after ${f.firstMs} ms, FreeSWITCH CPU ${round(f.fsCpuUs, 1)} µs per event` +
  (Object.keys(f.extra).length > 0 ? ` (${Object.entries(f.extra).map(([k, v]) => `${k} ${v}`).join(', ')})` : '');

export const freeswitch: BenchCase = async () => {
  const lab = loadLabEnv();
  const a = await FsNode.connect(lab.a);
  const counter = startCounter(lab);
  const nats = await startNatsServer({ address: lab.phoneIp });
  try {
    await counter.waitFor((r) => r.type === 'ready', 15_000);
    const version = await a.api('version');
    const cpu = new FsCpu(await fsPid(a));
    if ((await a.api('module_exists mod_event_multicast')) === 'true') await a.api('unload mod_event_multicast');
    const alones: Figures[] = [];
    const modules: Figures[] = [];
    const bridges: Figures[] = [];
    const listenerRuns: Record<'plain' | 'json' | 'plainAll' | 'jsonAll', Figures[]> = { plain: [], json: [], plainAll: [], jsonAll: [] };
    for (let round = 0; round < ROUNDS; round++) {
      alones.push(await aloneRun(a, cpu));
      modules.push(await moduleRun(a, cpu, counter));
      bridges.push(await bridgeRun(a, lab, cpu, counter, nats));
      listenerRuns.plain.push(await listenerRun(a, lab, cpu, 'plain', BINDINGS));
      listenerRuns.json.push(await listenerRun(a, lab, cpu, 'json', BINDINGS));
      listenerRuns.plainAll.push(await listenerRun(a, lab, cpu, 'plain', 'ALL'));
      listenerRuns.jsonAll.push(await listenerRun(a, lab, cpu, 'json', 'ALL'));
    }
    // FreeSWITCH's CPU per event: the least of the rounds (other work on the machine only ever adds to it).
    const leastCpu = (runs: Figures[]) => ({ ...best(runs), fsCpuUs: Math.min(...runs.map((r) => r.fsCpuUs)) });
    const alone = leastCpu(alones);
    const listeners = { plain: leastCpu(listenerRuns.plain), json: leastCpu(listenerRuns.json), plainAll: leastCpu(listenerRuns.plainAll), jsonAll: leastCpu(listenerRuns.jsonAll) };
    const module = leastCpu(modules);
    const bridge = leastCpu(bridges);
    const setup =
      `FreeSWITCH ${version} on ${a.info.switchname} (${lab.a.esl.host}); ${EVENTS} CUSTOM sofia::expire fired by one luarun Lua loop on A; datagrams counted on B's network (${lab.b.sip.host}) on ${lab.multicast.host}:${lab.multicast.port}; ` +
      `${ROUNDS} rounds, each of: nothing listening, the module, the bridge, the four bare listeners; time and counts from the best round, FreeSWITCH CPU the least of the rounds ` +
      `(module rounds: ${modules.map((m) => `${m.tookMs} ms, ${round(m.fsCpuUs, 1)} µs`).join('; ')}; bridge rounds: ${bridges.map((b) => `${b.tookMs} ms, ${round(b.fsCpuUs, 1)} µs`).join('; ')}); ` +
      `the Lua loop alone (nothing listening) costs FreeSWITCH ${alones.map((x) => round(x.fsCpuUs, 1)).join(' / ')} µs per event`;
    const bridgeLost = EVENTS - bridge.counted + (EVENTS - Number(bridge.extra.natsStored ?? 0));
    const cpuRow = (caseName: string, f: Figures, notes: string): BenchResult => ({
      case: caseName,
      value: round(f.fsCpuUs, 1),
      unit: 'µs FreeSWITCH CPU per event',
      baseline: 'mod_event_multicast, same measure',
      baseline_value: round(module.fsCpuUs, 1),
      ratio: round(f.fsCpuUs / module.fsCpuUs),
      target: 1,
      met: f.fsCpuUs <= module.fsCpuUs && f.counted === EVENTS,
      notes:
        `lower is better; target: ratio <= 1 (no more FreeSWITCH CPU than the module; the target column is the ratio). FreeSWITCH's whole CPU per event, the Lua loop's firing included ` +
        `(the loop alone: ${round(alone.fsCpuUs, 1)} µs, least of the rounds; what forwarding adds is the difference, when it exceeds the spread between rounds). ${notes}. ${setup}`,
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
        notes: `lower is better; target: ratio <= 1 (the target column is the ratio) with 0 lost on both transports. Bridge: ${describe(bridge)}. Module: ${describe(module)}. ${setup}`,
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
        notes: `higher is better; target: ratio >= 1 (the target column is the ratio). First datagram after the luarun: bridge ${bridge.firstMs} ms, module ${module.firstMs} ms`,
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
      cpuRow('real FreeSWITCH: FreeSWITCH CPU per event, bare ESL listener, event plain, the module bindings', listeners.plain, describe(listeners.plain)),
      cpuRow('real FreeSWITCH: FreeSWITCH CPU per event, bare ESL listener, event json, the module bindings', listeners.json, describe(listeners.json)),
      cpuRow('real FreeSWITCH: FreeSWITCH CPU per event, bare ESL listener, event plain ALL', listeners.plainAll, describe(listeners.plainAll)),
      cpuRow('real FreeSWITCH: FreeSWITCH CPU per event, bare ESL listener, event json ALL', listeners.jsonAll, describe(listeners.jsonAll)),
    ];
  } finally {
    await counter.stop();
    await nats.dispose();
    await a.close();
  }
};
