import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { PeerTracker } from '../../bridge/pipeline/peers.js';
import { LOOP_GUARD_HEADER, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { SEQ_HEADER, decodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { MulticastSink } from '../../bridge/transports/multicast/sink.js';
import type { MulticastSocket, SendCallback } from '../../bridge/transports/multicast/socket.js';
import { MulticastSource } from '../../bridge/transports/multicast/source.js';
import { datagramFixtures, fixturePath } from '../support/fixtures.js';

const PSK = Buffer.from(JSON.parse(readFileSync(fixturePath('multicast-psk', 'index.json'), 'utf8')).psk as string);

/** Stands in for the dgram adapter: records what the sink sends, lets a test fail sends. */
class FakeSocket {
  sent: Buffer[] = [];
  failNext = false;
  /** Own datagrams the (real) receiver worker would have skipped. */
  skipped = 0;

  acquire(): Promise<void> {
    return Promise.resolve();
  }
  release(): Promise<void> {
    return Promise.resolve();
  }
  listener: (datagram: Buffer) => void = () => {};
  onDropped: (count: number) => void = () => {};
  setListener(listener: (datagram: Buffer) => void, onDropped: (count: number) => void): void {
    this.listener = listener;
    this.onDropped = onDropped;
  }
  send(datagram: Buffer, callback: SendCallback): void {
    if (this.failNext) {
      this.failNext = false;
      callback(new Error('ENETUNREACH'));
      return;
    }
    this.sent.push(datagram);
    callback(null);
  }
  ownSkipped(): number {
    return this.skipped;
  }
  kernelDrops(): number | null {
    return null;
  }
}

async function value(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  return data.values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
}

function local(event: FsEvent): BridgeEvent {
  return { event, origin: { transport: 'esl', node: 'fs-a', receivedAt: 0 } };
}

function setup(options: { psk?: Buffer | null; bindings?: string; nodeName?: string } = {}) {
  const metrics = new Metrics();
  const socket = new FakeSocket();
  const peers = new PeerTracker(() => {});
  const common = { psk: options.psk ?? null, maxDatagramBytes: 65_507, metrics, logger: silentLogger() };
  const sink = new MulticastSink(socket as unknown as MulticastSocket, { ...common, nodeName: 'fs-a', bindings: Bindings.parse(options.bindings ?? 'ALL') });
  const source = new MulticastSource(socket as unknown as MulticastSocket, { ...common, nodeName: options.nodeName ?? 'fs-b', gaps: peers });
  const received: BridgeEvent[] = [];
  return { metrics, socket, sink, source, peers, received, start: () => source.start((item) => received.push(item)) };
}

describe('multicast send path', () => {
  it('sends matching events with Multicast-Sender last and a per-sender counter, and skips the loop-rule events', async () => {
    const { sink, socket, metrics } = setup({ bindings: 'HEARTBEAT PRESENCE_IN LOG CUSTOM sofia::register multicast::event multicast::peerup multicast::peerdown' });
    sink.deliver(local(FsEvent.create('HEARTBEAT').add('Core-UUID', 'u')));
    sink.deliver(local(FsEvent.create('CHANNEL_CREATE')));
    sink.deliver(local(FsEvent.create('LOG')));
    sink.deliver(local(FsEvent.create('CUSTOM', 'multicast::event')));
    sink.deliver(local(FsEvent.create('CUSTOM', 'multicast::peerup')));
    sink.deliver(local(FsEvent.create('CUSTOM', 'multicast::peerdown')));
    sink.deliver(local(FsEvent.create('PRESENCE_IN').add(LOOP_GUARD_HEADER, 'fs-a')));
    sink.deliver({ event: FsEvent.create('PRESENCE_IN'), origin: { transport: 'multicast', node: 'fs-c', receivedAt: 0 } });
    sink.deliver(local(FsEvent.create('CUSTOM', 'sofia::register').add('status', 'Registered(UDP)')));
    expect(socket.sent).toHaveLength(2);
    const [first, second] = socket.sent.map((d) => decodeDatagram(d, null).event);
    expect(first.headers.slice(-2).map(([n]) => n)).toEqual([SEQ_HEADER, 'Multicast-Sender']);
    expect(first.get('Multicast-Sender')).toBe('fs-a');
    const [stream, n1] = first.get(SEQ_HEADER)!.split(':');
    expect(second.get(SEQ_HEADER)).toBe(`${stream}:${Number(n1) + 1}`);
    expect(await value(metrics, 'fsb_events_out_total', { transport: 'multicast' })).toBe(2);
    expect(await value(metrics, 'fsb_multicast_loop_skipped_total')).toBe(6);
  });

  it('counts too-large events and send errors as drops; new bindings and psk apply at once', async () => {
    const { sink, socket, metrics } = setup({ bindings: 'CUSTOM big' });
    sink.deliver(local(new FsEvent([['Event-Name', 'CUSTOM'], ['Event-Subclass', 'big']], 'x'.repeat(70_000))));
    socket.failNext = true;
    sink.deliver(local(FsEvent.create('CUSTOM', 'big')));
    expect(await value(metrics, 'fsb_drops_total', { component: 'multicast-send', cause: 'too_large' })).toBe(1);
    expect(await value(metrics, 'fsb_drops_total', { component: 'multicast-send', cause: 'send_error' })).toBe(1);
    sink.deliver(local(FsEvent.create('HEARTBEAT')));
    expect(socket.sent).toHaveLength(0);
    sink.setBindings(Bindings.parse('HEARTBEAT'));
    sink.setPsk(PSK);
    sink.deliver(local(FsEvent.create('HEARTBEAT')));
    expect(decodeDatagram(socket.sent[0], PSK).mode).toBe('psk');
  });
});

describe('multicast receive path', () => {
  it('emits the original event from each legacy datagram with its origin, counted per sender', async () => {
    const { source, received, metrics, start, peers } = setup({ nodeName: 'fs-x' });
    await start();
    const fixtures = datagramFixtures('multicast-plain');
    for (const { bin } of fixtures) source.process(bin);
    expect(received).toHaveLength(fixtures.length);
    expect(received[0].event.headers).toEqual(fixtures[0].decoded.headers);
    expect(received[0].origin.transport).toBe('multicast');
    expect(received[0].origin.node).toBe('fs-b');
    const fromA = fixtures.filter((f) => f.decoded.headers.some(([n, v]) => n === 'Multicast-Sender' && v === 'fs-a')).length;
    expect(fromA).toBeGreaterThan(0);
    expect(await value(metrics, 'fsb_events_in_total', { transport: 'multicast', node: 'fs-a' })).toBe(fromA);
    // Legacy senders: Event-Sequence gaps are only an upper bound (they skip unbound events), never "lost".
    expect(await value(metrics, 'fsb_multicast_legacy_sequence_gap_total')).toBeGreaterThan(0);
    expect(await value(metrics, 'fsb_sequence_gap_events_total')).toBe(0);
    // Datagrams without the bridge's sequence header: a mod_event_multicast node (the board marks its rows),
    // whose loss `peers` says is unknown rather than "up to N missed".
    expect(peers.list().find((p) => p.name === 'fs-a')).toMatchObject({ legacy: true, lossKnown: false, gapsLost: 0 });
  });

  it('ignores its own datagrams (counted)', async () => {
    const { source, received, metrics, start } = setup({ nodeName: 'fs-b' });
    await start();
    const fixtures = datagramFixtures('multicast-plain');
    for (const { bin } of fixtures) source.process(bin);
    const own = fixtures.filter((f) => f.decoded.headers.some(([n, v]) => n === 'Multicast-Sender' && v === 'fs-b')).length;
    expect(received).toHaveLength(fixtures.length - own);
    expect(await value(metrics, 'fsb_multicast_own_datagrams_total')).toBe(own);
  });

  it('counts the own datagrams the receiver worker skipped before the hand-off', async () => {
    const { source, socket, metrics, start } = setup({ nodeName: 'fs-b' });
    await start();
    socket.skipped = 5;
    expect(await value(metrics, 'fsb_multicast_own_datagrams_total')).toBe(5);
    source.process(datagramFixtures('multicast-plain').find((f) => f.decoded.headers.some(([n, v]) => n === 'Multicast-Sender' && v === 'fs-b'))!.bin);
    socket.skipped = 7;
    expect(await value(metrics, 'fsb_multicast_own_datagrams_total')).toBe(8);
  });

  it('drops wrong-psk, plaintext-with-psk and garbage datagrams, counted per cause, emitting nothing', async () => {
    const { source, received, metrics, start } = setup({ psk: Buffer.from('not-the-psk'), nodeName: 'fs-x' });
    await start();
    const encrypted = datagramFixtures('multicast-psk');
    for (const { bin } of encrypted) source.process(bin);
    source.process(datagramFixtures('multicast-plain')[0].bin);
    source.process(Buffer.alloc(100));
    expect(received).toHaveLength(0);
    const drops = (cause: string) => value(metrics, 'fsb_drops_total', { component: 'multicast-receive', cause });
    expect(await drops('bad_psk')).toBe(encrypted.length);
    expect(await drops('plaintext_with_psk')).toBe(1);
    expect(await drops('too_short')).toBe(1);
    source.setPsk(PSK);
    for (const { bin } of encrypted) source.process(bin);
    expect(received).toHaveLength(encrypted.length);
  });

  it('decodes what the socket hands over, in order, and counts hand-off drops as queue_full', async () => {
    const metrics = new Metrics();
    const socket = new FakeSocket();
    const source = new MulticastSource(socket as unknown as MulticastSocket, { nodeName: 'fs-x', psk: null, maxDatagramBytes: 65_507, metrics, logger: silentLogger() });
    const received: BridgeEvent[] = [];
    await source.start((item) => received.push(item));
    const fixtures = datagramFixtures('multicast-plain').slice(0, 4);
    for (const { bin } of fixtures) socket.listener(bin);
    socket.onDropped(7);
    expect(received.map((r) => r.event.headers)).toEqual(fixtures.map((f) => f.decoded.headers));
    expect(await value(metrics, 'fsb_drops_total', { component: 'multicast-receive', cause: 'queue_full' })).toBe(7);
    await source.stop();
    socket.listener(fixtures[0].bin);
    expect(received).toHaveLength(4);
  });

  it('counts exact loss from the bridge counter and strips the counter header', async () => {
    const sender = setup({ bindings: 'PRESENCE_IN' });
    const receiver = setup({ nodeName: 'fs-b' });
    await receiver.start();
    for (let i = 1; i <= 10; i++) {
      sender.sink.deliver(local(FsEvent.create('PRESENCE_IN').add('Core-UUID', 'u').add('Event-Sequence', String(i * 7))));
    }
    const lost = new Set([2, 5, 6]);
    sender.socket.sent.forEach((datagram, i) => {
      if (!lost.has(i)) receiver.source.process(datagram);
    });
    expect(receiver.received).toHaveLength(7);
    expect(receiver.received[0].event.has(SEQ_HEADER)).toBe(false);
    expect(await value(receiver.metrics, 'fsb_sequence_gap_events_total', { transport: 'multicast', node: 'fs-a' })).toBe(3);
    // Event-Sequence jumps by 7 each time, but a bridge sender's exact counter wins over it.
    expect(await value(receiver.metrics, 'fsb_multicast_legacy_sequence_gap_total')).toBe(0);
    expect(receiver.peers.list()[0]).toMatchObject({ name: 'fs-a', gapsLost: 3, lossKnown: true, gapsUpperBound: 0, legacy: false });
  });
});
