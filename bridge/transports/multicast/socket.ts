import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import type { Logger } from '../../observability/logger.js';

/** Default SO_RCVBUF request: room for a burst of thousands of ~1-4 KB events while the event loop is busy. */
export const DEFAULT_RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024;

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
}

export type DatagramListener = (datagram: Buffer, from: RemoteInfo) => void;
export type SendCallback = (error: Error | null) => void;

/**
 * Thin adapter over one dgram socket, shared by the sink and the source (the legacy
 * module also sends from the socket it listens on). No decoding here: the listener
 * gets the raw bytes synchronously from the 'message' event, so the receive path
 * never awaits and the kernel buffer is drained as fast as the event loop turns.
 */
export class MulticastSocket {
  private socket: Socket | null = null;
  private opening: Promise<void> | null = null;
  private users = 0;
  private listener: DatagramListener = () => {};
  /** SO_RCVBUF as the kernel granted it (Linux reports twice the usable size). 0 until open. */
  receiveBufferBytes = 0;

  constructor(
    private readonly options: MulticastSocketOptions,
    private readonly logger: Logger,
  ) {}

  setListener(listener: DatagramListener): void {
    this.listener = listener;
  }

  /** Open (once) and count one more user; sink and source each acquire and release. */
  acquire(): Promise<void> {
    this.users++;
    this.opening ??= this.open();
    return this.opening;
  }

  async release(): Promise<void> {
    if (this.users === 0) return;
    this.users--;
    if (this.users > 0) return;
    const socket = this.socket;
    this.socket = null;
    this.opening = null;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  send(datagram: Buffer, callback: SendCallback): void {
    const socket = this.socket;
    if (!socket) {
      callback(new Error('multicast socket is not open'));
      return;
    }
    socket.send(datagram, this.options.port, this.options.group, callback);
  }

  setTtl(ttl: number): void {
    this.options.ttl = ttl;
    this.socket?.setMulticastTTL(ttl);
  }

  private async open(): Promise<void> {
    const { group, port, bindAddress, ttl, loopback, receiveBufferBytes } = this.options;
    const iface = this.options.interface;
    const socket = createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: receiveBufferBytes });
    socket.on('message', (datagram, from) => this.listener(datagram, from));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, bindAddress, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', (error) => this.logger.error({ err: error }, 'multicast socket error'));
    if (iface) socket.setMulticastInterface(iface);
    socket.addMembership(group, iface || undefined);
    socket.setMulticastTTL(ttl);
    socket.setMulticastLoopback(loopback);
    this.socket = socket;
    this.receiveBufferBytes = socket.getRecvBufferSize();
    this.reportBufferSize(receiveBufferBytes);
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

function readRmemMax(): number | null {
  try {
    return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return null;
  }
}
