import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { silentLogger } from '../../bridge/observability/logger.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';
import { EslSimulator, type CapturedEvent } from '../support/esl-simulator.js';
import { createLinkedNetns, JsonLineProcess, type LinkedNetns } from '../support/netns.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { busyPercent, describeThreads, machineCpu, onCpus, processCpuMs, round, sleep, SLOWDOWN, spawnNode, startBridgeProcess, threadCpuMs } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * ESL -> multicast + NATS, sustained: the ESL simulator replays the fixture mix
 * (a-plain.raw without its multicast::* events, which a bridge never forwards) as
 * fast as the bridge reads, pre-serialized; one bridge (the CLI, its own process)
 * sends every event to both sinks (bindings ALL). Events/s = events / time from the
 * first write until the last event is both received from the multicast group and
 * stored in the JetStream stream.
 *
 * Loss is counted by Event-Sequence at the receiving side: a multicast socket (its own
 * process, support-sequence-listener.ts) marks each datagram's Event-Sequence in a bitmap; the stream
 * deduplicates by Nats-Msg-Id (Core-UUID:Event-Sequence), so its message count is
 * the number of distinct sequences stored.
 *
 * Baseline (same simulator, same events, also its own process): the bridge's ESL
 * client draining events() with no sinks, i.e. the read + parse ceiling.
 *
 * Must run inside a network namespace (the runner provides one): the listener sits in a
 * second namespace linked to it by a veth pair, and the bridge and the floor send on
 * their end with loopback off (Topology below).
 */
const DRAIN = fileURLToPath(new URL('./support-esl-drain.js', import.meta.url));
const FLOOR = fileURLToPath(new URL('./support-esl-floor.js', import.meta.url));
const GROUP = '239.77.8.8';
/**
 * The bridge as deployed (config/event_bridge.conf.xml): nats/peers lists the cluster, so
 * JetStream does not send bench-a its own events back; bench-b is the hub or satellite
 * at the other end, silent here.
 */
const CLUSTER_NODES = 'bench-a,bench-b';

export function forwardedMix(): CapturedEvent[] {
  return EslSimulator.loadCapture('a-plain.raw').filter((e) => !(e.event.name === 'CUSTOM' && e.event.subclass?.startsWith('multicast::')));
}

const LISTENER = fileURLToPath(new URL('./support-sequence-listener.js', import.meta.url));

/** Wall-clock ms with sub-ms precision, comparable across processes (the listener's times are in it). */
const now = () => performance.timeOrigin + performance.now();

/**
 * How the sender reaches the counting listener. `linked`: the listener sits in another
 * namespace at the far end of a veth pair and the sender sends on its veth with loopback
 * off, TTL 1, as a bridge sends on a NIC: one delivery per datagram, and the sender
 * never hears itself. `loopback` (earlier rounds' topology, kept for comparison): sender
 * and listener share `lo`, TTL 0, loopback on, so every datagram is delivered, inside the
 * sender's own send call, to the listener and also to the sender's own receiver (the
 * bridge's receive worker then reads it and discards it as its own; the floor has none).
 */
interface Topology {
  readonly label: string;
  /** The sender's multicast interface address. */
  readonly iface: string;
  readonly ttl: number;
  readonly loopback: boolean;
  /** Where the listener runs (null: this process's namespace) and the interface it joins on. */
  readonly listenerNetns: string | null;
  readonly listenerIface: string;
}

const LOOPBACK: Topology = { label: 'lo shared, TTL 0, loopback on', iface: '127.0.0.1', ttl: 0, loopback: true, listenerNetns: null, listenerIface: '127.0.0.1' };

function linkedTopology(link: LinkedNetns): Topology {
  return { label: `veth to the listener's namespace, TTL 1, loopback off`, iface: link.localIp, ttl: 1, loopback: false, listenerNetns: link.name, listenerIface: link.peerIp };
}

interface ListenerProgress {
  type: string;
  distinct: number;
  datagrams: number;
  lastAt: number;
  kernelDrops: number;
  receiveBufferBytes: number;
}

/** The counting listener (support-sequence-listener.ts) in its own process, where the topology puts it. */
class SequenceListener {
  private constructor(private readonly process: JsonLineProcess<ListenerProgress>) {}

  static async start(topology: Topology, first: number, count: number, port: number): Promise<SequenceListener> {
    const prefix = topology.listenerNetns === null ? [] : ['ip', 'netns', 'exec', topology.listenerNetns];
    const child = new JsonLineProcess<ListenerProgress>(spawnNode([LISTENER, GROUP, String(port), topology.listenerIface, String(first), String(count)], { stdio: ['pipe', 'pipe', 'inherit'] }, prefix));
    await child.waitFor((r) => r.type === 'ready', 15_000 * SLOWDOWN);
    return new SequenceListener(child);
  }

  private get last(): ListenerProgress | undefined {
    return this.process.reports.findLast((r) => r.type === 'progress');
  }

  get distinct(): number {
    return this.last?.distinct ?? 0;
  }

  get datagrams(): number {
    return this.last?.datagrams ?? 0;
  }

  /** now()-clock ms of the last new sequence. */
  get lastAt(): number {
    return this.last?.lastAt ?? 0;
  }

  get bufferBytes(): number {
    return this.process.reports[0].receiveBufferBytes;
  }

  /** What the kernel dropped on this listener's socket (its buffer was full): loss on the receiving side, not the sender's. */
  get kernelDrops(): number {
    return this.last?.kernelDrops ?? 0;
  }

  close(): Promise<void> {
    return this.process.stop();
  }
}

async function baselineRate(events: CapturedEvent[], count: number): Promise<number> {
  const sim = await EslSimulator.start({ switchname: 'bench-baseline' });
  const drain = new JsonLineProcess(spawnNode([DRAIN, String(sim.port), String(count)], { stdio: ['pipe', 'pipe', 'inherit'] }));
  try {
    await drain.waitFor((r) => r.type === 'ready', 15_000 * SLOWDOWN);
    await sim.waitForSubscribers(1);
    const began = performance.now();
    const done = drain.waitFor((r) => r.type === 'done', 60_000 * SLOWDOWN);
    await sim.replay(events, { loop: true, count });
    await done;
    return count / ((performance.now() - began) / 1000);
  } finally {
    await drain.stop();
    await sim.stop();
  }
}

interface FloorRun {
  rate: number;
  cpuPerEventUs: number;
  threads: string;
  multicastLost: number;
  listenerKernelDrops: number;
}

/** The I/O floor (support-esl-floor.ts) on the same events, simulator and nats-server, verified by Event-Sequence like the bridge. */
async function floorRate(events: CapturedEvent[], count: number, natsUrl: string, port: number, topology: Topology): Promise<FloorRun> {
  const sim = await EslSimulator.start({ switchname: 'bench-floor', firstSequence: 5_000_000 });
  const listener = await SequenceListener.start(topology, sim.sequence, count, port);
  const floor = new JsonLineProcess(
    spawnNode([FLOOR, String(sim.port), String(count), GROUP, String(port), natsUrl, topology.iface, String(topology.ttl), String(topology.loopback)], { stdio: ['pipe', 'pipe', 'inherit'] }),
  );
  try {
    await floor.waitFor((r) => r.type === 'ready', 15_000 * SLOWDOWN);
    await sim.waitForSubscribers(1);
    const pid = floor.child.pid!;
    const cpuBefore = processCpuMs(pid);
    const threadsBefore = threadCpuMs(pid);
    const began = now();
    const done = floor.waitFor((r) => r.type === 'done', 60_000 * SLOWDOWN);
    await sim.replay(events, { loop: true, count });
    await done;
    const ackedAt = now();
    const cpuPerEventUs = ((processCpuMs(pid) - cpuBefore) * 1000) / count;
    const threads = describeThreads(pid, threadsBefore, threadCpuMs(pid), count);
    const deadline = ackedAt + 2_000 * SLOWDOWN;
    while (listener.distinct < count && now() < deadline) await sleep(20);
    const finished = Math.max(ackedAt, listener.lastAt);
    return { rate: count / ((finished - began) / 1000), cpuPerEventUs, threads, multicastLost: count - listener.distinct, listenerKernelDrops: listener.kernelDrops };
  } finally {
    await listener.close();
    await floor.stop();
    await sim.stop();
  }
}

interface BridgeRun {
  rate: number;
  cpuPerEventUs: number;
  threads: string;
  /** Percent of all the machine's cores busy (every process) during the run. */
  machineBusy: number;
  peakRss: number;
  multicastLost: number;
  natsLost: number;
  natsCount: number;
  distinct: number;
  datagrams: number;
  sent: number;
  drops: number;
  multicastSeconds: number;
  natsSeconds: number | null;
  listenerBufferBytes: number;
  listenerKernelDrops: number;
}

/** One bridge (the CLI) forwarding `count` events to both sinks; `cpus` confines it (every thread) to those CPUs. */
async function bridgeRun(events: CapturedEvent[], count: number, nats: NatsServer, port: number, firstSequence: number, cpus: string | undefined, topology: Topology): Promise<BridgeRun> {
  const sim = await EslSimulator.start({ switchname: 'bench-a', firstSequence });
  const listener = await SequenceListener.start(topology, sim.sequence, count, port);
  const bridge = await startBridgeProcess(
    {
      settings: { 'node-name': 'bench-a', cluster: 'bench' },
      esl: { port: String(sim.port) },
      bindings: { multicast: 'ALL', nats: 'ALL' },
      multicast: { enabled: 'true', address: GROUP, port: String(port), interface: topology.iface, ttl: String(topology.ttl), loopback: String(topology.loopback) },
      nats: { enabled: 'true', servers: nats.url, peers: CLUSTER_NODES },
    },
    { prefix: cpus === undefined ? [] : onCpus(cpus) },
  );
  const client = await connectNats({ servers: [nats.url], auth: {}, tls: null }, { logger: silentLogger() });
  try {
    const jsm = await jetstreamManager(client);
    // Each run starts from an empty stream (the stream deduplicates by Core-UUID:Event-Sequence, so its count is the distinct events stored).
    await jsm.streams.purge('FS_EVENTS');
    const stored = async () => (await jsm.streams.info('FS_EVENTS')).state.messages;
    await sim.waitForSubscribers(1);
    const began = now();
    const cpuBefore = bridge.cpuMs();
    const threadsBefore = threadCpuMs(bridge.pid);
    const machineBefore = machineCpu();
    let peakRss = bridge.rss();
    const replay = sim.replay(events, { loop: true, count });
    let natsCount = 0;
    let natsDoneAt = 0;
    let lastProgress = now();
    let lastSeen = -1;
    // Until both sinks have everything, or nothing moved for 2 s (the rest is lost).
    for (;;) {
      await sleep(50);
      peakRss = Math.max(peakRss, bridge.rss());
      natsCount = await stored();
      if (natsCount >= count && natsDoneAt === 0) natsDoneAt = now();
      if (natsCount >= count && listener.distinct >= count) break;
      const progress = natsCount + listener.distinct;
      if (progress !== lastSeen) {
        lastSeen = progress;
        lastProgress = now();
      } else if (now() - lastProgress > 2_000 * SLOWDOWN) break;
    }
    await replay;
    const cpuPerEventUs = ((bridge.cpuMs() - cpuBefore) * 1000) / count;
    const threads = describeThreads(bridge.pid, threadsBefore, threadCpuMs(bridge.pid), count);
    const machineBusy = busyPercent(machineBefore, machineCpu());
    const multicastDoneAt = listener.lastAt;
    const seconds = (Math.max(natsDoneAt || now(), multicastDoneAt) - began) / 1000;
    return {
      rate: count / seconds,
      cpuPerEventUs,
      threads,
      machineBusy,
      peakRss,
      multicastLost: count - listener.distinct,
      natsLost: count - natsCount,
      natsCount,
      distinct: listener.distinct,
      datagrams: listener.datagrams,
      sent: await bridge.metric('fsb_events_out_total', { transport: 'multicast' }),
      drops: await bridge.metric('fsb_drops_total'),
      multicastSeconds: (multicastDoneAt - began) / 1000,
      natsSeconds: natsDoneAt ? (natsDoneAt - began) / 1000 : null,
      listenerBufferBytes: listener.bufferBytes,
      listenerKernelDrops: listener.kernelDrops,
    };
  } finally {
    await listener.close();
    await client.close();
    await bridge.stop();
    await sim.stop();
  }
}

/** The CPU the one-core run is confined to (the highest: the simulator, nats-server and counters float over both). */
const ONE_CPU = String(Math.max(0, availableParallelism() - 1));

function describeRun(run: BridgeRun, label: string): string {
  return (
    `${label}: multicast complete after ${round(run.multicastSeconds)} s, NATS stream complete after ${run.natsSeconds === null ? 'never' : round(run.natsSeconds)} s, ` +
    `bridge CPU ${round(run.cpuPerEventUs, 1)} µs per event (user + system, all its threads: ${run.threads}), the machine's cores ${run.machineBusy}% busy (every process), peak RSS ${Math.round(run.peakRss / 1048576)} MB, ` +
    `multicast ${run.distinct} distinct sequences of ${run.distinct + run.multicastLost} (${run.datagrams} datagrams, bridge counted ${run.sent} sent; the benchmark's listener socket dropped ${run.listenerKernelDrops} for a full buffer), NATS ${run.natsCount} stored, bridge drop counter total ${run.drops}`
  );
}

export const eslToSinks: BenchCase = async ({ quick }) => {
  // FSB_BENCH_EVENTS: another count (fewer under FSB_BENCH_WRAP, where a process runs ~50x slower).
  const count = Number(process.env.FSB_BENCH_EVENTS) || (quick ? 30_000 : 150_000);
  const events = forwardedMix();
  const baseline = await baselineRate(events, count);
  const nats = await startNatsServer();
  const port = 16000 + (process.pid % 1000);
  const link = createLinkedNetns('sinks', GROUP);
  const linked = linkedTopology(link);
  try {
    const one = await bridgeRun(events, count, nats, port, 1_000_000, ONE_CPU, linked);
    const two = await bridgeRun(events, count, nats, port + 2, 3_000_000, undefined, linked);
    const floor = await floorRate(events, count, nats.url, port + 1, linked);
    // Earlier rounds' topology, for comparison (10,000 events: enough to show the difference, short enough for the case's timeout).
    const oldCount = Math.min(count, 10_000);
    const oneOld = await bridgeRun(events, oldCount, nats, port + 3, 7_000_000, ONE_CPU, LOOPBACK);
    const floorOld = await floorRate(events, oldCount, nats.url, port + 4, LOOPBACK);
    const setup =
      `${count} events of the fixture mix (${events.length} distinct, 3.4 KB average, multicast::* excluded) replayed pre-serialized at the simulator's max rate; ` +
      `bindings ALL on both sinks; bridge = \`fs-event-bridge run\` in its own process; nats-server 2.9.10 (file storage), the simulator and the counters float over both cores; ` +
      `multicast: ${linked.label} (as a bridge sends on a NIC: the listener's namespace is the LAN, and the sender never hears its own datagrams; earlier rounds shared lo with TTL 0 and loopback on, where every datagram was also delivered to the bridge's own receiver inside its send call); listener SO_RCVBUF ${one.listenerBufferBytes} bytes`;
    const old =
      `In earlier rounds' topology (${LOOPBACK.label}), same run, ${oldCount} events: bridge one core ${Math.round(oneOld.rate)} events/s, ${round(oneOld.cpuPerEventUs, 1)} µs per event (${oneOld.threads}), ` +
      `floor ${Math.round(floorOld.rate)} events/s, ${round(floorOld.cpuPerEventUs, 1)} µs per event (${floorOld.threads}): ratio ${round(oneOld.cpuPerEventUs / floorOld.cpuPerEventUs)}; lost ${oneOld.multicastLost + oneOld.natsLost} and ${floorOld.multicastLost}.`;
    const oneCore = `one core (bridge confined to CPU ${ONE_CPU} by taskset, all its threads)`;
    const twoCores = `two cores (bridge not confined)`;
    const lostOne = one.multicastLost + one.natsLost;
    const results: BenchResult[] = [
      {
        case: 'ESL -> multicast + NATS, sustained, one core',
        value: Math.round(one.rate),
        unit: 'events/s',
        baseline: 'raw ESL read, no sinks (EslClient draining events())',
        baseline_value: Math.round(baseline),
        ratio: round(one.rate / baseline),
        target: 25_000,
        met: one.rate >= 25_000 && lostOne === 0,
        notes: `higher is better; target >= 25000 events/s on one core with 0 lost. ${describeRun(one, oneCore)}. ${setup}`,
      },
      {
        case: 'ESL -> multicast + NATS, lost (by Event-Sequence), one core',
        value: lostOne,
        unit: 'events lost',
        baseline: 'events fired',
        baseline_value: count,
        ratio: round(lostOne / count, 6),
        target: 0,
        met: lostOne === 0,
        notes: `lower is better; multicast lost ${one.multicastLost} (of which the benchmark's own listener socket dropped ${one.listenerKernelDrops} for a full buffer: it shares the simulator's process), NATS lost ${one.natsLost}; bridge drop counter total ${one.drops}`,
      },
      {
        case: 'ESL -> multicast + NATS, bridge CPU per event vs the I/O floor',
        value: round(one.cpuPerEventUs, 1),
        unit: 'µs CPU per event',
        baseline: 'I/O floor (support-esl-floor.ts), CPU per event',
        baseline_value: round(floor.cpuPerEventUs, 1),
        ratio: round(one.cpuPerEventUs / floor.cpuPerEventUs),
        target: 1.3,
        met: one.cpuPerEventUs <= 1.3 * floor.cpuPerEventUs,
        notes:
          `lower is better; target: ratio <= 1.3 (the target column is the ratio). The bridge's CPU time (user + system, every thread, /proc/PID/stat) per event in the one-core run; ` +
          `one-core run ${one.threads}; floor ${floor.threads}; in the two-core run ${round(two.cpuPerEventUs, 1)} µs. CPU time does not grow when other processes take the cores, so this is the figure that compares across runs on this shared machine. ${old}`,
      },
      {
        case: 'ESL -> multicast + NATS, two cores vs one core',
        value: Math.round(two.rate),
        unit: 'events/s',
        baseline: 'the same bridge confined to one core (same run)',
        baseline_value: Math.round(one.rate),
        ratio: round(two.rate / one.rate),
        target: 1.7,
        met: two.rate >= 1.7 * one.rate && two.multicastLost + two.natsLost === 0,
        notes:
          `higher is better; target: ratio >= 1.7 (the target column is the ratio) with 0 lost. ${describeRun(two, twoCores)}. ` +
          `On this 2-core machine the second core is also where nats-server, the simulator and the counters run, so the ratio is a lower bound of what a bigger host gives.`,
      },
      {
        case: 'ESL -> multicast + NATS, I/O floor on one thread',
        value: Math.round(floor.rate),
        unit: 'events/s',
        baseline: 'raw ESL read, no sinks (EslClient draining events())',
        baseline_value: Math.round(baseline),
        ratio: round(floor.rate / baseline),
        target: 25_000,
        met: floor.rate >= 25_000 && floor.multicastLost === 0,
        notes:
          `higher is better; not the bridge: the least any bridge on Node + node:dgram + nats.js must do per event (test/bench/support-esl-floor.ts): ESL read and parse, one datagram (FreeSWITCH's header block reused) and one JetStream publish of the same bytes with its PubAck awaited, nothing else (no pipeline, dedup, metrics or resend buffer). ` +
          `${round(floor.cpuPerEventUs, 1)} µs of CPU per event (all threads); ${floor.multicastLost} datagrams missing (the listener socket dropped ${floor.listenerKernelDrops} for a full buffer). Same simulator, events and nats-server as the bridge's runs, just after them; not confined.`,
      },
    ];
    return results;
  } finally {
    await nats.dispose();
    link.cleanup();
  }
};
