import type { RemoteInfo } from 'node:dgram';

/** Limits of the hand-off between the receiver worker and the main thread. */
export interface HandOffLimits {
  /** Datagrams posted to the main thread and not yet decoded; beyond it new ones are dropped (queue_full). */
  maxDatagrams: number;
  /** The same bound in bytes (payload plus record headers), so huge datagrams cannot exhaust memory either. */
  maxBytes: number;
  /** Size of the worker's staging buffer; a batch is posted when it is full or the worker's turn ends. */
  stagingBytes: number;
}

export type HandOffMessage =
  | { type: 'batch'; buffer: ArrayBuffer; count: number; bytes: number }
  /** Sent only when datagrams were dropped and no batch went out to carry the news. */
  | { type: 'dropped' };

export type HandOffPost = (message: HandOffMessage, transfer?: ArrayBuffer[]) => void;

/**
 * Worker side of the hand-off: copies each datagram into a staging buffer as
 * [length u32][IPv4 u32][port u16][payload] and posts the filled part as ONE
 * transferred ArrayBuffer per batch (one structured-clone-free message instead of one
 * per datagram; copying a ~1 KB datagram costs far less than a message).
 *
 * The bound lives in a SharedArrayBuffer both threads update with Atomics: the worker
 * adds what it posts, the main thread subtracts what it has decoded. A blocked main
 * thread therefore cannot make the worker queue without limit; the worker keeps
 * draining the socket (so the kernel never drops uncounted) and counts the excess as
 * dropped.
 *
 * This class runs inside the receiver worker from its source text (receiver-worker.ts
 * explains why), so it must reference nothing outside its own body but globals.
 */
export class HandOffWriter {
  static readonly IN_FLIGHT_DATAGRAMS = 0;
  static readonly IN_FLIGHT_BYTES = 1;
  /** Total dropped since start (wraps; readers take differences). */
  static readonly DROPPED = 2;
  /** 1 while a 'dropped' notice is posted and not yet read. */
  static readonly DROP_NOTICE_PENDING = 3;
  /** Total of our own looped-back datagrams the worker skipped (wraps; readers take differences). */
  static readonly OWN_SKIPPED = 4;
  static readonly SHARED_SLOTS = 5;
  static readonly RECORD_HEADER_BYTES = 10;

  private staging: Buffer;
  private used = 0;
  private count = 0;
  private dropped = 0;
  private skipped = 0;
  private lastAddress = '';
  private lastAddressBits = 0;

  constructor(
    private readonly shared: Int32Array,
    private readonly limits: HandOffLimits,
    private readonly post: HandOffPost,
  ) {
    this.staging = Buffer.allocUnsafeSlow(limits.stagingBytes);
  }

  /** Stage one datagram, or count it as dropped when the hand-off is full. */
  append(datagram: Uint8Array, address: string, port: number): boolean {
    const shared = this.shared;
    const record = HandOffWriter.RECORD_HEADER_BYTES + datagram.length;
    if (
      Atomics.load(shared, HandOffWriter.IN_FLIGHT_DATAGRAMS) + this.count >= this.limits.maxDatagrams ||
      Atomics.load(shared, HandOffWriter.IN_FLIGHT_BYTES) + this.used + record > this.limits.maxBytes
    ) {
      this.dropped++;
      return false;
    }
    if (this.used + record > this.staging.length) {
      this.flush();
      if (record > this.staging.length) this.staging = Buffer.allocUnsafeSlow(record);
    }
    if (address !== this.lastAddress) {
      this.lastAddress = address;
      const octets = address.split('.');
      this.lastAddressBits = ((Number(octets[0]) << 24) | (Number(octets[1]) << 16) | (Number(octets[2]) << 8) | Number(octets[3])) >>> 0;
    }
    const staging = this.staging;
    const at = this.used;
    staging.writeUInt32LE(datagram.length, at);
    staging.writeUInt32LE(this.lastAddressBits, at + 4);
    staging.writeUInt16LE(port, at + 8);
    staging.set(datagram, at + HandOffWriter.RECORD_HEADER_BYTES);
    this.used = at + record;
    this.count++;
    return true;
  }

  /** Count one of our own datagrams, not staged (published at the next flush). */
  skipOwn(): void {
    this.skipped++;
  }

  /** Post what is staged (and make sure drops get reported). Called at the end of each worker turn. */
  flush(): void {
    const shared = this.shared;
    if (this.skipped > 0) {
      Atomics.add(shared, HandOffWriter.OWN_SKIPPED, this.skipped);
      this.skipped = 0;
    }
    const dropped = this.dropped;
    if (dropped > 0) {
      Atomics.add(shared, HandOffWriter.DROPPED, dropped);
      this.dropped = 0;
    }
    if (this.count > 0) {
      // slice() copies only the filled part into a fresh, transferable ArrayBuffer; the staging buffer is reused.
      const buffer = (this.staging.buffer as ArrayBuffer).slice(this.staging.byteOffset, this.staging.byteOffset + this.used);
      const count = this.count;
      const bytes = this.used;
      Atomics.add(shared, HandOffWriter.IN_FLIGHT_DATAGRAMS, count);
      Atomics.add(shared, HandOffWriter.IN_FLIGHT_BYTES, bytes);
      this.count = 0;
      this.used = 0;
      // The reader looks at DROPPED after every batch, so the batch carries the news of these drops too.
      this.post({ type: 'batch', buffer, count, bytes }, [buffer]);
    } else if (dropped > 0 && Atomics.compareExchange(shared, HandOffWriter.DROP_NOTICE_PENDING, 0, 1) === 0) {
      // At most one notice in flight: a blocked main thread must not pile up messages either.
      this.post({ type: 'dropped' });
    }
  }
}

export type DatagramListener = (datagram: Buffer, from: RemoteInfo) => void;
export type DropListener = (count: number) => void;

/**
 * Main-thread side: walks a batch, hands every datagram (a view into the transferred
 * buffer, no copy) to the listener in arrival order, then releases its share of the
 * bound and reports drops the worker counted since the last look.
 */
export class HandOffReader {
  listener: DatagramListener = () => {};
  onDropped: DropListener = () => {};
  private droppedSeen = 0;
  private lastAddressBits = -1;
  private lastAddress = '';

  constructor(readonly shared: Int32Array) {}

  receive(message: HandOffMessage): void {
    if (message.type === 'batch') {
      try {
        this.deliver(message.buffer, message.count);
      } finally {
        Atomics.sub(this.shared, HandOffWriter.IN_FLIGHT_DATAGRAMS, message.count);
        Atomics.sub(this.shared, HandOffWriter.IN_FLIGHT_BYTES, message.bytes);
        this.reportDrops();
      }
    } else {
      this.reportDrops();
    }
  }

  private deliver(buffer: ArrayBuffer, count: number): void {
    const data = Buffer.from(buffer);
    let at = 0;
    for (let i = 0; i < count; i++) {
      const size = data.readUInt32LE(at);
      const bits = data.readUInt32LE(at + 4);
      const port = data.readUInt16LE(at + 8);
      const start = at + HandOffWriter.RECORD_HEADER_BYTES;
      at = start + size;
      this.listener(data.subarray(start, at), { address: this.addressOf(bits), family: 'IPv4', port, size });
    }
  }

  private addressOf(bits: number): string {
    if (bits !== this.lastAddressBits) {
      this.lastAddressBits = bits;
      this.lastAddress = `${bits >>> 24}.${(bits >>> 16) & 255}.${(bits >>> 8) & 255}.${bits & 255}`;
    }
    return this.lastAddress;
  }

  private reportDrops(): void {
    // Clear the notice flag BEFORE reading the total: a drop the worker adds after this
    // read finds the flag clear and posts a fresh notice, so none goes unreported.
    Atomics.store(this.shared, HandOffWriter.DROP_NOTICE_PENDING, 0);
    const total = Atomics.load(this.shared, HandOffWriter.DROPPED);
    const fresh = (total - this.droppedSeen) | 0;
    this.droppedSeen = total;
    if (fresh > 0) this.onDropped(fresh);
  }
}
