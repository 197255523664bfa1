import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { BindError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { KernelDrops } from './kernel-drops.js';
import { HandOffReader, HandOffWriter, type DatagramListener, type DropListener, type HandOffLimits, type HandOffMessage } from './hand-off.js';
import { receiverWorkerSource, type ReceiverWorkerData, type WorkerCommand, type WorkerReport } from './receiver-worker.js';

export type { DatagramListener, DropListener } from './hand-off.js';

/** Default SO_RCVBUF request: room for a burst of thousands of ~1-4 KB events. */
export const DEFAULT_RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024;
/** Default hand-off bound: ten 10,000-datagram bursts, or 64 MiB, whichever is reached first. */
export const DEFAULT_RECEIVE_QUEUE_DATAGRAMS = 100_000;
export const DEFAULT_RECEIVE_QUEUE_BYTES = 64 * 1024 * 1024;
/** One worker turn reads at most 32 datagrams; 256 KiB holds that many of any usual size. */
const STAGING_BYTES = 256 * 1024;

export interface MulticastSocketOptions {
  /** Group to join and send to. */
  group: string;
  port: number;
  /** Local address to bind (0.0.0.0 like the legacy module). */
  bindAddress: string;
  /** Interface address to join on and send from; empty for the kernel's choice. */
  interface: string;
  ttl: number;
  loopback: boolean;
  receiveBufferBytes: number;
  /** Received datagrams waiting for the main thread before new ones are dropped (cause queue_full). */
  maxQueuedDatagrams?: number;
  maxQueuedBytes?: number;
  /** Our Multicast-Sender line (codec.ts senderLine): the receiver skips our own plain datagrams before copying them. */
  ownSenderLine?: Buffer;
}

export type SendCallback = (error: Error | null) => void;

interface Open {
  worker: Worker;
  sender: Socket;
  closed: Promise<void>;
}

/**
 * The multicast socket pair: a receiver worker thread owns the socket bound to the
 * group port and joined to the group, and hands datagrams over in batches
 * (hand-off.ts); a send socket stays on the main thread.
 *
 * Why a worker: the kernel buffer (SO_RCVBUF, capped host-wide by net.core.rmem_max)
 * only covers main-thread stalls shorter than it takes a burst to fill it; with
 * decoding, the pipeline and GC on the main thread, 10,000-datagram bursts overflowed
 * it on some runs. The worker's loop only reads and copies, so the socket is drained
 * at read speed whatever the main thread does; excess beyond the bounded hand-off is
 * dropped and counted instead of lost silently in the kernel.
 *
 * Why sending stays on the main thread, on its own socket: a send is one synchronous
 * call with its error callback where the sink is, with no cross-thread queue to lose
 * or delay it. The send socket carries the same interface, TTL and loopback options
 * the legacy module sets on its one socket, so what leaves the host is the same
 * datagram to the same group and port, and with loopback on our own datagrams come
 * back to the receiver (and are ignored there by Multicast-Sender) exactly as before.
 * Only the UDP source port differs (ephemeral instead of the group port);
 * mod_event_multicast reads with recvfrom and never looks at it.
 */
export class MulticastSocket {
  private current: Open | null = null;
  private opening: Promise<void> | null = null;
  private users = 0;
  private readonly reader: HandOffReader;
  /** SO_RCVBUF of the receiving socket as the kernel granted it (Linux reports twice the usable size). 0 until open. */
  receiveBufferBytes = 0;
  /** The receiving socket's kernel drop counter; null when closed or not observable on this host. */
  private kernel: KernelDrops | null = null;

  constructor(
    private readonly options: MulticastSocketOptions,
    private readonly logger: Logger,
  ) {
    this.reader = new HandOffReader(new Int32Array(new SharedArrayBuffer(HandOffWriter.SHARED_SLOTS * Int32Array.BYTES_PER_ELEMENT)));
    this.reader.onDropped = (count) => this.logger.warn({ dropped: count }, 'multicast hand-off queue full: datagrams dropped');
  }

  /** Every received datagram, in arrival order, on the main thread; `onDropped` counts what the full hand-off refused. */
  setListener(listener: DatagramListener, onDropped?: DropListener): void {
    this.reader.listener = listener;
    if (onDropped) this.reader.onDropped = onDropped;
  }

  /** Open (once) and count one more user; sink and source each acquire and release. */
  acquire(): Promise<void> {
    this.users++;
    this.opening ??= this.open().catch((error: unknown) => {
      this.opening = null;
      this.users = 0;
      throw error;
    });
    return this.opening;
  }

  /** Last user: close the receiver (delivering what it already read) and the send socket. */
  async release(): Promise<void> {
    if (this.users === 0) return;
    this.users--;
    if (this.users > 0) return;
    await this.opening?.catch(() => {});
    const current = this.current;
    this.current = null;
    this.opening = null;
    this.kernel = null;
    if (!current) return;
    current.worker.postMessage({ type: 'close' } satisfies WorkerCommand);
    await Promise.all([current.closed, new Promise<void>((resolve) => current.sender.close(() => resolve()))]);
  }

  /** Datagrams the kernel dropped for the receiving socket since it opened (receive buffer full); null when not open or not observable. */
  kernelDrops(): number | null {
    return this.kernel?.read() ?? null;
  }

  /** Our own datagrams the receiver skipped since start (wraps at 2^32: take differences). */
  ownSkipped(): number {
    return Atomics.load(this.reader.shared, HandOffWriter.OWN_SKIPPED) >>> 0;
  }

  send(datagram: Buffer, callback: SendCallback): void {
    const sender = this.current?.sender;
    if (!sender) {
      callback(new Error('multicast socket is not open'));
      return;
    }
    sender.send(datagram, this.options.port, this.options.group, callback);
  }

  setTtl(ttl: number): void {
    this.options.ttl = ttl;
    this.current?.sender.setMulticastTTL(ttl);
  }

  private async open(): Promise<void> {
    const worker = await this.startReceiver();
    try {
      const sender = await this.openSender();
      const closed = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      this.current = { worker, sender, closed };
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    this.reportBufferSize(this.options.receiveBufferBytes);
  }

  private startReceiver(): Promise<Worker> {
    const { group, port, bindAddress, receiveBufferBytes } = this.options;
    const limits: HandOffLimits = {
      maxDatagrams: this.options.maxQueuedDatagrams ?? DEFAULT_RECEIVE_QUEUE_DATAGRAMS,
      maxBytes: this.options.maxQueuedBytes ?? DEFAULT_RECEIVE_QUEUE_BYTES,
      stagingBytes: STAGING_BYTES,
    };
    const ownSenderLine = this.options.ownSenderLine ?? null;
    const workerData: ReceiverWorkerData = { group, port, bindAddress, interface: this.options.interface, receiveBufferBytes, limits, ownSenderLine, shared: this.reader.shared.buffer as SharedArrayBuffer };
    // execArgv []: the receiver needs no flags of ours (the TypeScript loader of test
    // children would only slow its start).
    const worker = new Worker(receiverWorkerSource(), { eval: true, workerData, execArgv: [], name: 'multicast-receiver' });
    return new Promise((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`multicast receiver exited (code ${code}) before it was ready`));
      worker.once('exit', onExit);
      worker.once('error', reject);
      worker.on('message', (message: HandOffMessage | WorkerReport) => {
        switch (message.type) {
          case 'batch':
          case 'dropped':
            this.reader.receive(message);
            break;
          case 'ready':
            this.receiveBufferBytes = message.receiveBufferBytes;
            this.kernel = KernelDrops.find(message.fd, port);
            if (!this.kernel) this.logger.warn({ port }, 'multicast receive socket not found in /proc/self/net/udp: datagrams the kernel drops for it are not counted');
            worker.off('exit', onExit);
            worker.off('error', reject);
            worker.on('error', (error) => this.logger.error({ err: error }, 'multicast receiver failed; no more datagrams are received'));
            resolve(worker);
            break;
          case 'open-failed':
            reject(
              message.step === 'bind'
                ? new BindError('the multicast receive socket', `${bindAddress}:${port}`, ['multicast/bind-address', 'multicast/port'], message.message)
                : new BindError(`multicast group ${group}`, this.options.interface || 'the default interface', ['multicast/interface', 'multicast/address'], message.message),
            );
            break;
          case 'socket-error':
            this.logger.error({ err: message.message }, 'multicast socket error');
            break;
          case 'closed':
            break;
        }
      });
    });
  }

  private async openSender(): Promise<Socket> {
    const { ttl, loopback, bindAddress } = this.options;
    const iface = this.options.interface;
    const sender = createSocket({ type: 'udp4' });
    // A group address cannot be a source; otherwise send from the address the legacy module binds.
    const from = isMulticast(bindAddress) ? undefined : bindAddress;
    await new Promise<void>((resolve, reject) => {
      sender.once('error', (error) => reject(new BindError('the multicast send socket', `${from ?? '0.0.0.0'}:0`, ['multicast/bind-address'], error.message, { cause: error })));
      sender.bind(0, from, () => {
        sender.removeAllListeners('error');
        resolve();
      });
    });
    sender.on('error', (error) => this.logger.error({ err: error }, 'multicast send socket error'));
    try {
      if (iface) sender.setMulticastInterface(iface);
      sender.setMulticastTTL(ttl);
      sender.setMulticastLoopback(loopback);
    } catch (error) {
      sender.close();
      throw new BindError('the multicast send socket', iface || 'the default interface', ['multicast/interface'], (error as Error).message, { cause: error });
    }
    return sender;
  }

  private reportBufferSize(requested: number): void {
    const rmemMax = readRmemMax();
    const capped = rmemMax !== null && requested > rmemMax;
    const fields = { requested, effective: this.receiveBufferBytes, rmemMax };
    if (capped) {
      this.logger.warn(fields, `multicast receive buffer capped by net.core.rmem_max; raise it with: sysctl -w net.core.rmem_max=${requested}`);
    } else {
      this.logger.info(fields, 'multicast receive buffer');
    }
  }
}

function isMulticast(address: string): boolean {
  const first = Number(address.split('.')[0]);
  return first >= 224 && first <= 239;
}

function readRmemMax(): number | null {
  try {
    return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return null;
  }
}
