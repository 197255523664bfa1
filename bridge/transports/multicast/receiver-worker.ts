import type * as Dgram from 'node:dgram';
import type * as Threads from 'node:worker_threads';
import { isOwnPlainDatagram } from './codec.js';
import { HandOffWriter, type HandOffLimits } from './hand-off.js';

export interface ReceiverWorkerData {
  group: string;
  port: number;
  bindAddress: string;
  /** Interface address to join on; empty for the kernel's choice. */
  interface: string;
  receiveBufferBytes: number;
  limits: HandOffLimits;
  /** Our Multicast-Sender line (codec.ts senderLine): plain datagrams ending their headers with it are ours, looped back, and are skipped here. */
  ownSenderLine: Uint8Array | null;
  /** HandOffWriter.SHARED_SLOTS Int32 slots, shared with the main thread's HandOffReader. */
  shared: SharedArrayBuffer;
}

export type WorkerReport =
  | { type: 'ready'; receiveBufferBytes: number; fd: number }
  | { type: 'open-failed'; step: 'bind' | 'join'; message: string; code?: string }
  | { type: 'socket-error'; message: string }
  | { type: 'closed' };

export type WorkerCommand = { type: 'close' };

/**
 * The receiver thread: owns the dgram socket that is bound and joined, reads it on an
 * event loop that does nothing else (no decoding, no GC pressure from the pipeline),
 * and posts one batch per loop turn. Sending stays on the main thread (socket.ts).
 *
 * It references only its parameters and globals because it runs from source text.
 */
function receiverWorkerMain(dgram: typeof Dgram, threads: typeof Threads, Writer: typeof HandOffWriter, isOwn: typeof isOwnPlainDatagram, collectYoung: () => void): void {
  const parent = threads.parentPort!;
  const data = threads.workerData as ReceiverWorkerData;
  const report = (message: WorkerReport) => parent.postMessage(message);
  const COLLECT_EVERY = 512;
  const ownLine = data.ownSenderLine;
  const writer = new Writer(new Int32Array(data.shared), data.limits, (message, transfer) => parent.postMessage(message, transfer));
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: data.receiveBufferBytes });
  let scheduled = false;
  let sinceCollect = 0;
  // libuv reads up to 32 datagrams per poll; flushing in the check phase right after
  // posts whatever one turn read, so a quiet link gets no added latency and a burst
  // goes out in batches without the loop ever sleeping.
  const flush = () => {
    scheduled = false;
    writer.flush();
    // Each datagram libuv reads is a malloc'd ~4 KB Buffer freed only when this isolate
    // collects; it allocates so little JS that V8 scavenged every ~400 ms, i.e. ~4,000
    // datagrams (17-18 MB of this thread's malloc arena, kept resident) at 10k/s. A minor
    // GC of this tiny heap every COLLECT_EVERY datagrams takes ~0.2 ms.
    if (sinceCollect >= COLLECT_EVERY) {
      sinceCollect = 0;
      collectYoung();
    }
  };
  socket.on('message', (datagram, from) => {
    sinceCollect++;
    // Our own datagrams (multicast loopback, or TTL 0 on lo) would only be copied,
    // transferred and then ignored by the main thread: one byte search here saves all of that.
    if (ownLine !== null && isOwn(datagram, ownLine)) writer.skipOwn();
    else writer.append(datagram, from.address, from.port);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  });
  // The descriptor names the socket in /proc (socket.ts reads its kernel drop counter). dgram
  // has no public accessor; its internal state holds the libuv handle, whose fd is -1 if absent.
  const socketFd = (target: Dgram.Socket): number => {
    for (const key of Object.getOwnPropertySymbols(target)) {
      const fd = (target as unknown as Record<symbol, { handle?: { fd?: unknown } } | undefined>)[key]?.handle?.fd;
      if (typeof fd === 'number') return fd;
    }
    return -1;
  };
  const failOpen = (error: NodeJS.ErrnoException, step: 'bind' | 'join' = 'bind') => {
    report({ type: 'open-failed', step, message: error.message, code: error.code });
    socket.close();
    parent.close();
  };
  socket.once('error', failOpen);
  socket.bind(data.port, data.bindAddress, () => {
    socket.off('error', failOpen);
    socket.on('error', (error) => report({ type: 'socket-error', message: error.message }));
    try {
      socket.addMembership(data.group, data.interface || undefined);
    } catch (error) {
      failOpen(error as NodeJS.ErrnoException, 'join');
      return;
    }
    report({ type: 'ready', receiveBufferBytes: socket.getRecvBufferSize(), fd: socketFd(socket) });
  });
  parent.on('message', (command: WorkerCommand) => {
    if (command.type !== 'close') return;
    socket.close(() => {
      writer.flush();
      report({ type: 'closed' });
      parent.close();
    });
  });
}

/**
 * The worker's handle on V8's minor GC. Worker threads accept no V8 flags of their own,
 * so --expose-gc is set at run time (it only adds `gc` to contexts created afterwards)
 * and `gc` is taken from a fresh context; the collection is the worker isolate's.
 */
function youngCollector(v8: typeof import('node:v8'), vm: typeof import('node:vm')): () => void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (options: { type: 'minor' }) => void;
  return () => gc({ type: 'minor' });
}

let source: string | null = null;

/**
 * The worker's program as plain JavaScript, for `new Worker(source, { eval: true })`.
 *
 * Why source text and not a worker file: the same module runs compiled (dist/*.js),
 * from TypeScript under vitest (transformed in memory, no file on disk a Worker could
 * load) and in namespace children through a transpiling loader. A worker file would
 * need a different path and loader in each; the functions' own text is already
 * JavaScript in all three, and it needs nothing but node:dgram and node:worker_threads.
 * test/unit/multicast-worker.test.ts runs the writer from this very text.
 */
export function receiverWorkerSource(): string {
  source ??= `(${receiverWorkerMain.toString()})(require('node:dgram'), require('node:worker_threads'), (${handOffWriterSource()}), (${isOwnPlainDatagram.toString()}), (${youngCollector.toString()})(require('node:v8'), require('node:vm')));`;
  return source;
}

/** HandOffWriter's class text: the part of the worker program the unit tests evaluate. */
export function handOffWriterSource(): string {
  return HandOffWriter.toString();
}
