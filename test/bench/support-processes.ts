import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { LEGACY_PROVIDER_FLAG, RELAUNCH_ENV, RELAUNCH_V8_FLAGS } from '../../bridge/transports/multicast/blowfish.js';
import { freePort } from '../support/nats-server.js';

/**
 * Benchmark processes: the bridge as it is deployed (`fs-event-bridge run --config`)
 * in a child process, so a figure measures the bridge's one JS thread and not the
 * simulator or the counting code that share the benchmark's process.
 *
 * The benchmarks run from dist/ (`npm run bench` builds first): the CLI is the built
 * dist/bridge/cli/main.js next to this file's dist/test/bench/.
 */
const CLI = fileURLToPath(new URL('../../bridge/cli/main.js', import.meta.url));
const ELD = new URL('./support-eld-preload.js', import.meta.url).href;

/**
 * FSB_BENCH_WRAP='valgrind --tool=callgrind ...': a command every measured Node process
 * (bridges, the ESL drain and floor) runs under. Callgrind counts the instructions a
 * process executes, which, unlike its CPU time, does not change with what else runs on
 * this shared machine; the profile findings compare builds that way. The process is
 * then ~50x slower, so waits stretch by SLOWDOWN.
 */
const WRAP = (process.env.FSB_BENCH_WRAP ?? '').split(' ').filter(Boolean);
export const SLOWDOWN = WRAP.length > 0 ? 50 : 1;

/**
 * Spawn `node args` (under FSB_BENCH_WRAP when set). `prefix`: commands that exec the
 * next one (taskset, chrt, `ip netns exec`), so the child's pid is still node's.
 */
export function spawnNode(args: readonly string[], options: SpawnOptions, prefix: readonly string[] = []): ChildProcess {
  const command = [...prefix, ...WRAP, process.execPath, ...args];
  return spawn(command[0], command.slice(1), options);
}

/** The prefix that confines a process (every thread, GC and libuv helpers included) to a taskset CPU list. */
export const onCpus = (cpus: string): string[] => ['taskset', '--cpu-list', cpus];

/** USER_HZ: 100 on every Linux this runs on (getconf CLK_TCK). */
const CLOCK_TICKS_PER_S = 100;

export type ConfigSections = Record<string, Record<string, string>>;

export interface BridgeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The status server's port (/ready, /metrics). */
  readonly statusPort: number;
  /** GET a status endpoint; resolves with the body text. */
  status(path: string): Promise<{ code: number; body: string }>;
  /** Sum of one Prometheus metric's samples whose labels match. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Resident set size from /proc/PID/status, in bytes. */
  rss(): number;
  /**
   * CPU time (user + system, every thread) from /proc/PID/stat, in ms (10 ms ticks). Unlike
   * wall time it does not grow when other processes take the cores, so per-event costs
   * compare across runs on this shared machine.
   */
  cpuMs(): number;
  /** SIGTERM (graceful stop), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Start the bridge CLI with a config built from `sections` (validated here first so a
 * bad benchmark config fails with the loader's message, not a child's exit code).
 * Resolves once /ready answers 200 (ESL connected, consumers loaded).
 */
export async function startBridgeProcess(
  sections: ConfigSections,
  options: { readyTimeoutMs?: number; nodeArgs?: string[]; prefix?: readonly string[]; statusHost?: string } = {},
): Promise<BridgeProcess> {
  const statusPort = await freePort();
  // Where this process reaches the status server: a bridge on another network (the lab's nodes) listens on that network's address.
  const statusHost = options.statusHost ?? '127.0.0.1';
  const xml = defaultConfigXml({ ...sections, metrics: { enabled: 'true', host: statusHost, port: String(statusPort) }, settings: { 'log-level': 'warn', ...sections.settings } });
  loadConfigText(xml, 'bench', {});
  const dir = mkdtempSync(join(tmpdir(), `fsb-bench-bridge-${process.pid}-`));
  const file = join(dir, 'event_bridge.conf.xml');
  writeFileSync(file, xml);
  // The flags and environment of the CLI's relaunch up front: otherwise `run` relaunches itself and the pid we watch would not be the bridge.
  // FSB_BENCH_CPU_PROF=DIR: profile the bridge (written when it stops), for the "Profile findings" in docs/benchmarks.md.
  const profile = process.env.FSB_BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.FSB_BENCH_CPU_PROF] : [];
  // FSB_BENCH_ELD=DIR: event loop delay histogram and GC pauses of the bridge (support-eld.ts).
  const loop = process.env.FSB_BENCH_ELD ? ['--import', ELD] : [];
  // FSB_BENCH_NODE_ARGS='--flag ...': extra node flags for every bridge process (to try V8 settings).
  const extra = (process.env.FSB_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawnNode([LEGACY_PROVIDER_FLAG, ...RELAUNCH_V8_FLAGS, ...profile, ...loop, ...extra, ...(options.nodeArgs ?? []), CLI, 'run', '--config', file], {
    stdio: ['ignore', 'inherit', 'inherit'],
    // As deployed (config/systemd, compose/Dockerfile): the relaunch's environment, overridable from outside.
    env: { ...RELAUNCH_ENV, ...process.env, NODE_OPTIONS: '' },
  }, options.prefix);
  const exited = once(child, 'exit');
  const status = async (path: string) => {
    const response = await fetch(`http://${statusHost}:${statusPort}${path}`);
    return { code: response.status, body: await response.text() };
  };
  const bridge: BridgeProcess = {
    child,
    pid: child.pid!,
    statusPort,
    status,
    async metric(name, labels = {}) {
      const { body } = await status('/metrics');
      let total = 0;
      for (const line of body.split('\n')) {
        if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
        if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return total;
    },
    rss() {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      return match ? Number(match[1]) * 1024 : NaN;
    },
    cpuMs: () => processCpuMs(child.pid!),
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs * SLOWDOWN);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const readyTimeoutMs = (options.readyTimeoutMs ?? 20_000) * SLOWDOWN;
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (child.exitCode !== null) {
      await bridge.stop();
      throw new Error(`bridge exited with code ${child.exitCode} before it was ready`);
    }
    const ready = await status('/ready').then(
      (r) => r.code === 200,
      () => false,
    );
    if (ready) return bridge;
    if (Date.now() > deadline) {
      await bridge.stop();
      throw new Error(`bridge not ready within ${readyTimeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** CPU time (user + system) of a live process (every thread) or of one of its threads, from /proc, in ms (10 ms ticks). */
export function processCpuMs(pid: number, tid?: number): number {
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
}

/** CPU time (user + system) of each thread of a live process, in ms, by thread id; the main thread's id is the pid. */
export function threadCpuMs(pid: number): Map<number, number> {
  const threads = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      threads.set(Number(tid), processCpuMs(pid, Number(tid)));
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return threads;
}

/**
 * Where a process's CPU went between two threadCpuMs() snapshots, per event: the main
 * thread, then every other thread that used any, largest first. Node 20 names all its
 * threads "node", so only the main one (tid = pid) can be named.
 */
export function describeThreads(pid: number, before: Map<number, number>, after: Map<number, number>, events: number): string {
  const perEvent = (tid: number) => (((after.get(tid) ?? 0) - (before.get(tid) ?? 0)) * 1000) / events;
  const others = [...after.keys()]
    .filter((tid) => tid !== pid)
    .map(perEvent)
    .filter((us) => us > 0)
    .sort((a, b) => b - a);
  return `main thread ${round(perEvent(pid), 1)} µs per event, its other threads ${others.length === 0 ? 'none' : others.map((us) => round(us, 1)).join(' + ')} µs`;
}

/** Busy and total jiffies of the whole machine (/proc/stat), for how much of the cores a run left idle. */
export function machineCpu(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  // idle and iowait are the 4th and 5th fields.
  return { busy: total - fields[3] - fields[4], total };
}

/** The machine's 1-minute load average, recorded beside figures that a busy machine moves. */
export const loadAverage = (): number => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

/** Percent of all cores busy between two machineCpu() snapshots. */
export function busyPercent(before: { busy: number; total: number }, after: { busy: number; total: number }): number {
  return round((100 * (after.busy - before.busy)) / Math.max(1, after.total - before.total), 0);
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
