import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * What the machine did to a latency measurement, measured beside it: on this shared 2-core VM
 * other engineers' work (and a FreeSWITCH lab whose threads run SCHED_FIFO up to priority 99)
 * can take the cores from every process of a run at once, and the run cannot tell that from
 * a slow bridge. So each measurement reports (1) the stalls an idle probe process saw while
 * it ran, under the same scheduling as the measured processes, and (2) which real-time
 * processes that are not the benchmark's were on the machine: a SCHED_RR/FIFO thread at
 * the same or a higher priority is not preempted by ours (and busy real-time threads
 * exhaust the kernel's real-time budget, sched_rt_runtime_us, which stops all of them).
 */

/**
 * The probe's timer period. At 1 ms the probe took 5-6% of a core on this VM (load 10),
 * from the run it watches; at 5 ms 2.8% (140 ms of CPU in 5 s), and it still sees every
 * stall longer than 7 ms and most of those over 2 ms.
 */
export const PROBE_PERIOD_MS = 5;

/** Stalls of an idle timer loop: how late each tick came beyond its period. */
export interface StallReport {
  ticks: number;
  /** Ticks more than 2 ms late (the latency target). */
  over2ms: number;
  p99: number;
  max: number;
}

/** The probe's program: a timer that records lateness until stdin ends, then prints a StallReport. */
const OBSERVER_SOURCE = `
const PERIOD = ${PROBE_PERIOD_MS};
const late = [];
let last = performance.now();
const timer = setInterval(() => {
  const now = performance.now();
  if (late.push(now - last - PERIOD) === 1) process.stdout.write('ready\\n');
  last = now;
}, PERIOD);
process.stdin.on('end', () => {
  clearInterval(timer);
  late.sort((a, b) => a - b);
  const over2ms = late.filter((ms) => ms > 2).length;
  const at = (q) => (late.length === 0 ? 0 : late[Math.min(late.length - 1, Math.floor(q * late.length))]);
  process.stdout.write(JSON.stringify({ ticks: late.length, over2ms, p99: at(0.99), max: late.at(-1) ?? 0 }));
}).resume();
`;

/**
 * Start the idle probe (a child process: it inherits this process's scheduling). stop()
 * ends it and resolves with what it saw.
 */
export async function startStallObserver(): Promise<{ pid: number; stop: () => Promise<StallReport> }> {
  const child = spawn(process.execPath, ['-e', OBSERVER_SOURCE], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  // Its first tick has run: the probe watches from here on.
  while (!out.startsWith('ready\n')) {
    const [exit] = await Promise.race([once(child.stdout!, 'data'), once(child, 'exit').then((code) => [code])]);
    if (typeof exit === 'number' || exit === null) throw new Error(`stall observer exited before its first tick (${String(exit)})`);
  }
  return {
    pid: child.pid!,
    async stop() {
      const exited = once(child, 'exit');
      child.stdin!.end();
      await exited;
      return JSON.parse(out.slice('ready\n'.length)) as StallReport;
    },
  };
}

export function describeStalls(report: StallReport, scheduling: string): string {
  const ms = (v: number) => Math.round(v * 100) / 100;
  return `an idle probe process (${PROBE_PERIOD_MS} ms timer, ${scheduling}) beside it: ${report.over2ms} of ${report.ticks} ticks over 2 ms late, p99 ${ms(report.p99)} ms, max ${ms(report.max)} ms`;
}

/** One thread's scheduling, from /proc/PID/task/TID/stat. */
export interface TaskSched {
  pid: number;
  ppid: number;
  comm: string;
  /** 0 SCHED_OTHER, 1 SCHED_FIFO, 2 SCHED_RR, 3 BATCH, 5 IDLE, 6 DEADLINE. */
  policy: number;
  rtPriority: number;
}

/**
 * The fields of a stat line this needs. comm is in parentheses and may hold spaces and
 * parentheses itself, so the fields are counted from the last ')'.
 */
export function parseStat(line: string): TaskSched | null {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const fields = line.slice(close + 2).split(' ');
  // fields[0] is field 3 (state): ppid is field 4, rt_priority field 40, policy field 41.
  const pid = Number(line.slice(0, open).trim());
  const ppid = Number(fields[1]);
  const rtPriority = Number(fields[37]);
  const policy = Number(fields[38]);
  if (![pid, ppid, rtPriority, policy].every(Number.isInteger)) return null;
  return { pid, ppid, comm: line.slice(open + 1, close), policy, rtPriority };
}

const POLICY_NAME: Record<number, string> = { 1: 'FIFO', 2: 'RR', 6: 'DEADLINE' };

function readStat(path: string): TaskSched | null {
  try {
    return parseStat(readFileSync(path, 'utf8'));
  } catch {
    return null; // gone meanwhile
  }
}

/**
 * Real-time threads on the machine that are not this process's or its descendants', as
 * "comm POLICY prio xN" (most threads first), kernel threads left out (the kernel's own
 * migration/watchdog threads are always there and do not run for long).
 */
export function realtimeNeighbours(self = process.pid, procRoot = '/proc'): string[] {
  const processes = new Map<number, TaskSched>();
  for (const name of readdirSync(procRoot)) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(join(procRoot, name, 'stat'));
    if (stat) processes.set(stat.pid, stat);
  }
  const ours = (pid: number): boolean => {
    for (let at = processes.get(pid), hops = 0; at && hops < 64; at = processes.get(at.ppid), hops++) if (at.pid === self) return true;
    return false;
  };
  const kernel = (pid: number) => pid === 2 || processes.get(pid)?.ppid === 2;
  const counts = new Map<string, number>();
  for (const [pid, proc] of processes) {
    if (ours(pid) || kernel(pid)) continue;
    let tasks: string[];
    try {
      tasks = readdirSync(join(procRoot, String(pid), 'task'));
    } catch {
      continue;
    }
    for (const tid of tasks) {
      const task = readStat(join(procRoot, String(pid), 'task', tid, 'stat'));
      if (!task || POLICY_NAME[task.policy] === undefined) continue;
      const key = `${proc.comm} ${POLICY_NAME[task.policy]} ${task.rtPriority}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return [...counts].sort((a, b) => b[1] - a[1]).map(([key, n]) => `${key} x${n}`);
}

export function describeNeighbours(before: readonly string[], after: readonly string[]): string {
  const all = [...new Set([...before, ...after])];
  return all.length === 0 ? 'no other real-time processes on the machine before or after' : `other real-time threads on the machine (not this benchmark's; before/after): ${all.join(', ')}`;
}
