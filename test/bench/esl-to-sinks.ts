import dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { silentLogger } from '../../bridge/observability/logger.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';
import { EslSimulator, type CapturedEvent } from '../support/esl-simulator.js';
import { JsonLineProcess } from '../support/netns.js';
import { startNatsServer } from '../support/nats-server.js';
import { processCpuMs, round, sleep, SLOWDOWN, spawnNode, startBridgeProcess } from './support-processes.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * ESL -> multicast + NATS, sustained: the ESL simulator replays the fixture mix
 * (a-plain.raw without its multicast::* events, which a bridge never forwards) as
 * fast as the bridge reads, pre-serialized; one bridge (the CLI, its own process)
 * sends every event to both sinks (bindings ALL). Events/s = events / time from the
 * first write until the last event is both received from the multicast group and
 * stored in the JetStream stream.
 *
 * Loss is counted by Event-Sequence at the receiving side: a multicast socket in the
 * same namespace marks each datagram's Event-Sequence in a bitmap; the stream
 * deduplicates by Nats-Msg-Id (Core-UUID:Event-Sequence), so its message count is
 * the number of distinct sequences stored.
 *
 * Baseline (same simulator, same events, also its own process): the bridge's ESL
 * client draining events() with no sinks, i.e. the read + parse ceiling.
 *
 * Must run inside a network namespace (the runner provides one): the bridge sends
 * with TTL 0 on 127.0.0.1 with loopback on, so the listener here hears it.
 */
const DRAIN = fileURLToPath(new URL('./support-esl-drain.js', import.meta.url));
const FLOOR = fileURLToPath(new URL('./support-esl-floor.js', import.meta.url));
const GROUP = '239.77.8.8';

export function forwardedMix(): CapturedEvent[] {
  return EslSimulator.loadCapture('a-plain.raw').filter((e) => !(e.event.name === 'CUSTOM' && e.event.subclass?.startsWith('multicast::')));
}

const SEQUENCE = Buffer.from('\nEvent-Sequence: ');

/** Marks Event-Sequence numbers seen in datagrams, in [first, first + count). */
class SequenceListener {
  readonly seen: Uint8Array;
  distinct = 0;
  datagrams = 0;
  lastAt = 0;
  private readonly socket: dgram.Socket;

  constructor(
    private readonly first: number,
    count: number,
    port: number,
  ) {
    this.seen = new Uint8Array(count);
    this.socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 4 * 1024 * 1024 });
    this.socket.on('message', (datagram) => this.onDatagram(datagram));
    this.socket.bind(port, () => this.socket.addMembership(GROUP, '127.0.0.1'));
  }

  get bufferBytes(): number {
    return this.socket.getRecvBufferSize();
  }

  private onDatagram(datagram: Buffer): void {
    this.datagrams++;
    const at = datagram.indexOf(SEQUENCE);
    if (at < 0) return;
    let n = 0;
    for (let i = at + SEQUENCE.length; i < datagram.length; i++) {
      const digit = datagram[i] - 48;
      if (digit < 0 || digit > 9) break;
      n = n * 10 + digit;
    }
    const slot = n - this.first;
    if (slot >= 0 && slot < this.seen.length && this.seen[slot] === 0) {
      this.seen[slot] = 1;
      this.distinct++;
      this.lastAt = performance.now();
    }
  }

  close(): void {
    this.socket.close();
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
  multicastLost: number;
}

/** The I/O floor (support-esl-floor.ts) on the same events, simulator and nats-server, verified by Event-Sequence like the bridge. */
async function floorRate(events: CapturedEvent[], count: number, natsUrl: string, port: number): Promise<FloorRun> {
  const sim = await EslSimulator.start({ switchname: 'bench-floor', firstSequence: 5_000_000 });
  const listener = new SequenceListener(sim.sequence, count, port);
  const floor = new JsonLineProcess(spawnNode([FLOOR, String(sim.port), String(count), GROUP, String(port), natsUrl], { stdio: ['pipe', 'pipe', 'inherit'] }));
  try {
    await floor.waitFor((r) => r.type === 'ready', 15_000 * SLOWDOWN);
    await sim.waitForSubscribers(1);
    const cpuBefore = processCpuMs(floor.child.pid!);
    const began = performance.now();
    const done = floor.waitFor((r) => r.type === 'done', 60_000 * SLOWDOWN);
    await sim.replay(events, { loop: true, count });
    await done;
    const ackedAt = performance.now();
    const cpuPerEventUs = ((processCpuMs(floor.child.pid!) - cpuBefore) * 1000) / count;
    const deadline = ackedAt + 2_000 * SLOWDOWN;
    while (listener.distinct < count && performance.now() < deadline) await sleep(20);
    const finished = Math.max(ackedAt, listener.lastAt);
    return { rate: count / ((finished - began) / 1000), cpuPerEventUs, multicastLost: count - listener.distinct };
  } finally {
    listener.close();
    await floor.stop();
    await sim.stop();
  }
}

export const eslToSinks: BenchCase = async ({ quick }) => {
  // FSB_BENCH_EVENTS: another count (fewer under FSB_BENCH_WRAP, where a process runs ~50x slower).
  const count = Number(process.env.FSB_BENCH_EVENTS) || (quick ? 30_000 : 150_000);
  const events = forwardedMix();
  const baseline = await baselineRate(events, count);

  const nats = await startNatsServer();
  const sim = await EslSimulator.start({ switchname: 'bench-a', firstSequence: 1_000_000 });
  const port = 16000 + (process.pid % 1000);
  const listener = new SequenceListener(sim.sequence, count, port);
  const bridge = await startBridgeProcess({
    settings: { 'node-name': 'bench-a', cluster: 'bench' },
    esl: { port: String(sim.port) },
    bindings: { multicast: 'ALL', nats: 'ALL' },
    multicast: { enabled: 'true', address: GROUP, port: String(port), interface: '127.0.0.1', ttl: '0', loopback: 'true' },
    nats: { enabled: 'true', servers: nats.url },
  });
  const client = await connectNats({ servers: [nats.url], auth: {}, tls: null }, { logger: silentLogger() });
  try {
    const jsm = await jetstreamManager(client);
    const stored = async () => (await jsm.streams.info('FS_EVENTS')).state.messages;
    await sim.waitForSubscribers(1);
    const began = performance.now();
    const cpuBefore = bridge.cpuMs();
    let peakRss = bridge.rss();
    const replay = sim.replay(events, { loop: true, count });
    let natsCount = 0;
    let natsDoneAt = 0;
    let lastProgress = performance.now();
    let lastSeen = -1;
    // Until both sinks have everything, or nothing moved for 2 s (the rest is lost).
    for (;;) {
      await sleep(50);
      peakRss = Math.max(peakRss, bridge.rss());
      natsCount = await stored();
      if (natsCount >= count && natsDoneAt === 0) natsDoneAt = performance.now();
      if (natsCount >= count && listener.distinct >= count) break;
      const progress = natsCount + listener.distinct;
      if (progress !== lastSeen) {
        lastSeen = progress;
        lastProgress = performance.now();
      } else if (performance.now() - lastProgress > 2_000 * SLOWDOWN) break;
    }
    await replay;
    const cpuPerEventUs = ((bridge.cpuMs() - cpuBefore) * 1000) / count;
    const multicastDoneAt = listener.lastAt;
    const seconds = (Math.max(natsDoneAt || performance.now(), multicastDoneAt) - began) / 1000;
    const rate = count / seconds;
    const multicastLost = count - listener.distinct;
    const natsLost = count - natsCount;
    const sent = await bridge.metric('fsb_events_out_total', { transport: 'multicast' });
    const drops = await bridge.metric('fsb_drops_total');
    const setup =
      `${count} events of the fixture mix (${events.length} distinct, 3.4 KB average, multicast::* excluded) replayed pre-serialized at the simulator's max rate; ` +
      `bindings ALL on both sinks; bridge = \`fs-event-bridge run\` in its own process (one JS thread), nats-server 2.9.10 (file storage) and the simulator + counters share the second core; ` +
      `multicast TTL 0 on 127.0.0.1 with loopback on (the bridge also hears and discards its own datagrams); listener SO_RCVBUF ${listener.bufferBytes} bytes`;
    const floor = await floorRate(events, count, nats.url, port + 1);
    const results: BenchResult[] = [
      {
        case: 'ESL -> multicast + NATS, sustained',
        value: Math.round(rate),
        unit: 'events/s',
        baseline: 'raw ESL read, no sinks (EslClient draining events())',
        baseline_value: Math.round(baseline),
        ratio: round(rate / baseline),
        target: 30_000,
        met: rate >= 30_000 && multicastLost === 0 && natsLost === 0,
        notes:
          `higher is better; target >= 30000 events/s with 0 lost. Multicast complete after ${round((multicastDoneAt - began) / 1000)} s, NATS stream complete after ${natsDoneAt ? round((natsDoneAt - began) / 1000) : 'never'} s; ` +
          `bridge peak RSS ${Math.round(peakRss / 1048576)} MB; bridge CPU time ${round(cpuPerEventUs, 1)} µs per event (user + system, all its threads: independent of what else runs on the machine). ${setup}`,
      },
      {
        case: 'ESL -> multicast + NATS, lost (by Event-Sequence)',
        value: multicastLost + natsLost,
        unit: 'events lost',
        baseline: 'events fired',
        baseline_value: count,
        ratio: round((multicastLost + natsLost) / count, 6),
        target: 0,
        met: multicastLost === 0 && natsLost === 0,
        notes: `lower is better; multicast: ${listener.distinct} distinct sequences received of ${count} (${listener.datagrams} datagrams, bridge counted ${sent} sent), NATS: ${natsCount} stored of ${count}; bridge drop counter total ${drops}`,
      },
      {
        case: 'ESL -> multicast + NATS, I/O floor on one thread',
        value: Math.round(floor.rate),
        unit: 'events/s',
        baseline: 'raw ESL read, no sinks (EslClient draining events())',
        baseline_value: Math.round(baseline),
        ratio: round(floor.rate / baseline),
        target: 30_000,
        met: floor.rate >= 30_000 && floor.multicastLost === 0,
        notes:
          `higher is better; not the bridge: the least any bridge on Node + node:dgram + nats.js must do per event (test/bench/support-esl-floor.ts): ESL read and parse, one datagram (FreeSWITCH's header block reused) and one JetStream publish of the same bytes with its PubAck awaited, nothing else (no JSON, pipeline, dedup, metrics or resend buffer). ` +
          `${round(floor.cpuPerEventUs, 1)} µs of CPU per event (all threads) against the bridge's ${round(cpuPerEventUs, 1)}; ${floor.multicastLost} datagrams missing. Same simulator, events and nats-server as the bridge's run, just after it.`,
      },
    ];
    return results;
  } finally {
    listener.close();
    await client.close();
    await bridge.stop();
    await sim.stop();
    await nats.dispose();
  }
};
