import { randomBytes } from 'node:crypto';
import { Counter } from 'prom-client';
import type { FsEvent, Header } from '../../event/event.js';
import { MulticastSubclass } from '../../event/names.js';
import { DatagramError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { DropReporter, type Metrics } from '../../observability/metrics.js';
import type { Bindings } from '../../pipeline/bindings.js';
import { LOOP_GUARD_HEADER, type BridgeEvent, type Sink } from '../../pipeline/types.js';
import { SEQ_HEADER, encodeDatagram, encodeSecureDatagram } from './codec.js';
import type { SecureSealer } from './secure.js';
import type { MulticastSocket } from './socket.js';

export interface MulticastSinkOptions {
  /** Our switchname, sent as Multicast-Sender. */
  nodeName: string;
  bindings: Bindings;
  psk: Buffer | null;
  /** Secure mode: every datagram sealed with it (psk is then null). */
  sealer?: SecureSealer | null;
  maxDatagramBytes: number;
  metrics: Metrics;
  logger: Logger;
}

const NEVER_RESENT = new Set<string>([MulticastSubclass.Event, MulticastSubclass.PeerUp, MulticastSubclass.PeerDown]);

/**
 * The legacy loop rules plus ours: mod_event_multicast never re-sends what it fired
 * itself (multicast::event / peerup / peerdown) nor LOG; we also never send what the
 * bridge injected (LOOP_GUARD_HEADER) or what arrived over multicast.
 */
export function isLoopRisk(item: BridgeEvent): boolean {
  const event: FsEvent = item.event;
  if (item.origin.transport === 'multicast') return true;
  if (event.name === 'LOG') return true;
  const subclass = event.subclass;
  if (subclass !== undefined && NEVER_RESENT.has(subclass)) return true;
  return event.has(LOOP_GUARD_HEADER);
}

/** Send path: each local event matching the bindings becomes one datagram, like the legacy module. */
export class MulticastSink implements Sink {
  readonly name = 'multicast';
  private bindings: Bindings;
  private psk: Buffer | null;
  private sealer: SecureSealer | null;
  private readonly streamId = randomBytes(4).toString('hex');
  private sequence = 0;
  private readonly drops: DropReporter;
  private readonly sent: Counter.Internal;
  private readonly loopSkipped: Counter;

  constructor(
    private readonly socket: MulticastSocket,
    private readonly options: MulticastSinkOptions,
  ) {
    this.bindings = options.bindings;
    this.psk = options.psk;
    this.sealer = options.sealer ?? null;
    this.drops = new DropReporter('multicast-send', options.metrics, options.logger);
    this.sent = options.metrics.eventsOut.labels({ transport: 'multicast' });
    this.loopSkipped = options.metrics.counter('fsb_multicast_loop_skipped_total', 'Events not multicast because of the loop rules (injected, multicast::*, LOG)');
  }

  setBindings(bindings: Bindings): void {
    this.bindings = bindings;
  }

  setPsk(psk: Buffer | null): void {
    this.psk = psk;
  }

  setSealer(sealer: SecureSealer | null): void {
    this.sealer = sealer;
  }

  start(): Promise<void> {
    return this.socket.acquire();
  }

  stop(): Promise<void> {
    return this.socket.release();
  }

  deliver(item: BridgeEvent): void {
    if (!this.bindings.matches(item.event)) return;
    if (isLoopRisk(item)) {
      this.loopSkipped.inc();
      return;
    }
    let datagram: Buffer;
    try {
      const options = { extraHeaders: [[SEQ_HEADER, `${this.streamId}:${this.sequence + 1}`]] as Header[], maxBytes: this.options.maxDatagramBytes };
      datagram = this.sealer
        ? encodeSecureDatagram(item.event, this.options.nodeName, this.sealer, options)
        : encodeDatagram(item.event, this.options.nodeName, this.psk, options);
    } catch (error) {
      if (!(error instanceof DatagramError)) throw error;
      this.drops.drop(error.reason, error.message);
      return;
    }
    this.sequence++;
    this.socket.send(datagram, this.onSent);
  }

  private readonly onSent = (error: Error | null): void => {
    if (error) this.drops.drop('send_error', error.message);
    else this.sent.inc();
  };
}
