import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { describeNeighbours, describeStalls, parseStat, realtimeNeighbours, startStallObserver } from '../bench/support-machine.js';

/** A /proc/PID/stat line with the given fields (ppid field 4, rt_priority field 40, policy field 41). */
function statLine(pid: number, comm: string, ppid: number, rtPriority: number, policy: number): string {
  const fields = Array.from({ length: 50 }, () => '0');
  fields[0] = 'S';
  fields[1] = String(ppid);
  fields[37] = String(rtPriority);
  fields[38] = String(policy);
  return `${pid} (${comm}) ${fields.join(' ')}\n`;
}

describe('bench machine observation (latency case)', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('parses a stat line whose comm holds spaces and parentheses', () => {
    expect(parseStat(statLine(42, 'a (b) c', 7, 99, 1))).toEqual({ pid: 42, ppid: 7, comm: 'a (b) c', policy: 1, rtPriority: 99 });
    expect(parseStat('garbage')).toBeNull();
    expect(parseStat('12 (x) S')).toBeNull();
  });

  it("scans this machine's /proc, every line in the documented form", () => {
    const neighbours = realtimeNeighbours();
    expect(Array.isArray(neighbours)).toBe(true);
    // This process and its descendants are never listed, whatever their policy.
    for (const line of neighbours) expect(line).toMatch(/^.+ (FIFO|RR|DEADLINE) \d+ x\d+$/);
  });

  it("lists other processes' real-time threads, leaving out its own descendants and kernel threads", () => {
    const root = mkdtempSync(join(tmpdir(), 'fsb-proc-'));
    dirs.push(root);
    const proc = (pid: number, comm: string, ppid: number, threads: [number, number, number][]) => {
      mkdirSync(join(root, String(pid), 'task'), { recursive: true });
      writeFileSync(join(root, String(pid), 'stat'), statLine(pid, comm, ppid, 0, 0));
      for (const [tid, prio, policy] of threads) {
        mkdirSync(join(root, String(pid), 'task', String(tid)));
        writeFileSync(join(root, String(pid), 'task', String(tid), 'stat'), statLine(tid, comm, ppid, prio, policy));
      }
    };
    proc(1, 'init', 0, [[1, 0, 0]]);
    proc(2, 'kthreadd', 0, [[2, 0, 0]]);
    proc(18, 'migration/0', 2, [[18, 99, 1]]);
    proc(100, 'bench', 1, [[100, 10, 2]]);
    proc(101, 'bridge', 100, [[101, 10, 2], [102, 10, 2]]);
    proc(103, 'grandchild', 101, [[103, 10, 2]]);
    proc(200, 'freeswitch', 1, [[200, 1, 1], [201, 99, 1], [202, 99, 1], [203, 0, 0]]);
    proc(300, 'counter', 1, [[300, 20, 2]]);
    writeFileSync(join(root, 'loadavg'), '1 1 1 1/1 1\n');
    expect(realtimeNeighbours(100, root)).toEqual(['freeswitch FIFO 99 x2', 'freeswitch FIFO 1 x1', 'counter RR 20 x1']);
    expect(describeNeighbours([], [])).toBe('no other real-time processes on the machine before or after');
    expect(describeNeighbours(['counter RR 20 x1'], ['counter RR 20 x1', 'x FIFO 1 x1'])).toContain('counter RR 20 x1, x FIFO 1 x1');
  });

  it('runs an idle probe that reports its ticks until stopped', async () => {
    const observer = await startStallObserver();
    expect(observer.pid).toBeGreaterThan(0);
    // start() resolves after the probe's first tick.
    let report = await observer.stop();
    expect(report.ticks).toBeGreaterThanOrEqual(1);
    expect(report.over2ms).toBeLessThanOrEqual(report.ticks);
    expect(report.max).toBeGreaterThanOrEqual(report.p99);
    report = { ticks: 1000, over2ms: 3, p99: 0.4, max: 12.345 };
    expect(describeStalls(report, 'SCHED_RR 10')).toBe('an idle probe process (5 ms timer, SCHED_RR 10) beside it: 3 of 1000 ticks over 2 ms late, p99 0.4 ms, max 12.35 ms');
  });
});
