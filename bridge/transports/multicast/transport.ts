import type { MulticastKey } from '../../config/multicast-key.js';
import type { MulticastConfig, SecureMulticastConfig } from '../../config/types.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Bindings } from '../../pipeline/bindings.js';
import type { GapRecorder } from '../../pipeline/peers.js';
import { requireBlowfish } from './blowfish.js';
import { senderLine } from './codec.js';
import { MulticastSink } from './sink.js';
import { MulticastSocket } from './socket.js';
import { SecureOpener, SecureSealer } from './secure.js';
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
  secure: SecureMulticastConfig | null;
  ttl: number;
}

function acceptedKeys(secure: SecureMulticastConfig): MulticastKey[] {
  return secure.acceptKey ? [secure.key, secure.acceptKey] : [secure.key];
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
  private sealer: SecureSealer | null;
  private opener: SecureOpener | null;

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
        // The worker recognises our own plaintext datagrams; in secure mode a plaintext one naming us is a forgery, refused as not_secure.
        ownSenderLine: config.secure ? undefined : senderLine(deps.nodeName),
      },
      deps.logger,
    );
    const common = { nodeName: deps.nodeName, psk, maxDatagramBytes: config.maxDatagramBytes, metrics: deps.metrics, logger: deps.logger };
    this.sealer = config.secure ? new SecureSealer(config.secure.key) : null;
    this.opener = config.secure ? new SecureOpener(acceptedKeys(config.secure), config.secure) : null;
    this.sink = new MulticastSink(this.socket, { ...common, bindings: config.bindings, sealer: this.sealer });
    this.source = new MulticastSource(this.socket, { ...common, gaps: deps.gaps, opener: this.opener });
  }

  /**
   * Keys change in place: the sealer keeps its epoch and counter and the opener its replay
   * windows, so a rotation by SIGHUP never lets an accepted datagram be accepted again.
   */
  private applySecure(secure: SecureMulticastConfig | null): void {
    if (secure === null) {
      this.sealer = this.opener = null;
    } else {
      if (this.sealer) this.sealer.setKey(secure.key);
      else this.sealer = new SecureSealer(secure.key);
      if (this.opener) {
        this.opener.setKeys(acceptedKeys(secure));
        this.opener.setLimits(secure);
      } else this.opener = new SecureOpener(acceptedKeys(secure), secure);
    }
    this.sink.setSealer(this.sealer);
    this.source.setOpener(this.opener);
  }

  /**
   * SIGHUP reload: new bindings, psk, secure keys and TTL take effect for the next datagram; the
   * socket stays open and joined, so nothing in its receive buffer is lost. Validates
   * before changing anything.
   */
  reconfigure(reload: MulticastReload): void {
    const psk = pskBytes(reload.psk);
    this.sink.setBindings(reload.bindings);
    this.sink.setPsk(psk);
    this.source.setPsk(psk);
    this.applySecure(reload.secure);
    this.socket.setTtl(reload.ttl);
  }
}
