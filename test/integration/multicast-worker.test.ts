import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { createNetns, JsonLineProcess, nodeInNetns, type Netns } from '../support/netns.js';
import { CHILD_START_MS, CHILD_TEST_MS } from '../support/wait.js';
import type { NodeProcessConfig } from './multicast-node.js';

/**
 * The receiver worker keeps draining the socket while the main thread is blocked: what
 * exceeds the bounded hand-off is counted as queue_full, nothing is lost silently, and
 * what is handed over arrives in order.
 */
const NODE_SCRIPT = fileURLToPath(new URL('./multicast-node.ts', import.meta.url));
const QUEUE = 500;

type Report = { type: string; [key: string]: unknown };
type Stats = { received: number; own: number; lost: number; sequenceGaps: number; outOfOrder: number; drops: Record<string, number>; receiveBufferBytes: number; netnsRcvbufErrors: number | null };

let netns: Netns;
const nodes: JsonLineProcess<Report>[] = [];

beforeAll(() => {
  netns = createNetns('mcw');
});
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  netns?.cleanup();
});

function start(nodeName: string, extra: Partial<NodeProcessConfig> = {}): JsonLineProcess<Report> {
  const config: NodeProcessConfig = { nodeName, group: '239.77.5.5', port: 17000 + (process.pid % 1000), interface: '127.0.0.1', psk: null, bindings: 'PRESENCE_IN', ttl: 0, loopback: true, report: 'count', ...extra };
  const node = new JsonLineProcess<Report>(nodeInNetns(netns.name, NODE_SCRIPT, [JSON.stringify(config)]));
  nodes.push(node);
  return node;
}

async function statsOnce(node: JsonLineProcess<Report>): Promise<Stats> {
  return (await node.request({ cmd: 'stats' }, 'stats')) as unknown as Stats;
}

async function statsWhen(node: JsonLineProcess<Report>, done: (s: Stats) => boolean): Promise<Stats> {
  const deadline = Date.now() + 10_000;
  let s = await statsOnce(node);
  while (!done(s) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    s = await statsOnce(node);
  }
  return s;
}

describe('multicast receiver worker', { timeout: CHILD_TEST_MS }, () => {
  it('hands datagrams over in order, and counts queue_full drops while the main thread is blocked (delivered + dropped == sent)', async () => {
    const receiver = start('receiver', { receiveQueueDatagrams: QUEUE });
    const sender = start('sender');
    await Promise.all([receiver.waitFor((r) => r.type === 'ready', CHILD_START_MS), sender.waitFor((r) => r.type === 'ready', CHILD_START_MS)]);
    const queueFull = (s: Stats) => s.drops['multicast-receive:queue_full'] ?? 0;

    // Many batches, main thread free and each round within the bound: everything in order, nothing dropped.
    let s = await statsOnce(receiver);
    for (let round = 1; round <= 10; round++) {
      await sender.request({ cmd: 'send', name: 'PRESENCE_IN', count: QUEUE - 200 }, 'sent');
      s = await statsWhen(receiver, (x) => x.received + queueFull(x) >= round * (QUEUE - 200));
    }
    expect(s).toMatchObject({ received: 3_000, outOfOrder: 0, sequenceGaps: 0, lost: 0 });
    expect(queueFull(s)).toBe(0);

    // Main thread blocked for 1.5 s while 3,000 more arrive: the worker hands over QUEUE and counts the rest.
    const blocking = receiver.request({ cmd: 'block', ms: 1_500 }, 'blocking');
    await blocking;
    await sender.request({ cmd: 'send', name: 'PRESENCE_IN', count: 3_000 }, 'sent');
    await receiver.waitFor((r) => r.type === 'unblocked', 5_000);
    // Once the main thread has taken what was handed over, one more datagram, so the
    // receiver also sees the gap the drops left (sent earlier, it could meet a still-full queue).
    await statsWhen(receiver, (x) => x.received >= 3_000 + QUEUE);
    await sender.request({ cmd: 'send', name: 'PRESENCE_IN', count: 1 }, 'sent');
    const sent = 6_001;
    s = await statsWhen(receiver, (x) => x.received + queueFull(x) >= sent);
    expect(queueFull(s)).toBe(3_000 - QUEUE);
    expect(s.received + queueFull(s)).toBe(sent);
    expect(s.received).toBe(3_000 + QUEUE + 1);
    expect(s.outOfOrder).toBe(0);
    // The drops show up as Event-Sequence gaps and in the transport's own loss counter alike.
    expect(s.sequenceGaps).toBe(3_000 - QUEUE);
    expect(s.lost).toBe(3_000 - QUEUE);
    // The sender hears every one of its own datagrams back (loopback on) and counts them, though its worker skips them before the hand-off.
    const own = await statsWhen(sender, (x) => x.own >= sent);
    expect(own.own).toBe(sent);
    expect(own.received).toBe(0);
  });

  it('counts what the kernel dropped for a full receive buffer as kernel_rcvbuf (delivered + dropped == sent, the drops are the gaps)', async () => {
    const port = 17000 + (process.pid % 1000) + 1;
    // The smallest buffer the kernel grants (it doubles the request and has a floor): a few datagrams.
    const receiver = start('small-buffer', { port, receiveBufferBytes: 1024 });
    const sender = start('flooder', { port });
    await Promise.all([receiver.waitFor((r) => r.type === 'ready', CHILD_START_MS), sender.waitFor((r) => r.type === 'ready', CHILD_START_MS)]);
    const kernel = (s: Stats) => s.drops['multicast-receive:kernel_rcvbuf'] ?? 0;
    const queueFull = (s: Stats) => s.drops['multicast-receive:queue_full'] ?? 0;
    const accounted = (s: Stats) => s.received + kernel(s) + queueFull(s);
    // Bursts until the kernel has dropped some (a burst of 2,000 into a few-KB buffer nearly always does).
    let sent = 0;
    let s = await statsOnce(receiver);
    for (let burst = 0; burst < 20 && kernel(s) === 0; burst++) {
      await sender.request({ cmd: 'send', name: 'PRESENCE_IN', count: 2_000 }, 'sent');
      sent += 2_000;
      s = await statsWhen(receiver, (x) => accounted(x) >= sent);
    }
    // One more datagram once the buffer has drained, so the receiver also sees the gap the last drops left.
    await sender.request({ cmd: 'send', name: 'PRESENCE_IN', count: 1 }, 'sent');
    sent += 1;
    s = await statsWhen(receiver, (x) => accounted(x) >= sent && x.received + x.lost >= sent);
    expect(kernel(s)).toBeGreaterThan(0);
    expect(accounted(s)).toBe(sent);
    // Exact loss by the sender's datagram counter is what was counted as dropped.
    expect(s.lost).toBe(kernel(s) + queueFull(s));
    // The namespace-wide kernel counter saw at least ours.
    expect(s.netnsRcvbufErrors).toBeGreaterThanOrEqual(kernel(s));
  });
});
