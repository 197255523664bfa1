/**
 * `npm run soak -- --minutes N [--rate 5000]`: the local topology (compose/local: hub and
 * two satellites, each a FreeSWITCH stand-in and a bridge in its own network namespace on
 * one LAN, a 3-server NATS JetStream cluster beside them) under a steady load, with faults
 * injected while it runs:
 *
 * - at 20% of the run a NATS server is restarted;
 * - at 45% the hub's ESL connection is cut (FreeSWITCH gone for a moment);
 * - at 70% one satellite's bridge is killed with SIGKILL and started again.
 *
 * Every node fires `CUSTOM fsb::soak` events numbered per node (Load-Seq), at rate/3 per
 * second each, carried by multicast and NATS both. Every node's FreeSWITCH stand-in
 * records what its bridge injected (compose/local/node-agent.ts). Prints every 10 s the
 * RSS of each bridge and the totals, and at the end, per origin and receiver: events
 * sent (heard by the origin's bridge), received, lost, duplicates and gaps, with each
 * bridge's counted drops by cause; lost events are matched against the fault windows.
 * Not part of CI: it runs for minutes and needs root (namespaces).
 */
import { readFileSync } from 'node:fs';
import { BINDINGS, LocalCluster, NODE_IDS, waitReady, type ClusterNode, type NodeId } from '../../compose/local/cluster.js';
import type { LoadStats, Ranges } from '../../compose/local/node-agent.js';

const SUBCLASS = 'fsb::soak';
const SAMPLE_MS = 10_000;

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`soak: --${name} needs a positive number\n`);
    process.exit(2);
  }
  return value;
}

const say = (line: string) => process.stdout.write(line + '\n');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const count = (ranges: Ranges) => ranges.reduce((n, [a, b]) => n + b - a + 1, 0);

function rssMB(node: ClusterNode): number | null {
  const pid = node.bridge?.pid;
  if (!pid || !node.bridgeRunning) return null;
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    return Math.round(kb / 102.4) / 10;
  } catch {
    return null;
  }
}

/** Sum of a counter's samples in a Prometheus text, by one label (e.g. cause). */
function byLabel(metrics: string, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const labelValue = new RegExp(`${label}="([^"]*)"`).exec(line)?.[1] ?? '';
    const component = /component="([^"]*)"/.exec(line)?.[1];
    const key = component ? `${component}:${labelValue}` : labelValue;
    out[key] = (out[key] ?? 0) + value;
  }
  return out;
}

interface Fault {
  at: number;
  name: string;
  run: (cluster: LocalCluster) => Promise<void>;
  /** Filled in when it ran: [start, end] in ms since the load started. */
  window?: [number, number];
}

async function main(): Promise<void> {
  const minutes = option('minutes', 10);
  const rate = option('rate', 5_000);
  const durationMs = minutes * 60_000;
  say(`soak: ${minutes} min at ${rate} events/s (${Math.round(rate / 3)}/s from each of ${NODE_IDS.join(', ')}), faults: NATS restart, ESL drop, kill -9 of a bridge`);
  const cluster = await LocalCluster.start({ layout: 'netns', logLevel: 'warn', bindings: `${BINDINGS} ${SUBCLASS}`, peerTimeoutMs: 5_000, peerDownGraceMs: 5_000 });
  if (!cluster.nats) throw new Error('soak needs nats-server (the NATS restart fault and the NATS path)');
  const nats = cluster.nats;
  const victim: NodeId = 'sat2';
  const faults: Fault[] = [
    {
      at: 0.2,
      name: 'NATS server n2 restarted',
      run: async () => nats.servers[1].restart(),
    },
    {
      at: 0.45,
      name: 'hub ESL connection cut',
      run: async (c) => c.node('hub').dropEsl(),
    },
    {
      at: 0.7,
      name: `${victim} bridge killed (SIGKILL) and restarted`,
      run: async (c) => {
        const node = c.node(victim);
        await node.stopBridge('SIGKILL');
        await sleep(3_000);
        node.startBridge();
        await waitReady(node, 120_000);
      },
    },
  ];
  const started = Date.now();
  try {
    await Promise.all(NODE_IDS.map((id) => cluster.node(id).load(rate / 3, SUBCLASS)));
    const rssSeen: Record<NodeId, number[]> = { hub: [], sat1: [], sat2: [] };
    let nextFault = 0;
    let running: Promise<void> | null = null;
    for (let t = SAMPLE_MS; t <= durationMs; t += SAMPLE_MS) {
      await sleep(Math.max(0, started + t - Date.now()));
      const elapsed = Date.now() - started;
      while (nextFault < faults.length && elapsed >= faults[nextFault].at * durationMs && running === null) {
        const fault = faults[nextFault++];
        say(`t=${Math.round(elapsed / 1000)}s fault: ${fault.name}`);
        const from = Date.now() - started;
        running = fault.run(cluster).then(() => {
          fault.window = [from, Date.now() - started];
          running = null;
        });
      }
      const stats = await Promise.all(NODE_IDS.map((id) => cluster.node(id).loadStats()));
      const fired = stats.reduce((n, s) => n + s.fired, 0);
      const received = stats.reduce((n, s) => n + Object.values(s.received).reduce((m, r) => m + r.unique, 0), 0);
      const rss = NODE_IDS.map((id) => {
        const mb = rssMB(cluster.node(id));
        if (mb !== null) rssSeen[id].push(mb);
        return `${id} ${mb ?? '-'}`;
      });
      say(`t=${Math.round(elapsed / 1000)}s rss MB: ${rss.join(', ')} | fired ${fired.toLocaleString('en')} | injected at receivers ${received.toLocaleString('en')}`);
    }
    await running;
    await Promise.all(NODE_IDS.map((id) => cluster.node(id).load(0, SUBCLASS)));
    // Quiet: until the receivers' counts stop moving (the NATS path may still be catching up).
    let last = -1;
    for (let quiet = 0; quiet < 3; ) {
      await sleep(2_000);
      const now = (await Promise.all(NODE_IDS.map((id) => cluster.node(id).loadStats()))).reduce((n, s) => n + Object.values(s.received).reduce((m, r) => m + r.unique + r.duplicates, 0), 0);
      quiet = now === last ? quiet + 1 : 0;
      last = now;
    }
    const stats = new Map<NodeId, LoadStats>();
    for (const id of NODE_IDS) stats.set(id, await cluster.node(id).loadStats());
    const metrics = new Map<NodeId, string>();
    for (const id of NODE_IDS) metrics.set(id, await cluster.node(id).metricsText());
    report(cluster, stats, metrics, faults, rssSeen, Date.now() - started);
  } finally {
    await cluster.dispose();
  }
}

function report(cluster: LocalCluster, stats: Map<NodeId, LoadStats>, metrics: Map<NodeId, string>, faults: Fault[], rss: Record<NodeId, number[]>, elapsedMs: number): void {
  say('');
  say(`faults: ${faults.map((f) => `${f.name} at ${Math.round((f.window?.[0] ?? 0) / 1000)}s-${Math.round((f.window?.[1] ?? 0) / 1000)}s`).join('; ')}`);
  say('rss MB per bridge (first / max / last sample):');
  for (const id of NODE_IDS) {
    const list = rss[id];
    say(`  ${id}: ${list[0] ?? '-'} / ${list.length ? Math.max(...list) : '-'} / ${list.at(-1) ?? '-'}`);
  }
  say('per origin -> receiver: sent (heard by the origin bridge), received, lost, duplicates; events fired while no bridge listened are not sent');
  let totalSent = 0;
  let totalLost = 0;
  let totalDuplicates = 0;
  for (const origin of NODE_IDS) {
    const from = stats.get(origin)!;
    const switchname = cluster.node(origin).spec.switchname;
    const unheard = count(from.unheard);
    const sent = from.fired - unheard;
    say(`  ${origin}: fired ${from.fired.toLocaleString('en')}, not heard ${unheard} (${from.unheard.map(([a, b]) => `${a}-${b}`).join(' ') || 'none'}), sent ${sent.toLocaleString('en')}`);
    for (const receiver of NODE_IDS) {
      if (receiver === origin) continue;
      const got = stats.get(receiver)!.received[switchname] ?? { unique: 0, duplicates: 0, highest: 0, missing: [] };
      // Missing among the sent ones only: what was never heard cannot arrive.
      const unheardSet = (seq: number) => from.unheard.some(([a, b]) => seq >= a && seq <= b);
      const missing: number[] = [];
      for (const [a, b] of got.missing) for (let s = a; s <= b; s++) if (!unheardSet(s)) missing.push(s);
      for (let s = got.highest + 1; s <= from.fired; s++) if (!unheardSet(s)) missing.push(s);
      const lost = missing.length;
      totalSent += sent;
      totalLost += lost;
      totalDuplicates += got.duplicates;
      const gaps = missing.length === 0 ? 0 : missing.filter((s, i) => i === 0 || missing[i - 1] !== s - 1).length;
      say(`    -> ${receiver}: received ${got.unique.toLocaleString('en')}, lost ${lost}${gaps ? ` in ${gaps} gap(s) from seq ${missing[0]}` : ''}, duplicates ${got.duplicates}`);
    }
  }
  say('counted by the bridges (fsb_drops_total by component:cause; the killed bridge counts only since its restart):');
  for (const id of NODE_IDS) {
    const drops = byLabel(metrics.get(id)!, 'fsb_drops_total', 'cause');
    const gaps = byLabel(metrics.get(id)!, 'fsb_sequence_gap_events_total', 'transport');
    say(`  ${id}: drops ${JSON.stringify(drops)}, sequence gaps ${JSON.stringify(gaps)}`);
  }
  say(`soak: ${Math.round(elapsedMs / 1000)} s, sent ${totalSent.toLocaleString('en')} (origin x receiver), lost ${totalLost}, duplicates ${totalDuplicates}`);
  process.exitCode = 0;
}

await main();
