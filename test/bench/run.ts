import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LEGACY_PROVIDER_FLAG } from '../../bridge/transports/multicast/blowfish.js';
import { createNetns } from '../support/netns.js';
import { NATS_SERVER_BIN } from '../support/nats-server.js';
import { LabEnvError, loadLabEnv } from '../freeswitch/env.js';
import {
  errorRow,
  extractFindings,
  extractFreeswitchSection,
  machine,
  renderFreeswitchSection,
  renderMarkdown,
  renderTable,
  replaceFreeswitchSection,
  resultRow,
  toJson,
  type Report,
  type ReportRow,
} from './support-report.js';
import { SLOWDOWN } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * `npm run bench [-- --quick] [--out DIR] [--only NAME[,NAME]]`
 *
 * Every case runs in its own child process (this file again, with `--case`), so a
 * case starts with a clean heap and JIT, its leftovers (sockets, servers, timers)
 * die with it, and a crash or a hang becomes an error row instead of the end of the
 * suite. Cases that send multicast run inside a fresh network namespace made for
 * that case alone (`ip netns exec`; loopback up with multicast on and a route for
 * 224.0.0.0/4), deleted afterwards: the bridge's multicast never reaches the
 * host's interfaces. multicast-receive makes its own namespace, so it runs on the host.
 *
 * Exit code: 0 when every case produced its figures, whether or not the targets were
 * met (CI does not assert timings); 1 when a case failed or timed out; 2 on bad usage.
 * A missing prerequisite (nats-server) gives an error row but does not fail the run.
 */

interface CaseSpec {
  name: string;
  /** Module next to this file and the BenchCase it exports. */
  module: string;
  export: string;
  /** Run inside a namespace made by the runner. */
  netns: boolean;
  nats: boolean;
  /** A guard against a hung case, never a timing check: quick mode gets the same, since a busy CI machine is slow, not hung. */
  timeoutMs: number;
  /** Extra node flags for the case's child (Blowfish needs the OpenSSL legacy provider). */
  nodeArgs?: readonly string[];
}

/**
 * A full run gives every case this many times its timeout: on a 2-core machine shared with
 * other work (load 9-25 seen) a full esl-parse took 240 s and inject 243 s, and a case that
 * is only slow must still give its figures.
 */
export const FULL_RUN_TIMEOUT_FACTOR = 3;

/**
 * The latency case's process is the clock and both simulators, at SCHED_RR beside the
 * bridges: its own GC must not take a core from them. Traced with perf sched (2026-12-02):
 * a major GC of this process ran its main thread and a V8 helper on both cores for 13 ms,
 * every bridge and nats-server waiting, and the events in flight then timed 10-16 ms (the
 * p999). A 64 MB young generation from the start means no scavenge promotes and no major
 * GC comes during a run, and single-threaded GC keeps any collection on this process's
 * own core. Multicast as deployed, 3 alternating quick pairs: p99 2.0-2.1 -> 1.0-1.6 ms,
 * p999 7.0-9.7 -> 1.9-2.6 ms.
 */
const LATENCY_CLOCK_FLAGS = ['--single-threaded-gc', '--min-semi-space-size=64', '--max-semi-space-size=64'];

export const CASES: readonly CaseSpec[] = [
  { name: 'esl-parse', module: './esl-parse.js', export: 'eslParse', netns: false, nats: false, timeoutMs: 120_000 },
  { name: 'esl-to-sinks', module: './esl-to-sinks.js', export: 'eslToSinks', netns: true, nats: true, timeoutMs: 120_000 },
  { name: 'multicast-receive', module: './multicast-receive.js', export: 'multicastReceive', netns: false, nats: false, timeoutMs: 60_000 },
  { name: 'latency', module: './latency.js', export: 'latency', netns: true, nats: true, timeoutMs: 120_000, nodeArgs: LATENCY_CLOCK_FLAGS },
  { name: 'location-writes', module: './location-writes.js', export: 'locationWrites', netns: false, nats: false, timeoutMs: 90_000 },
  { name: 'kv-load', module: './kv-load.js', export: 'kvLoad', netns: false, nats: true, timeoutMs: 90_000 },
  { name: 'rss', module: './rss.js', export: 'rss', netns: true, nats: true, timeoutMs: 120_000 },
  { name: 'board-latency', module: './board-latency.js', export: 'boardLatency', netns: false, nats: true, timeoutMs: 180_000 },
  { name: 'inject', module: './inject.js', export: 'inject', netns: false, nats: false, timeoutMs: 180_000 },
  { name: 'multicast-crypto', module: './multicast-crypto.js', export: 'multicastCrypto', netns: false, nats: false, timeoutMs: 90_000, nodeArgs: [LEGACY_PROVIDER_FLAG] },
];

/**
 * `--freeswitch`: side by side with mod_event_multicast on two real FreeSWITCH nodes
 * (freeswitch.ts). Not one of CASES: it needs the environment of `npm run test:freeswitch`
 * (docs/interop.md) and runs alone, and its results replace only their own section of
 * docs/benchmarks.md (the rest is kept), and docs/benchmarks-freeswitch.json.
 */
export const FREESWITCH_CASE: CaseSpec = { name: 'freeswitch', module: './freeswitch.js', export: 'freeswitch', netns: false, nats: true, timeoutMs: 300_000 };

const SETUP = [
  'Each case runs in a fresh child process (clean heap and JIT); its figures sit next to a baseline measured in the same run, since absolute timings on a shared 2-core VM drift from run to run.',
  'Cases that send multicast run in a network namespace made for them (loopback only, TTL 0, multicast interface 127.0.0.1); nothing reaches the host interfaces.',
  'The bridge under test runs as `fs-event-bridge run --config` in its own process (one JS thread: one core); the ESL simulator, nats-server and the counting code share the other core.',
  'ratio = value / baseline_value; for "lower is better" cases the notes say which way the ratio reads.',
];

const SELF = fileURLToPath(import.meta.url);
const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), SELF.includes('/dist/') ? '../../..' : '../..');

interface Args {
  quick: boolean;
  out: string;
  only: string[] | null;
  caseName: string | null;
  resultFile: string | null;
  freeswitch: boolean;
}

export function parseArgs(argv: readonly string[]): Args {
  const args: Args = { quick: false, out: join(REPO, 'docs'), only: null, caseName: null, resultFile: null, freeswitch: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    if (arg === '--quick') args.quick = true;
    else if (arg === '--out') args.out = resolve(value());
    else if (arg === '--only') args.only = value().split(',').filter(Boolean);
    else if (arg === '--case') args.caseName = value();
    else if (arg === '--result') args.resultFile = value();
    else if (arg === '--freeswitch') args.freeswitch = true;
    else throw new UsageError(`unknown option ${arg}`);
  }
  const unknown = (args.only ?? []).filter((n) => !CASES.some((c) => c.name === n));
  if (unknown.length > 0) throw new UsageError(`unknown case ${unknown.join(', ')}; cases: ${CASES.map((c) => c.name).join(', ')}`);
  if (args.freeswitch && args.only !== null) throw new UsageError('--freeswitch runs alone: it takes no --only');
  return args;
}

class UsageError extends Error {}

type ChildOutcome = { rows: BenchResult[] } | { error: string };

/** Child mode: run one case, write its rows (or its error) as JSON to `resultFile`. */
async function runCaseHere(spec: CaseSpec, quick: boolean, resultFile: string): Promise<void> {
  let outcome: ChildOutcome;
  try {
    const module = (await import(spec.module)) as Record<string, BenchCase>;
    const bench = module[spec.export];
    if (typeof bench !== 'function') throw new Error(`${spec.module} does not export ${spec.export}`);
    outcome = { rows: await bench({ quick }) };
  } catch (error) {
    outcome = { error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  writeFileSync(resultFile, JSON.stringify(outcome));
}

interface CaseRun {
  rows: ReportRow[];
  seconds: number;
  failed: boolean;
}

/** Process groups of the case processes still running, killed when the runner exits (Ctrl-C included). */
const liveGroups = new Set<number>();

function killGroup(group: number): void {
  try {
    process.kill(-group, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

async function runCaseIsolated(spec: CaseSpec, quick: boolean): Promise<CaseRun> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  if (spec.nats && !existsSync(NATS_SERVER_BIN)) {
    return { rows: [errorRow(spec.name, `prerequisite missing: nats-server not found at ${NATS_SERVER_BIN} (set NATS_SERVER_BIN)`)], seconds: seconds(), failed: false };
  }
  const dir = mkdtempSync(join(tmpdir(), `fsb-bench-${spec.name}-`));
  const resultFile = join(dir, 'result.json');
  const node = [process.execPath, ...process.execArgv, ...(spec.nodeArgs ?? []), SELF, '--case', spec.name, '--result', resultFile, ...(quick ? ['--quick'] : [])];
  let netns: { name: string; cleanup(): void } | null = null;
  try {
    if (spec.netns) netns = createNetns('bench');
    const [cmd, ...args] = netns ? ['ip', 'netns', 'exec', netns.name, ...node] : node;
    // Its own process group: a case killed on timeout takes its bridges, simulators and nats-server with it.
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
    const group = child.pid!;
    liveGroups.add(group);
    const timeoutMs = spec.timeoutMs * (quick ? 1 : FULL_RUN_TIMEOUT_FACTOR) * SLOWDOWN;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(group);
    }, timeoutMs);
    const code = await new Promise<number | null>((done) => child.once('exit', (c, signal) => done(c ?? (signal ? 128 : null))));
    clearTimeout(timer);
    // Whatever the case left running (a crash skips its finally blocks) goes too.
    killGroup(group);
    liveGroups.delete(group);
    if (timedOut) return { rows: [errorRow(spec.name, `timed out after ${timeoutMs / 1000} s`)], seconds: seconds(), failed: true };
    if (!existsSync(resultFile)) return { rows: [errorRow(spec.name, `case process exited with code ${code} without a result`)], seconds: seconds(), failed: true };
    const outcome = JSON.parse(readFileSync(resultFile, 'utf8')) as ChildOutcome;
    if ('error' in outcome) return { rows: [errorRow(spec.name, outcome.error)], seconds: seconds(), failed: true };
    return { rows: outcome.rows.map(resultRow), seconds: seconds(), failed: false };
  } catch (error) {
    return { rows: [errorRow(spec.name, (error as Error).message)], seconds: seconds(), failed: true };
  } finally {
    netns?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Writes benchmarks.md and benchmarks.json into `outDir`; the findings block comes from the repository's docs/benchmarks.md. */
export function writeReport(outDir: string, report: Report): { markdown: string; json: string } {
  mkdirSync(outDir, { recursive: true });
  const markdown = join(outDir, 'benchmarks.md');
  const json = join(outDir, 'benchmarks.json');
  writeFileSync(markdown, renderMarkdown(report));
  writeFileSync(json, toJson(report.rows));
  return { markdown, json };
}

function previousMarkdown(): string {
  const file = join(REPO, 'docs', 'benchmarks.md');
  return existsSync(file) ? readFileSync(file, 'utf8') : '';
}

/** `--freeswitch`: its own section of benchmarks.md replaced (everything else as it was), its rows in benchmarks-freeswitch.json. */
export function writeFreeswitchReport(outDir: string, previous: string, section: string, rows: readonly ReportRow[]): { markdown: string; json: string } {
  mkdirSync(outDir, { recursive: true });
  const markdown = join(outDir, 'benchmarks.md');
  const json = join(outDir, 'benchmarks-freeswitch.json');
  writeFileSync(markdown, replaceFreeswitchSection(previous, section));
  writeFileSync(json, toJson(rows));
  return { markdown, json };
}

async function runFreeswitch(out: string): Promise<number> {
  try {
    loadLabEnv();
  } catch (error) {
    if (!(error instanceof LabEnvError)) throw error;
    throw new UsageError(error.message.replace('npm run test:freeswitch needs', 'npm run bench -- --freeswitch needs'));
  }
  process.stderr.write('bench: freeswitch...\n');
  const run = await runCaseIsolated(FREESWITCH_CASE, false);
  process.stdout.write('\n' + renderTable(run.rows));
  const section = renderFreeswitchSection(machine(false), run.rows, run.seconds);
  const written = writeFreeswitchReport(out, previousMarkdown(), section, run.rows);
  process.stdout.write(`\n${run.rows.filter((r) => r.met).length}/${run.rows.length} targets met in ${run.seconds.toFixed(1)} s; wrote ${written.markdown} and ${written.json}\n`);
  return run.failed ? 1 : 0;
}

/**
 * tsc emits test/ into dist/test/ without the captures, and test/support/fixtures.ts
 * finds them relative to itself: point dist/test/fixtures at the real folder.
 */
function linkFixturesIntoDist(): void {
  if (!SELF.includes('/dist/')) return;
  const link = join(REPO, 'dist', 'test', 'fixtures');
  if (!existsSync(link)) symlinkSync(join(REPO, 'test', 'fixtures'), link, 'dir');
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv);
  linkFixturesIntoDist();
  if (args.caseName) {
    const spec = [...CASES, FREESWITCH_CASE].find((c) => c.name === args.caseName)!;
    if (!args.resultFile) throw new UsageError('--case needs --result FILE');
    await runCaseHere(spec, args.quick, args.resultFile);
    return 0;
  }
  if (args.freeswitch) return runFreeswitch(args.out);
  const selected = CASES.filter((c) => args.only === null || args.only.includes(c.name));
  const rows: ReportRow[] = [];
  const durations: Record<string, number> = {};
  let failed = false;
  const began = performance.now();
  for (const spec of selected) {
    process.stderr.write(`bench: ${spec.name}${args.quick ? ' (quick)' : ''}...\n`);
    const run = await runCaseIsolated(spec, args.quick);
    rows.push(...run.rows);
    durations[spec.name] = run.seconds;
    failed ||= run.failed;
    process.stderr.write(`bench: ${spec.name} done in ${run.seconds.toFixed(1)} s\n`);
  }
  const previous = previousMarkdown();
  const report: Report = { machine: machine(args.quick), rows, setup: SETUP, durations, findings: extractFindings(previous), freeswitch: extractFreeswitchSection(previous) };
  process.stdout.write('\n' + renderTable(rows));
  const written = writeReport(args.out, report);
  process.stdout.write(`\n${rows.filter((r) => r.met).length}/${rows.length} targets met in ${((performance.now() - began) / 1000).toFixed(1)} s; wrote ${written.markdown} and ${written.json}\n`);
  return failed ? 1 : 0;
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === SELF;
if (invokedDirectly) {
  // Ctrl-C: leave through process.exit so the namespace and child cleanup hooks run.
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
  process.once('exit', () => {
    for (const group of liveGroups) killGroup(group);
  });
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: Error) => {
      process.stderr.write(`bench: ${error instanceof UsageError ? error.message : (error.stack ?? error.message)}\n`);
      process.exit(error instanceof UsageError ? 2 : 1);
    },
  );
}
