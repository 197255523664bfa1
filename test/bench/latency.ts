import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FsEvent } from '../../bridge/event/event.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { watchLoop } from './support-eld.js';
import { percentile, round, sleep, startBridgeProcess, type BridgeProcess, type ConfigSections } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * A -> B latency at 1,000 events/s: node A's simulator fires PRESENCE_IN (a new call
 * each, so B's BLF consumer lights a lamp for every one); the clock stops when B's
 * simulator receives the PRESENCE_IN that B's BLF consumer fires over ESL. Also
 * measured: the injected multicast::event on B (the bridge's own injection path).
 * Both bridges are the CLI in their own processes; both simulators live in the
 * benchmark's process, so one clock times both ends.
 *
 * Run once per transport: multicast (TTL 0 on 127.0.0.1, loopback on, in the
 * runner's namespace) and NATS (JetStream on a local nats-server 2.9.10).
 *
 * Baseline (same run): UDP ping-pong on loopback between this process and a child
 * echo process, 1 ping per ms, round-trip time: the floor of any two-process path
 * (A -> B here crosses four processes and three sockets).
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
  blf: number[];
  inject: number[];
  fired: number;
  /** 1-minute load average before and after the measured events: the tail follows it (other work on the 2 cores). */
  load: [number, number];
}

const loadAverage = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

async function measure(transport: 'multicast' | 'nats', nats: NatsServer | null, events: number): Promise<Measured> {
  const simA = await EslSimulator.start({ switchname: 'bench-a' });
  const simB = await EslSimulator.start({ switchname: 'bench-b' });
  const port = 17000 + (process.pid % 1000);
  const common = (name: string, sim: EslSimulator): ConfigSections => ({
    settings: { 'node-name': name, cluster: 'bench' },
    esl: { port: String(sim.port) },
    bindings: { multicast: 'PRESENCE_IN', nats: 'PRESENCE_IN' },
    multicast: transport === 'multicast' ? { enabled: 'true', address: '239.77.7.7', port: String(port), interface: '127.0.0.1', ttl: '0', loopback: 'true' } : { enabled: 'false' },
    nats: transport === 'nats' && nats ? { enabled: 'true', servers: nats.url, 'stream-name': 'BENCH_LATENCY' } : { enabled: 'false' },
  });
  const bridges: BridgeProcess[] = [];
  try {
    bridges.push(await startBridgeProcess(common('bench-a', simA)));
    bridges.push(await startBridgeProcess({ ...common('bench-b', simB), 'consumer:blf': { enabled: 'true' } }));
    await simA.waitForSubscribers(1);
    await simB.waitForSubscribers(1);
    const sentAt = new Map<string, number>();
    const blf: number[] = [];
    const inject: number[] = [];
    /** [Date.now(), ms] of BLF samples over 4 ms, for FSB_BENCH_ELD (lined up with the processes' stalls). */
    const slow: [number, number][] = [];
    let measuring = false;
    simB.on('sendevent', (event: FsEvent) => {
      const now = performance.now();
      if (!measuring) return;
      if (event.name === 'PRESENCE_IN') {
        const at = sentAt.get(event.get('unique-id') ?? '');
        if (at !== undefined) blf.push(now - at);
        if (at !== undefined && now - at > 4 && slow.length < 2_000) slow.push([Date.now(), Math.round((now - at) * 10) / 10]);
      } else if (event.get('Event-Subclass') === 'multicast::event') {
        const at = sentAt.get(event.get('Orig-Unique-ID') ?? '');
        if (at !== undefined) inject.push(now - at);
      }
    });
    const fireAt1k = async (from: number, count: number) => {
      const began = performance.now();
      for (let i = 0; i < count; ) {
        const due = Math.min(count, Math.floor(performance.now() - began) + 1);
        for (; i < due; i++) {
          const event = presence(from + i);
          sentAt.set(event.get('Unique-ID')!, performance.now());
          simA.fire(event);
        }
        await sleep(1);
      }
    };
    // Warm-up (JIT, NATS consumer, first-sight paths), not counted.
    await fireAt1k(0, 500);
    await sleep(500);
    // This process is the clock: a major GC of its own (simulators, fixtures) during the
    // run would be counted as bridge latency. Runs with --expose-gc (npm run bench).
    (globalThis as { gc?: () => void }).gc?.();
    measuring = true;
    const loadBefore = loadAverage();
    const measuredFrom = Date.now();
    await fireAt1k(1_000_000, events);
    const deadline = Date.now() + 3_000;
    while ((blf.length < events || inject.length < events) && Date.now() < deadline) await sleep(50);
    measuring = false;
    if (process.env.FSB_BENCH_ELD) writeFileSync(join(process.env.FSB_BENCH_ELD, `slow-${transport}.json`), JSON.stringify({ from: measuredFrom, to: Date.now(), slow }));
    return { blf: blf.sort((a, b) => a - b), inject: inject.sort((a, b) => a - b), fired: events, load: [loadBefore, loadAverage()] };
  } finally {
    for (const bridge of bridges) await bridge.stop();
    await simA.stop();
    await simB.stop();
  }
}

function summary(sorted: number[]): string {
  return `p50 ${round(percentile(sorted, 0.5), 3)} / p99 ${round(percentile(sorted, 0.99), 3)} / p999 ${round(percentile(sorted, 0.999), 3)} / max ${round(sorted.at(-1) ?? NaN, 3)} ms`;
}

export const latency: BenchCase = async ({ quick }) => {
  if (process.env.FSB_BENCH_ELD) watchLoop(process.env.FSB_BENCH_ELD, 'benchmark process (simulators, clock)');
  const events = quick ? 2_000 : 10_000;
  const ping = await udpPingPong(quick ? 1_000 : PING_COUNT);
  const pingP99 = percentile(ping, 0.99);
  const nats = await startNatsServer();
  try {
    const results: BenchResult[] = [];
    for (const transport of ['multicast', 'nats'] as const) {
      const m = await measure(transport, nats, events);
      const p99 = percentile(m.blf, 0.99);
      const lost = m.fired - m.blf.length;
      results.push({
        case: `A -> B latency p99, ${transport}`,
        value: round(p99, 3),
        unit: 'ms',
        baseline: 'loopback UDP ping-pong RTT p99',
        baseline_value: round(pingP99, 3),
        ratio: round(p99 / pingP99),
        target: 2,
        met: p99 < 2 && lost === 0,
        notes:
          `lower is better; ${m.fired} PRESENCE_IN at 1000/s on A (new call each) to the PRESENCE_IN B's BLF consumer fires into B's simulator: ${summary(m.blf)}, ${lost} missing; ` +
          `injected multicast::event on B: ${summary(m.inject)}, ${m.fired - m.inject.length} missing; ` +
          `baseline ${ping.length} UDP pings: ${summary(ping)}; machine load average (1 min) ${m.load[0]} before / ${m.load[1]} after. Bridges: CLI processes; simulators and the clock in the benchmark process; 2 cores shared by 3 node processes${transport === 'nats' ? ' and nats-server' : ''}`,
      });
    }
    return results;
  } finally {
    await nats.dispose();
  }
};
