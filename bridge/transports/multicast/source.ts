import { Counter } from 'prom-client';
import { DatagramError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { DropReporter, type Metrics } from '../../observability/metrics.js';
import type { BridgeEvent, RemoteSource } from '../../pipeline/types.js';
import type { GapRecorder } from '../../pipeline/peers.js';
import { SENDER_HEADER, SEQ_HEADER, decodeDatagram, decodeSecureDatagram, isOwnPlainDatagram, senderLine } from './codec.js';
import { namespaceUdpRcvbufErrors } from './kernel-drops.js';
import type { SecureOpener } from './secure.js';
import { SequenceGaps } from './sequence.js';
import type { MulticastSocket } from './socket.js';

/** How often the kernel's drop counter of the receive socket is read (one /proc/self/net/udp read). */
const KERNEL_DROPS_POLL_MS = 1_000;

export interface MulticastSourceOptions {
  /** Our node name: datagrams whose Multicast-Sender equals it are our own, looped back. */
  nodeName: string;
  psk: Buffer | null;
  /** Secure mode: only datagrams it opens are accepted (psk is then null). */
  opener?: SecureOpener | null;
  maxDatagramBytes: number;
  metrics: Metrics;
  logger: Logger;
  /** Receives per-peer gap counts (the PeerTracker). */
  gaps?: GapRecorder;
}

/**
 * Receive path: datagram -> decode -> BridgeEvent with the ORIGINAL event (its own
 * Event-Name and headers, Multicast-Sender included). No awaits, no logging per event;
 * every refused datagram is counted by cause.
 *
 * The socket's receiver worker drains the kernel buffer and hands datagrams over in
 * batches (socket.ts); this class decodes each one as it is handed over, on the main
 * thread. What the bounded hand-off refused while the main thread was busy arrives as
 * a count and is dropped as queue_full here.
 *
 * Loss accounting, per origin (and what the kernel dropped for our socket, read from
 * /proc every second as kernel_rcvbuf: kernel-drops.ts):
 * - A bridge sender numbers every datagram it sends (SEQ_HEADER); a gap in that
 *   counter is an exact loss, counted in fsb_sequence_gap_events_total
 *   {transport="multicast", node}.
 * - A legacy sender only sends events matching its bindings, so its Event-Sequence
 *   (per Core-UUID) skips every unbound event: gaps there are an upper bound of the
 *   loss, counted apart in fsb_multicast_legacy_sequence_gap_total{node}.
 */
export class MulticastSource implements RemoteSource {
  readonly name = 'multicast';
  private emit: ((item: BridgeEvent) => void) | null = null;
  private psk: Buffer | null;
  private opener: SecureOpener | null;
  private readonly drops: DropReporter;
  private readonly exactGaps = new SequenceGaps();
  private readonly legacyGaps = new SequenceGaps();
  private readonly ownDatagrams: Counter;
  private readonly legacyGapCounter: Counter<'node'>;
  private readonly eventsIn = new Map<string, Counter.Internal>();
  private readonly ownSenderLine: Buffer;
  private ownSkippedSeen = 0;
  private kernelDropsSeen = 0;
  private kernelPoll: NodeJS.Timeout | null = null;

  constructor(
    private readonly socket: MulticastSocket,
    private readonly options: MulticastSourceOptions,
  ) {
    this.psk = options.psk;
    this.opener = options.opener ?? null;
    this.ownSenderLine = senderLine(options.nodeName);
    this.drops = new DropReporter('multicast-receive', options.metrics, options.logger);
    this.ownDatagrams = options.metrics.counter('fsb_multicast_own_datagrams_total', 'Our own datagrams heard back (multicast loopback) and ignored');
    // The receiver worker skips most of them before the hand-off; it only counts them, so fold its count in when the counter is read.
    const own = this.ownDatagrams as Counter & { collect?: () => unknown };
    const collect = own.collect?.bind(own);
    own.collect = () => {
      this.syncOwnSkipped();
      return collect?.();
    };
    options.metrics.gauge('fsb_netns_udp_rcvbuf_errors', "UDP RcvbufErrors of this network namespace (/proc/net/snmp): every socket's, not only ours; ours are fsb_drops_total{cause=\"kernel_rcvbuf\"}", [], (gauge) => {
      const value = namespaceUdpRcvbufErrors();
      if (value !== null) gauge.set(value);
    });
    this.legacyGapCounter = options.metrics.counter(
      'fsb_multicast_legacy_sequence_gap_total',
      'Upper bound of events missed from legacy senders: Event-Sequence gaps per Core-UUID, which include every event outside the sender bindings',
      ['node'],
    );
  }

  setPsk(psk: Buffer | null): void {
    this.psk = psk;
  }

  setOpener(opener: SecureOpener | null): void {
    this.opener = opener;
  }

  async start(emit: (item: BridgeEvent) => void): Promise<void> {
    this.emit = emit;
    this.socket.setListener(this.onDatagram, this.onHandOffDrops);
    await this.socket.acquire();
    this.kernelDropsSeen = this.socket.kernelDrops() ?? 0;
    this.kernelPoll = setInterval(() => this.countKernelDrops(), KERNEL_DROPS_POLL_MS);
    this.kernelPoll.unref();
  }

  /** Stops after the datagrams the receiver already read have been decoded. */
  async stop(): Promise<void> {
    if (this.kernelPoll) clearInterval(this.kernelPoll);
    this.kernelPoll = null;
    this.countKernelDrops();
    await this.socket.release();
    this.socket.setListener(() => {}, () => {});
    this.emit = null;
  }

  /**
   * What the kernel dropped for our socket since the last look, as kernel_rcvbuf drops:
   * loss that happened before the receiver could read (the buffer was full), which no
   * sequence counter sees when a legacy sender sent it.
   */
  private countKernelDrops(): void {
    const total = this.socket.kernelDrops();
    if (total === null) return;
    const fresh = total - this.kernelDropsSeen;
    this.kernelDropsSeen = total;
    if (fresh > 0) this.drops.drop('kernel_rcvbuf', `the kernel dropped datagrams for the receive socket (buffer of ${this.socket.receiveBufferBytes} bytes full); raise receive-buffer and net.core.rmem_max`, fresh);
  }

  private syncOwnSkipped(): void {
    const total = this.socket.ownSkipped();
    const fresh = (total - this.ownSkippedSeen) >>> 0;
    this.ownSkippedSeen = total;
    if (fresh > 0) this.ownDatagrams.inc(fresh);
  }

  private readonly onDatagram = (datagram: Buffer): void => this.process(datagram);

  private readonly onHandOffDrops = (count: number): void => {
    this.drops.drop('queue_full', 'the main thread fell behind the receiver: hand-off queue full', count);
  };

  /** Decode one datagram now (also what tests call to feed datagrams synchronously). */
  process(datagram: Buffer): void {
    const emit = this.emit;
    if (!emit) return;
    // Our own datagrams come back with multicast loopback on: skip them before decoding.
    if (this.psk === null && this.opener === null && datagram.length <= this.options.maxDatagramBytes && isOwnPlainDatagram(datagram, this.ownSenderLine)) {
      this.ownDatagrams.inc();
      return;
    }
    let event;
    try {
      event = this.opener
        ? decodeSecureDatagram(datagram, this.opener, this.options.maxDatagramBytes).event
        : decodeDatagram(datagram, this.psk, this.options.maxDatagramBytes).event;
    } catch (error) {
      if (!(error instanceof DatagramError)) throw error;
      // A second copy of an accepted datagram loses nothing (the network, or a replay that failed).
      if (error.reason === 'replayed') this.drops.filtered(error.reason);
      else this.drops.drop(error.reason, error.message);
      return;
    }
    const sender = event.get(SENDER_HEADER);
    if (sender === undefined || sender === '') {
      this.drops.drop('malformed', 'datagram without Multicast-Sender');
      return;
    }
    if (sender === this.options.nodeName) {
      this.ownDatagrams.inc();
      return;
    }
    this.countGaps(event.get(SEQ_HEADER), sender, event.coreUuid, event.sequence);
    if (event.has(SEQ_HEADER)) event.delete(SEQ_HEADER);
    this.counterFor(sender).inc();
    emit({ event, origin: { transport: 'multicast', node: sender, receivedAt: Date.now() } });
  }

  private countGaps(seqHeader: string | undefined, sender: string, coreUuid: string | undefined, eventSequence: number | undefined): void {
    this.options.gaps?.heardFrom?.(sender, seqHeader !== undefined);
    if (seqHeader !== undefined) {
      const colon = seqHeader.lastIndexOf(':');
      const n = Number(seqHeader.slice(colon + 1));
      if (colon > 0 && Number.isSafeInteger(n)) {
        const lost = this.exactGaps.observe(sender + ' ' + seqHeader.slice(0, colon), n);
        if (lost > 0) {
          this.options.metrics.gapsLost.inc({ transport: 'multicast', node: this.options.metrics.nodeLabel(sender) }, lost);
          this.options.gaps?.recordGap(sender, lost, true);
        }
        return;
      }
    }
    if (coreUuid === undefined || eventSequence === undefined) return;
    const lost = this.legacyGaps.observe(coreUuid, eventSequence);
    if (lost > 0) {
      this.legacyGapCounter.inc({ node: this.options.metrics.nodeLabel(sender) }, lost);
      this.options.gaps?.recordGap(sender, lost, false);
    }
  }

  private counterFor(sender: string): Counter.Internal {
    let counter = this.eventsIn.get(sender);
    if (!counter) {
      counter = this.options.metrics.eventsIn.labels({ transport: 'multicast', node: this.options.metrics.nodeLabel(sender) });
      // Senders are cluster nodes; the cap only stops a spoofing flood from growing the cache.
      if (this.eventsIn.size < 1024) this.eventsIn.set(sender, counter);
    }
    return counter;
  }
}
