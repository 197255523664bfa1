import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';

/**
 * With FSB_BENCH_ELD=DIR, in a benchmark's bridge processes (support-eld-preload.ts, loaded
 * with `--import`) and in the latency case's own process: records the event loop's delay histogram
 * and every GC pause, and writes them to DIR/eld-<pid>.json at exit. This is how the
 * latency tail was traced to its source (docs/benchmarks.md, "Profile findings").
 */
export interface LoopReport {
  pid: number;
  argv: string;
  /** Event loop delay in ms (resolution 1 ms: the sampling timer's). */
  delay: { p50: number; p99: number; p999: number; max: number; count: number };
  gc: { count: number; totalMs: number; maxMs: number; over10ms: number };
  /** [Date.now() at the start of the pause, pause ms, V8 kind (1 minor, 4 incremental, 2 major, 8 weak callbacks)] for each GC pause over 1 ms (first 2000). */
  pauses: [number, number, number][];
  /** [Date.now() at the end of the stall, stall ms] for each 1 ms tick that came more than 2 ms late (the latency target) (first 2000). */
  stalls: [number, number][];
}

export function watchLoop(dir: string, label = process.argv.slice(2).join(' ')): () => LoopReport {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  const gc = { count: 0, totalMs: 0, maxMs: 0, over10ms: 0 };
  const pauses: [number, number, number][] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.count++;
      gc.totalMs += entry.duration;
      gc.maxMs = Math.max(gc.maxMs, entry.duration);
      if (entry.duration > 10) gc.over10ms++;
      const kind = (entry as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
      if (entry.duration > 1 && pauses.length < 2_000) pauses.push([Math.round(performance.timeOrigin + entry.startTime), Math.round(entry.duration * 10) / 10, kind]);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  // Wall-clock times of the stalls, to line them up with the latency samples of the other processes.
  const stalls: [number, number][] = [];
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    const late = now - last - 1;
    last = now;
    if (late > 2 && stalls.length < 2_000) stalls.push([Date.now(), Math.round(late * 10) / 10]);
  }, 1).unref();
  const ms = (ns: number) => Math.round(ns / 1e4) / 100;
  const report = (): LoopReport => ({
    pid: process.pid,
    argv: label.slice(0, 200),
    delay: { p50: ms(histogram.percentile(50)), p99: ms(histogram.percentile(99)), p999: ms(histogram.percentile(99.9)), max: ms(histogram.max), count: histogram.count },
    gc: { ...gc, totalMs: Math.round(gc.totalMs), maxMs: Math.round(gc.maxMs * 100) / 100 },
    stalls,
    pauses,
  });
  process.on('exit', () => writeFileSync(join(dir, `eld-${process.pid}.json`), JSON.stringify(report())));
  return report;
}
