import { describe, expect, it } from 'vitest';
import { HandOffReader, HandOffWriter, type HandOffLimits, type HandOffMessage } from '../../bridge/transports/multicast/hand-off.js';
import { handOffWriterSource, receiverWorkerSource } from '../../bridge/transports/multicast/receiver-worker.js';

/**
 * The hand-off between the receiver worker and the main thread, in one thread: the
 * writer is built from the same source text the worker evaluates (so these tests also
 * prove that text is self-contained), messages travel through structuredClone with
 * their buffers transferred, as postMessage does.
 */
const Writer = new Function(`return (${handOffWriterSource()});`)() as typeof HandOffWriter;

function pair(limits: Partial<HandOffLimits> = {}) {
  const shared = new Int32Array(new SharedArrayBuffer(HandOffWriter.SHARED_SLOTS * 4));
  const posted: HandOffMessage[] = [];
  const writer = new Writer(shared, { maxDatagrams: 1_000, maxBytes: 1 << 20, stagingBytes: 4_096, ...limits }, (message, transfer) => {
    posted.push(structuredClone(message, { transfer }));
  });
  const reader = new HandOffReader(shared);
  const received: { text: string; address: string; port: number; size: number }[] = [];
  let dropped = 0;
  reader.listener = (datagram, from) => received.push({ text: datagram.toString('latin1'), address: from.address, port: from.port, size: from.size });
  reader.onDropped = (count) => (dropped += count);
  const deliverAll = () => posted.splice(0).forEach((m) => reader.receive(m));
  return { shared, writer, reader, posted, received, deliverAll, dropped: () => dropped };
}

const datagram = (i: number, size = 100) => Buffer.from(`#${i}:`.padEnd(size, 'x'), 'latin1');

describe('multicast receiver hand-off', () => {
  it('delivers datagrams in order with sender address and port, across batches and a datagram larger than the staging buffer', () => {
    const { writer, posted, received, deliverAll, shared } = pair();
    const sent: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const d = datagram(i, i === 77 ? 10_000 : 50 + (i % 300));
      sent.push(d);
      expect(writer.append(d, i % 2 ? '10.200.0.1' : '192.168.255.254', 4242 + (i % 3))).toBe(true);
      if (i % 30 === 0) writer.flush();
    }
    writer.flush();
    expect(posted.length).toBeGreaterThan(7);
    expect(posted.every((m) => m.type === 'batch')).toBe(true);
    deliverAll();
    expect(received.map((r) => r.text)).toEqual(sent.map((d) => d.toString('latin1')));
    expect(received.map((r) => r.address)).toEqual(sent.map((_, i) => (i % 2 ? '10.200.0.1' : '192.168.255.254')));
    expect(received.map((r) => r.port)).toEqual(sent.map((_, i) => 4242 + (i % 3)));
    expect(received[77].size).toBe(10_000);
    expect(Atomics.load(shared, HandOffWriter.IN_FLIGHT_DATAGRAMS)).toBe(0);
    expect(Atomics.load(shared, HandOffWriter.IN_FLIGHT_BYTES)).toBe(0);
  });

  it('while the main thread reads nothing, keeps at most maxDatagrams in flight, counts the rest, and sends one notice', () => {
    const { writer, posted, received, deliverAll, dropped } = pair({ maxDatagrams: 50 });
    let accepted = 0;
    for (let i = 0; i < 500; i++) {
      if (writer.append(datagram(i), '10.0.0.1', 1)) accepted++;
      if (i % 20 === 19) writer.flush();
    }
    writer.flush();
    writer.append(datagram(500), '10.0.0.1', 1);
    writer.flush();
    expect(accepted).toBe(50);
    // Three batches carry the 50; after that a single 'dropped' notice however many turns drop.
    expect(posted.filter((m) => m.type === 'dropped')).toHaveLength(1);
    deliverAll();
    expect(received.map((r) => r.text)).toEqual(Array.from({ length: 50 }, (_, i) => datagram(i).toString('latin1')));
    expect(received.length + dropped()).toBe(501);
    // Reading freed the bound: new datagrams flow again, and later drops are reported by a fresh notice.
    expect(writer.append(datagram(501), '10.0.0.1', 1)).toBe(true);
    writer.flush();
    deliverAll();
    expect(received.at(-1)!.text).toBe(datagram(501).toString('latin1'));
  });

  it('bounds the bytes in flight too', () => {
    const { writer, deliverAll, received, dropped } = pair({ maxBytes: 5_000, stagingBytes: 64 * 1024 });
    for (let i = 0; i < 10; i++) writer.append(datagram(i, 1_000), '10.0.0.1', 1);
    writer.flush();
    deliverAll();
    // Each record is 1,000 bytes plus a 10-byte header: four fit in 5,000.
    expect(received).toHaveLength(4);
    expect(dropped()).toBe(6);
  });

  it('the worker program is plain JavaScript that compiles on its own', () => {
    expect(() => new Function('require', receiverWorkerSource())).not.toThrow();
  });
});
