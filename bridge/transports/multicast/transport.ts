import type { MulticastConfig } from '../../config/types.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Bindings } from '../../pipeline/bindings.js';
import type { GapRecorder } from '../../pipeline/peers.js';
import { requireBlowfish } from './blowfish.js';
import { senderLine } from './codec.js';
import { MulticastSink } from './sink.js';
import { MulticastSocket } from './socket.js';
import { MulticastSource } from './source.js';

export interface MulticastTransportDeps {
  /** Our switchname (Multicast-Sender). */
  nodeName: string;
  metrics: Metrics;
  logger: Logger;
  gaps?: GapRecorder;
  /** Bound of the receiver's hand-off to the main thread (defaults in socket.ts); beyond it datagrams are dropped as queue_full. */
  receiveQueue?: { datagrams?: number; bytes?: number };
}

export interface MulticastReload {
  bindings: Bindings;
  psk: string | null;
  ttl: number;
}

function pskBytes(psk: string | null): Buffer | null {
  if (psk === null || psk === '') return null;
  requireBlowfish();
  return Buffer.from(psk, 'utf8');
}

/**
 * The multicast transport: one socket shared by a Sink (local events out) and a
 * RemoteSource (remote events in). Throws CipherUnavailableError at construction when
 * a psk is configured and this Node has no Blowfish.
 */
export class MulticastTransport {
  readonly socket: MulticastSocket;
  readonly sink: MulticastSink;
  readonly source: MulticastSource;

  constructor(config: MulticastConfig, deps: MulticastTransportDeps) {
    const psk = pskBytes(config.psk);
    this.socket = new MulticastSocket(
      {
        group: config.address,
        port: config.port,
        bindAddress: config.bindAddress,
        interface: config.interface,
        ttl: config.ttl,
        loopback: config.loopback,
        receiveBufferBytes: config.receiveBufferBytes,
        maxQueuedDatagrams: deps.receiveQueue?.datagrams,
        maxQueuedBytes: deps.receiveQueue?.bytes,
        ownSenderLine: senderLine(deps.nodeName),
      },
      deps.logger,
    );
    const common = { nodeName: deps.nodeName, psk, maxDatagramBytes: config.maxDatagramBytes, metrics: deps.metrics, logger: deps.logger };
    this.sink = new MulticastSink(this.socket, { ...common, bindings: config.bindings });
    this.source = new MulticastSource(this.socket, { ...common, gaps: deps.gaps });
  }

  /**
   * SIGHUP reload: new bindings, psk and TTL take effect for the next datagram; the
   * socket stays open and joined, so nothing in its receive buffer is lost. Validates
   * before changing anything.
   */
  reconfigure(reload: MulticastReload): void {
    const psk = pskBytes(reload.psk);
    this.sink.setBindings(reload.bindings);
    this.sink.setPsk(psk);
    this.source.setPsk(psk);
    this.socket.setTtl(reload.ttl);
  }
}
