import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { EslConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { toMulticastEvent } from '../../bridge/pipeline/inject.js';
import { LOOP_GUARD_HEADER } from '../../bridge/pipeline/types.js';
import { EslClient, sendeventCommand } from '../../bridge/sources/esl/client.js';
import { EslInjector } from '../../bridge/sources/esl/injector.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { datagramFixtures } from '../support/fixtures.js';
import { round } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * Injection into FreeSWITCH: how fast remote events get in, and that all of them do.
 *
 * The events are the fixture sofia::register and PRESENCE_IN datagrams as the bridge
 * injects them (multicast::event, Orig- headers), each numbered by a header, offered
 * as a burst. Events/s = events / time from the first offer to the last reply; a
 * subscriber on the same node counts the multicast::event it is given, so "delivered"
 * is what FreeSWITCH fired, not what it acknowledged.
 *
 * Modes, in one run on the same node:
 * - `one at a time`: each sendevent waits for its reply before the next is written
 *   (the bridge before pipelining): the baseline;
 * - `pipelined, N connection(s)`: the injector, 64 KB written ahead per connection.
 *
 * Against the ESL simulator (the suite, CI) each connection reads commands at a fixed
 * byte rate, SIM_INGEST_BYTES_PER_S, the pace measured on a real 1.10.12 node (read_packet
 * takes one byte per recv() and sched_yield()s between them), so the ratios are what a
 * real node gives. Against a real FreeSWITCH (the lab): `node dist/test/bench/inject.js
 * --esl HOST:PORT[:PASSWORD] [--count 50000] [--connections 1,2,4]`.
 */
const SIM_INGEST_BYTES_PER_S = 2_000_000;
const MARK = 'FSB-Bench-Seq';

interface Target {
  host: string;
  port: number;
  password: string;
}

interface RunFigures {
  mode: string;
  events: number;
  delivered: number;
  ms: number;
  rate: number;
  bytesPerEvent: number;
}

function eslConfig(target: Target): EslConfig {
  return { ...target, reconnectMaxMs: 800, queueMaxEvents: 10_000, queueMaxBytes: 64 * 1024 ** 2, maxFrameBytes: 16 * 1024 ** 2, commandTimeoutMs: 60_000 };
}

export type Mix = 'presence-register' | 'schedule';

/**
 * Fixture events as the bridge injects them: `presence-register`, the registrations
 * and presence a legacy node sends most (mod_sofia acts on each); `schedule`,
 * RE_SCHEDULE, which mod_sofia ignores (FreeSWITCH's ingest alone).
 */
function injectedMix(mix: Mix): FsEvent[] {
  const wanted = (d: { headers: [string, string][] }) =>
    d.headers.some(([n, v]) => (mix === 'schedule' ? n === 'Event-Name' && v === 'RE_SCHEDULE' : (n === 'Event-Name' && v === 'PRESENCE_IN') || (n === 'Event-Subclass' && v.startsWith('sofia::'))));
  const events = datagramFixtures('multicast-plain')
    .map((f) => f.decoded)
    .filter(wanted)
    .map((d) => new FsEvent(d.headers.map(([n, v]) => [n, v]), d.body));
  return events.map((e) => toMulticastEvent(e, e.get('Multicast-Sender') ?? 'fs-a', 'fs-b'));
}

function commandsFor(count: number, run: string, kind: Mix): string[] {
  const mix = injectedMix(kind);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const event = mix[i % mix.length].clone();
    // The counter is an ESL client too, and ESL clients drop what carries the loop guard.
    event.delete(LOOP_GUARD_HEADER);
    event.add(MARK, `${run}:${i}`);
    out.push(sendeventCommand(event));
  }
  return out;
}

/** Counts the multicast::event FreeSWITCH fires for one run. */
async function startCounter(target: Target): Promise<{ count: (run: string) => number; stop: () => Promise<void> }> {
  const client = new EslClient(eslConfig(target), { subscription: 'CUSTOM multicast::event', logger: silentLogger(), metrics: new Metrics(), label: 'counter' });
  const counts = new Map<string, number>();
  client.start();
  await client.ready(10_000);
  const loop = (async () => {
    for await (const batch of client.events()) {
      for (const e of batch) {
        const mark = e.get(MARK);
        if (mark === undefined) continue;
        const run = mark.slice(0, mark.lastIndexOf(':'));
        counts.set(run, (counts.get(run) ?? 0) + 1);
      }
    }
  })();
  return {
    count: (run) => counts.get(run) ?? 0,
    stop: async () => {
      await client.stop();
      await loop;
    },
  };
}

async function waitFor(probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

async function oneAtATime(target: Target, commands: string[]): Promise<number> {
  const client = new EslClient(eslConfig(target), { subscription: null, logger: silentLogger(), metrics: new Metrics(), label: 'baseline' });
  client.start();
  await client.ready(10_000);
  const started = performance.now();
  for (const command of commands) {
    await new Promise<void>((resolve, reject) => {
      client.pipeline([command], [(err) => (err ? reject(err) : resolve())]);
    });
  }
  const ms = performance.now() - started;
  await client.stop();
  return ms;
}

async function pipelined(target: Target, commands: string[], connections: number): Promise<number> {
  const injector = new EslInjector(eslConfig(target), { connections, queueMaxBytes: 1024 ** 3 }, { logger: silentLogger(), metrics: new Metrics(), nodeName: 'bench' });
  injector.start();
  await injector.ready(10_000);
  let answered = 0;
  const started = performance.now();
  const done = new Promise<void>((resolve) => {
    for (const command of commands) {
      injector.offer({
        command,
        orderKey: null,
        done: () => {
          if (++answered === commands.length) resolve();
        },
      });
    }
  });
  await done;
  const ms = performance.now() - started;
  await injector.stop(Date.now() + 5_000);
  return ms;
}

async function measure(target: Target, count: number, connectionCounts: readonly number[], baselineCount: number, mix: Mix): Promise<RunFigures[]> {
  const counter = await startCounter(target);
  const figures: RunFigures[] = [];
  try {
    const run = async (mode: string, n: number, go: (commands: string[]) => Promise<number>) => {
      const id = `${mode}-${Date.now()}`;
      const commands = commandsFor(n, id, mix);
      const bytes = commands.reduce((sum, c) => sum + Buffer.byteLength(c), 0);
      const ms = await go(commands);
      await waitFor(() => counter.count(id) >= n, 10_000);
      figures.push({ mode, events: n, delivered: counter.count(id), ms: round(ms, 0), rate: round((n / ms) * 1000, 0), bytesPerEvent: round(bytes / n, 0) });
    };
    await run('one at a time', baselineCount, (c) => oneAtATime(target, c));
    for (const connections of connectionCounts) await run(`pipelined, ${connections} connection${connections > 1 ? 's' : ''}`, count, (c) => pipelined(target, c, connections));
  } finally {
    await counter.stop();
  }
  return figures;
}

export const inject: BenchCase = async ({ quick }) => {
  const sim = await EslSimulator.start({ keepReceived: false });
  sim.setIngestRate(SIM_INGEST_BYTES_PER_S);
  try {
    const count = quick ? 2_000 : 50_000;
    const figures = await measure({ host: '127.0.0.1', port: sim.port, password: 'ClueCon' }, count, [1, 2, 4], quick ? 300 : 5_000, 'presence-register');
    const baseline = figures[0];
    const setup = `ESL simulator reading ${SIM_INGEST_BYTES_PER_S / 1e6} MB/s of command headers per connection (mod_event_socket's byte-at-a-time read_packet, as measured on 1.10.12); ${baseline.bytesPerEvent} bytes per sendevent (fixture sofia::register and PRESENCE_IN as multicast::event)`;
    return figures.slice(1).map((f): BenchResult => ({
      case: `inject ${f.mode}`,
      value: f.rate,
      unit: 'events/s',
      baseline: 'one sendevent at a time (each waits for its reply)',
      baseline_value: baseline.rate,
      ratio: round(f.rate / baseline.rate, 2),
      target: 1.5,
      met: f.rate / baseline.rate >= 1.5 && f.delivered === f.events,
      notes: `${f.events} events in ${f.ms} ms, ${f.delivered} delivered (subscriber count); baseline ${baseline.events} in ${baseline.ms} ms, ${baseline.delivered} delivered. ${setup}`,
    }));
  } finally {
    await sim.stop();
  }
};

/** Standalone, against a real FreeSWITCH: prints one JSON line per mode. */
async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const i = argv.indexOf(name);
    return i < 0 ? undefined : argv[i + 1];
  };
  const esl = arg('--esl');
  if (!esl) throw new Error('usage: inject.js --esl HOST:PORT[:PASSWORD] [--count N] [--baseline N] [--connections 1,2,4] [--mix schedule|presence-register]');
  const [host, port, password] = esl.split(':');
  const target = { host, port: Number(port), password: password ?? 'ClueCon' };
  const count = Number(arg('--count') ?? 50_000);
  const connections = (arg('--connections') ?? '1,2,4').split(',').map(Number);
  const mix = (arg('--mix') ?? 'schedule') as Mix;
  for (const f of await measure(target, count, connections, Number(arg('--baseline') ?? 5_000), mix)) process.stdout.write(JSON.stringify({ mix, ...f }) + '\n');
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
