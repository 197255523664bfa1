import { readFileSync } from 'node:fs';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer } from '../support/nats-server.js';
import { forwardedMix } from './esl-to-sinks.js';
import { round, sleep, startBridgeProcess } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * Memory under sustained load: the bridge CLI (its own process, so the benchmark's
 * heap is not counted) with multicast (bindings ALL, so every event reaches it) and NATS (default
 * bindings) on, fed the fixture mix at 10,000 events/s; RSS sampled from /proc/PID/status every 250 ms.
 * Baseline: the same process idle (connected, before the load), same run.
 *
 * "Flat" is judged on the second half of the load (the first half is warm-up: JIT,
 * heap growth to its working size, NATS buffers): the least-squares slope of RSS
 * there, in MB per minute.
 */
const RATE = 10_000;
const SAMPLE_MS = 250;
/** Second-half growth allowed, MB per minute: GC sawtooth stays under it, a leak of one event's worth per event does not. */
const FLAT_MB_PER_MIN = 5;

function slopePerMinute(samples: { t: number; rss: number }[]): number {
  const n = samples.length;
  if (n < 2) return NaN;
  const mt = samples.reduce((s, x) => s + x.t, 0) / n;
  const mr = samples.reduce((s, x) => s + x.rss, 0) / n;
  let num = 0;
  let den = 0;
  for (const { t, rss } of samples) {
    num += (t - mt) * (rss - mr);
    den += (t - mt) ** 2;
  }
  return (num / den) * 60_000;
}

const MB = 1024 * 1024;

/** 64 MiB: glibc reserves each secondary malloc arena's heap at an address aligned to this (HEAP_MAX_SIZE on 64-bit Linux). */
const ARENA_HEAP_BYTES = 64 * 1024 * 1024;

/**
 * Resident anonymous memory by where it lives, from /proc/PID/smaps: glibc's main arena
 * ([heap]), its secondary arenas (one per thread that mallocs: a 64 MiB-aligned reservation,
 * only partly resident, which is how they are told apart here), and the rest (V8's heap pages, thread stacks, large mmapped
 * blocks). Which of these moves between runs tells native memory from JS memory.
 */
function anonymousBreakdown(pid: number): string {
  const totals = { heap: 0, arenas: 0, other: 0 };
  let arenaCount = 0;
  let kind: keyof typeof totals | null = null;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (range) {
      const start = parseInt(range[1], 16);
      const path = range[3];
      kind = path === '[heap]' ? 'heap' : path !== '' ? null : start % ARENA_HEAP_BYTES === 0 ? 'arenas' : 'other';
      if (kind === 'arenas') arenaCount++;
      continue;
    }
    const anonymous = /^Anonymous:\s+(\d+) kB/.exec(line);
    if (anonymous && kind !== null) totals[kind] += Number(anonymous[1]) * 1024;
  }
  const mb = (bytes: number) => Math.round(bytes / MB);
  return `malloc main arena ${mb(totals.heap)} MB, ${arenaCount} other arenas ${mb(totals.arenas)} MB, the rest ${mb(totals.other)} MB`;
}

export const rss: BenchCase = async ({ quick }) => {
  const loadMs = quick ? 8_000 : 60_000;
  const idleMs = quick ? 1_500 : 5_000;
  const nats = await startNatsServer();
  const sim = await EslSimulator.start({ switchname: 'bench-rss' });
  const bridge = await startBridgeProcess({
    settings: { 'node-name': 'bench-rss', cluster: 'bench' },
    esl: { port: String(sim.port) },
    multicast: { enabled: 'true', address: '239.77.6.6', port: String(18000 + (process.pid % 1000)), interface: '127.0.0.1', ttl: '0', loopback: 'false' },
    // As deployed: nats/peers lists the cluster (bench-peer stands for the node at the other end, silent here).
    nats: { enabled: 'true', servers: nats.url, peers: 'bench-rss,bench-peer' },
    // Every event of the mix reaches the bridge (its ESL subscription is the union of the bindings) and goes out as a datagram.
    bindings: { multicast: 'ALL' },
  });
  try {
    await sim.waitForSubscribers(1);
    const idle: number[] = [];
    for (let t = 0; t < idleMs; t += SAMPLE_MS) {
      idle.push(bridge.rss() / MB);
      await sleep(SAMPLE_MS);
    }
    const idleMb = idle.reduce((a, b) => a + b, 0) / idle.length;
    const events = forwardedMix();
    const began = performance.now();
    const cpuBefore = bridge.cpuMs();
    const replay = sim.replay(events, { loop: true, rate: RATE, count: Math.round((RATE * loadMs) / 1000) });
    const samples: { t: number; rss: number }[] = [];
    while (performance.now() - began < loadMs) {
      await sleep(SAMPLE_MS);
      samples.push({ t: performance.now() - began, rss: bridge.rss() / MB });
    }
    const sent = await replay;
    const cpuPerEventUs = ((bridge.cpuMs() - cpuBefore) * 1000) / sent;
    const seconds = (performance.now() - began) / 1000;
    const eventsIn = await bridge.metric('fsb_events_in_total', { transport: 'esl' });
    const drops = await bridge.metric('fsb_drops_total');
    // Where the resident memory is, read before the stop: V8 spaces of the main thread, and RSS split into anonymous/file pages.
    const spaces = await Promise.all(['new', 'old', 'code', 'large_object'].map(async (space) => `${space} ${Math.round((await bridge.metric('fsb_nodejs_heap_space_size_total_bytes', { space })) / MB)}`));
    const status = readFileSync(`/proc/${bridge.pid}/status`, 'utf8');
    const kb = (field: string) => Math.round(Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024);
    const breakdown = `at the end: RssAnon ${kb('RssAnon')} MB (${anonymousBreakdown(bridge.pid)}), RssFile ${kb('RssFile')} MB, threads ${/Threads:\s+(\d+)/.exec(status)?.[1]}; main-thread V8 spaces (MB total) ${spaces.join(', ')}`;
    const heap = `V8 heap used ${Math.round((await bridge.metric('fsb_nodejs_heap_size_used_bytes')) / MB)} MB of ${Math.round((await bridge.metric('fsb_nodejs_heap_size_total_bytes')) / MB)} MB, external ${Math.round((await bridge.metric('fsb_nodejs_external_memory_bytes')) / MB)} MB at the end`;
    const peak = Math.max(...samples.map((s) => s.rss));
    const secondHalf = samples.filter((s) => s.t >= loadMs / 2);
    const slope = slopePerMinute(secondHalf);
    const flat = slope <= FLAT_MB_PER_MIN;
    const shape = `RSS at 25/50/75/100% of the load: ${[0.25, 0.5, 0.75, 1].map((f) => Math.round(samples[Math.min(samples.length - 1, Math.floor(f * samples.length) - 1)]?.rss ?? NaN)).join(' / ')} MB`;
    const setup = `${sent} events of the fixture mix in ${round(seconds, 1)} s (${Math.round(sent / seconds)} events/s offered, bridge read ${eventsIn}, drops ${drops}); multicast bindings ALL, NATS default bindings; ${loadMs / 1000} s of load after ${idleMs / 1000} s idle; ${samples.length} samples`;
    const results: BenchResult[] = [
      {
        case: 'RSS at 10k events/s',
        value: Math.round(peak),
        unit: 'MB (peak)',
        baseline: 'RSS idle (same process, before the load)',
        baseline_value: Math.round(idleMb),
        ratio: round(peak / idleMb),
        target: 120,
        met: peak < 120 && flat,
        notes: `lower is better; target < 120 MB and flat. ${shape}; second-half slope ${round(slope, 1)} MB/min; ${heap}; ${breakdown}; bridge CPU time ${round(cpuPerEventUs, 1)} µs per event (all threads). ${setup}`,
      },
      {
        case: 'RSS growth after warm-up (second half of the load)',
        value: round(slope, 2),
        unit: 'MB/min',
        baseline: 'RSS idle (MB)',
        baseline_value: Math.round(idleMb),
        ratio: round(slope / idleMb, 4),
        target: FLAT_MB_PER_MIN,
        met: flat,
        notes: `lower is better; least-squares slope of RSS over the second half of the load${quick ? ' (quick mode: 4 s of samples, dominated by GC sawtooth; only the full run judges flatness)' : ''}. ${setup}`,
      },
    ];
    return results;
  } finally {
    await bridge.stop();
    await sim.stop();
    await nats.dispose();
  }
};
