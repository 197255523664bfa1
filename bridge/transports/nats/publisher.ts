import { createInbox, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConfig, NodeConfig } from '../../config/types.js';
import { NatsStreamLimitError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { DropReporter, QueueGauges, type Metrics } from '../../observability/metrics.js';
import { LOOP_GUARD_HEADER, type BridgeEvent, type Sink } from '../../pipeline/types.js';
import type { NatsClient } from './connection.js';
import { encodePayload, PAYLOAD_TYPE, PAYLOAD_TYPE_HEADER } from './payload.js';
import { ensureStream, ORIGIN_NODE_HEADER } from './stream.js';
import { SubjectMapper } from './subjects.js';

export interface NatsPublisherDeps {
  client: NatsClient;
  node: NodeConfig;
  metrics: Metrics;
  logger: Logger;
  /** How long stop() waits for the buffer to drain. */
  stopTimeoutMs?: number;
  /** How long one publish waits for its JetStream ack before it counts as failed. */
  ackTimeoutMs?: number;
}

const enum State {
  Waiting,
  InFlight,
  Acked,
}

interface Entry {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Nats-Msg-Id; replaced once by a fresh one if another publisher already holds it (see onAck). */
  msgId: string | undefined;
  /** Times sent: a duplicate answer to a first send is not a resend of ours. */
  sends: number;
  readonly bytes: number;
  state: State;
  /** Evicted by overflow while its publish was in flight: counted as sent if acked, as dropped if the publish fails. */
  dropped: boolean;
  /** performance.now() of the last send, for the ack timeout sweep. */
  sentAt: number;
}

/** What JetStream answers on the reply subject of a stored (or refused) publish. */
interface PubAckJson {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code?: number; description?: string };
}

const MSG_ID_HEADER = 'Nats-Msg-Id';
/** What a Nats-Msg-Id may not hold as it is: a header line ends at CR or LF, and % escapes them. */
const NOT_IN_MSG_ID = /[%\r\n]/g;
const MSG_ID_ESCAPES: Record<string, string> = { '%': '%25', '\r': '%0D', '\n': '%0A' };
/** Separates an event key from the random part of a replacement Nats-Msg-Id. */
const REKEYED = '~';
/** Enough to recognise the same event delivered twice in a row; ~100 bytes each. */
const STORED_IDS_REMEMBERED = 4_096;
const decoder = new TextDecoder();

/**
 * The header block of every publish, encoded once: only Nats-Msg-Id changes from one
 * event to the next. nats.js's publish() calls nothing but encode() on the headers it is
 * given, while its MsgHdrs would re-check, re-join and re-encode every header on each
 * set() and encode() (about 2% of the bridge's CPU at saturation, docs/benchmarks.md);
 * nats-core has no way to hand it bytes, so a minimal MsgHdrs stands in for it.
 *
 * The id comes from the event (Core-UUID:Event-Sequence), i.e. from the wire: CR, LF
 * and % are written as %0D, %0A and %25, so a header line can neither end early nor be
 * injected, and distinct ids stay distinct. The same event always gets the same id.
 */
class PublishHeaders {
  /** The block without Nats-Msg-Id. */
  readonly withoutId: MsgHdrs;
  /** The block up to the Nats-Msg-Id value (the empty line that ends a block follows the id). */
  private readonly idPrefix: string;

  constructor(fields: readonly [string, string][]) {
    // nats.js builds the fixed part (and checks its names and values) once; toString() is its encoding's text.
    const fixed = natsHeaders();
    for (const [name, value] of fields) fixed.set(name, value);
    const text = fixed.toString();
    this.withoutId = encoded(Buffer.from(text, 'utf8'));
    this.idPrefix = `${text.slice(0, -2)}${MSG_ID_HEADER}: `;
  }

  withId(msgId: string): MsgHdrs {
    const id = msgId.replace(NOT_IN_MSG_ID, (c) => MSG_ID_ESCAPES[c]);
    // One string, one UTF-8 encode: cheaper than copying the fixed bytes and writing the id after them.
    return encoded(Buffer.from(`${this.idPrefix}${id}\r\n\r\n`, 'utf8'));
  }
}

/** Headers nats.js publishes as these bytes. */
function encoded(block: Uint8Array): MsgHdrs {
  return { encode: () => block } as unknown as MsgHdrs;
}

/**
 * Publishes local events to JetStream.
 *
 * deliver() only serializes and appends to a bounded FIFO; a pump sends from the
 * FIFO with at most maxInFlight unacknowledged publishes. The FIFO is both the
 * in-flight window and the outage buffer, so an event leaves it only when JetStream
 * acknowledged it. On any failed publish the pump stops, waits for the window to
 * settle, then resends every unacknowledged event from the oldest, in order: the
 * ones the server had stored already come back as duplicates (Nats-Msg-Id), so the
 * stream keeps the node's order. Overflow drops the oldest events, counted.
 *
 * Each send is a core publish whose reply subject is `<own inbox>.<n>`; JetStream
 * answers there with its PubAck JSON, and one wildcard subscription matches the answer
 * to the in-flight entry by n. One periodic sweep fails the entries whose ack is
 * overdue. js.publish() would instead cost a promise, a timer and a request-mux entry
 * per event: a quarter of the bridge's CPU at 6k events/s (docs/benchmarks.md).
 */
export class NatsPublisher implements Sink {
  readonly name = 'nats';
  private readonly subjects: SubjectMapper;
  private readonly drops: DropReporter;
  private readonly out;
  private readonly queueGauges;
  private readonly duplicates;
  private readonly msgIdConflicts;
  /** Nats-Msg-Ids this publisher got stored lately (insertion order, bounded): a duplicate of one is our own event again. */
  private readonly storedIds = new Set<string>();
  /**
   * The same ids in a ring, oldest at `storedNext`: evicting through the Set's own order
   * (`values().next()`) walks over the slots V8 leaves behind deleted entries until the
   * next rehash, 1.7% of the bridge's CPU at saturation (docs/benchmarks.md).
   */
  private readonly storedRing: (string | undefined)[] = new Array<string | undefined>(STORED_IDS_REMEMBERED);
  private storedNext = 0;
  private readonly stopTimeoutMs: number;
  private readonly ackTimeoutMs: number;

  private items: Entry[] = [];
  private head = 0;
  /** Index in `items` of the next entry to send. */
  private next = 0;
  private bytes = 0;
  private inFlight = 0;
  private failing = false;
  private retryDelayMs = 100;
  private retryTimer: NodeJS.Timeout | null = null;
  private streamTimer: NodeJS.Timeout | null = null;
  private pumpScheduled = false;
  private nc: NatsConnection | null = null;
  private acks: Subscription | null = null;
  private inbox = '';
  /** Reply-subject number of the next send; never reused, so a late ack cannot settle a resend. */
  private sendNumber = 0;
  /** Sends awaiting their ack by reply-subject number; insertion order is send order. */
  private readonly awaiting = new Map<number, Entry>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly headers: PublishHeaders;
  private streamReady = false;
  private stopping = false;
  private unlisten: (() => void) | null = null;
  private drained: (() => void) | null = null;

  constructor(
    private readonly config: NatsConfig,
    private readonly deps: NatsPublisherDeps,
  ) {
    this.subjects = new SubjectMapper(config.subjectPrefix, deps.node.cluster);
    this.drops = new DropReporter('nats_publisher', deps.metrics, deps.logger);
    this.out = deps.metrics.eventsOut.labels({ transport: 'nats' });
    this.queueGauges = new QueueGauges(deps.metrics, 'nats_publisher', () => this.pending, () => this.bytes);
    this.duplicates = deps.metrics.counter('fsb_nats_publish_duplicates_total', 'Publishes JetStream reported as duplicates (resends after a failure, or the same event delivered twice)');
    this.msgIdConflicts = deps.metrics.counter(
      'fsb_nats_publish_msgid_conflicts_total',
      'First publishes JetStream answered as duplicates of a message another publisher stored under the same Nats-Msg-Id; each is sent again under a fresh id (docs/security.md)',
    );
    this.stopTimeoutMs = deps.stopTimeoutMs ?? 5_000;
    this.ackTimeoutMs = deps.ackTimeoutMs ?? 5_000;
    this.headers = new PublishHeaders([
      [ORIGIN_NODE_HEADER, deps.node.name],
      [PAYLOAD_TYPE_HEADER, PAYLOAD_TYPE[config.payloadFormat]],
    ]);
  }

  /** Events waiting or in flight. */
  get pending(): number {
    return this.items.length - this.head;
  }

  get pendingBytes(): number {
    return this.bytes;
  }

  deliver(item: BridgeEvent): void {
    const event = item.event;
    if (this.stopping) {
      this.drops.drop('stopped');
      return;
    }
    // Never republish what the bridge injected: that is how two bridged nodes would loop.
    if (event.has(LOOP_GUARD_HEADER) || !this.config.bindings.matches(event)) return;
    let data: Uint8Array;
    try {
      data = encodePayload(event, this.config.payloadFormat);
    } catch (err) {
      this.drops.drop('serialize_failed', err);
      return;
    }
    const subject = this.subjects.subject(this.deps.node.name, event.name, event.subclass);
    const entry: Entry = { subject, data, msgId: event.key, sends: 0, bytes: data.length + subject.length, state: State.Waiting, dropped: false, sentAt: 0 };
    this.items.push(entry);
    this.bytes += entry.bytes;
    this.enforceLimits();
    this.queueGauges.changed();
    this.schedulePump();
  }

  private enforceLimits(): void {
    const { maxEvents, maxBytes } = this.config.buffer;
    let dropped = 0;
    while (this.pending > 0 && (this.pending > maxEvents || this.bytes > maxBytes)) {
      const entry = this.items[this.head];
      this.removeHead();
      // An in-flight event may still be stored: it counts as dropped only if its publish fails.
      if (entry.state === State.InFlight) entry.dropped = true;
      else dropped++;
    }
    if (dropped > 0) this.drops.drop('buffer_full', { maxEvents, maxBytes }, dropped);
  }

  private removeHead(): void {
    const entry = this.items[this.head];
    this.bytes -= entry.bytes;
    this.head++;
    if (this.next < this.head) this.next = this.head;
    // Compact now and then instead of shift() per event (O(n) each).
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.next -= this.head;
      this.head = 0;
    }
  }

  private removeAckedHead(): void {
    while (this.head < this.items.length && this.items[this.head].state === State.Acked) this.removeHead();
    this.queueGauges.changed();
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    // Batch a burst of deliver() calls into one pump run after the current tick.
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    const nc = this.nc;
    if (!nc || !this.streamReady || this.failing || !this.deps.client.connected) return;
    const max = this.config.maxInFlight;
    const now = performance.now();
    while (this.inFlight < max && this.next < this.items.length) {
      const entry = this.items[this.next++];
      if (entry.state !== State.Waiting) continue;
      const headers = entry.msgId === undefined ? this.headers.withoutId : this.headers.withId(entry.msgId);
      const maxPayload = nc.info?.max_payload;
      if (maxPayload !== undefined && entry.data.length > maxPayload) {
        // Resending would never succeed and would hold every later event back.
        this.drops.drop('too_large', { bytes: entry.data.length, maxPayload });
        entry.state = State.Acked;
        this.removeAckedHead();
        continue;
      }
      const n = ++this.sendNumber;
      try {
        nc.publish(entry.subject, entry.data, { reply: this.inbox + n, headers });
      } catch (err) {
        // Closed or draining connection: the same path as a refused publish (hold and resend in order).
        entry.state = State.InFlight;
        this.inFlight++;
        this.onFail(entry, err);
        return;
      }
      entry.state = State.InFlight;
      entry.sentAt = now;
      entry.sends++;
      this.inFlight++;
      this.awaiting.set(n, entry);
    }
  }

  private readonly onAckMessage = (err: Error | null, msg: Msg): void => {
    if (err) return;
    const n = Number(msg.subject.slice(this.inbox.length));
    const entry = this.awaiting.get(n);
    // Already timed out (and held for resend): the resend gets its own answer.
    if (entry === undefined) return;
    this.awaiting.delete(n);
    const ack = parseAck(msg);
    if (typeof ack === 'string') this.onFail(entry, new Error(ack));
    else this.onAck(entry, ack.duplicate === true);
  };

  /** Fails every send whose ack is overdue; sends are in the map in send order. */
  private sweep(): void {
    const deadline = performance.now() - this.ackTimeoutMs;
    for (const [n, entry] of this.awaiting) {
      if (entry.sentAt > deadline) break;
      this.awaiting.delete(n);
      this.onFail(entry, new Error(`no JetStream ack within ${this.ackTimeoutMs} ms`));
    }
  }

  /** The link went down: nothing in flight will be answered on this connection's turn. */
  private failAllInFlight(): void {
    const pending = [...this.awaiting.values()];
    this.awaiting.clear();
    for (const entry of pending) this.onFail(entry, new Error('NATS link down'));
  }

  private onAck(entry: Entry, duplicate: boolean): void {
    if (duplicate && entry.sends === 1 && entry.msgId !== undefined && !this.storedIds.has(entry.msgId)) {
      // JetStream dedups by Nats-Msg-Id across the whole stream, and any publisher can set
      // the header: another one stored a message under this id first (a node predicting
      // our Core-UUID:Event-Sequence to suppress our events, or a second bridge for this
      // FreeSWITCH). Send it again under an id nobody can predict, in order with the rest.
      this.msgIdConflicts.inc();
      entry.msgId += REKEYED + randomBytes(8).toString('hex');
      this.onFail(entry, new Error('Nats-Msg-Id already used by another publisher; resending under a fresh id'));
      return;
    }
    if (!duplicate && entry.msgId !== undefined) this.rememberStored(entry.msgId);
    this.inFlight--;
    if (!entry.dropped) {
      entry.state = State.Acked;
      if (duplicate) this.duplicates.inc();
      else this.out.inc();
      this.removeAckedHead();
      this.retryDelayMs = 100;
    } else if (!duplicate) {
      this.out.inc();
    }
    this.afterSettle();
  }

  private rememberStored(msgId: string): void {
    if (this.storedIds.has(msgId)) return;
    const evicted = this.storedRing[this.storedNext];
    if (evicted !== undefined) this.storedIds.delete(evicted);
    this.storedRing[this.storedNext] = msgId;
    this.storedNext = (this.storedNext + 1) % STORED_IDS_REMEMBERED;
    this.storedIds.add(msgId);
  }

  private onFail(entry: Entry, err: unknown): void {
    this.inFlight--;
    if (!entry.dropped) {
      entry.state = State.Waiting;
      if (!this.failing) {
        this.failing = true;
        this.deps.logger.warn({ component: 'nats_publisher', err, pending: this.pending }, 'JetStream publish failed; holding events and resending in order');
      }
    } else {
      const { maxEvents, maxBytes } = this.config.buffer;
      this.drops.drop('buffer_full', { maxEvents, maxBytes });
    }
    this.afterSettle();
  }

  private afterSettle(): void {
    if (this.failing) {
      if (this.inFlight === 0 && this.retryTimer === null) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.failing = false;
          for (let i = this.head; i < this.items.length; i++) if (this.items[i].state === State.InFlight) this.items[i].state = State.Waiting;
          this.next = this.head;
          this.pump();
        }, this.retryDelayMs);
        this.retryDelayMs = Math.min(this.retryDelayMs * 2, 2_000);
      }
    } else {
      this.pump();
    }
    if (this.pending === 0) this.drained?.();
  }

  async start(): Promise<void> {
    this.unlisten = this.deps.client.onChange((up) => {
      if (up) this.onConnected();
      else this.onDisconnected();
    });
    await this.deps.client.start();
    if (this.deps.client.connected) await this.prepareStream();
  }

  /**
   * Publishes in flight when the link dropped may or may not have been stored.
   * Sending newer events before those settle could store them first, so hold
   * everything until the window settles, then resend from the oldest unacknowledged.
   */
  private onDisconnected(): void {
    if (!this.failing) {
      this.failing = true;
      this.deps.logger.warn({ component: 'nats_publisher', pending: this.pending }, 'NATS link down; buffering events');
    }
    // Sends in flight may or may not be stored; their resends are deduplicated by Nats-Msg-Id.
    this.failAllInFlight();
    this.afterSettle();
  }

  private onConnected(): void {
    if (!this.streamReady) void this.prepareStream();
    else this.schedulePump();
  }

  private async prepareStream(): Promise<void> {
    const nc = this.deps.client.connection;
    if (!nc || this.streamReady || this.streamTimer) return;
    try {
      const jsm = await jetstreamManager(nc);
      await ensureStream(jsm, this.config.stream, this.subjects.clusterWildcard, this.deps.logger);
      if (this.stopping) return;
      // nats.js resubscribes after every reconnect, so one subscription serves the connection's life.
      this.inbox = createInbox(this.deps.client.inboxPrefix) + '.';
      this.acks = nc.subscribe(this.inbox + '*', { callback: this.onAckMessage });
      this.nc = nc;
      this.sweepTimer = setInterval(() => this.sweep(), Math.max(10, Math.min(1_000, this.ackTimeoutMs / 4)));
      this.sweepTimer.unref();
      this.streamReady = true;
      this.schedulePump();
    } catch (err) {
      // JetStream may still be electing a leader after a cluster restart: try again. A stream
      // too large for the servers is a configuration error, but the servers' limits may be
      // raised without restarting the bridge, so it is retried as well, logged as an error.
      if (err instanceof NatsStreamLimitError) this.deps.logger.error({ component: 'nats_publisher', err: err.message, code: err.code }, 'JetStream stream cannot be created; retrying');
      else this.deps.logger.warn({ component: 'nats_publisher', err, stream: this.config.stream.name }, 'JetStream stream not ready; retrying');
      this.streamTimer = setTimeout(() => {
        this.streamTimer = null;
        void this.prepareStream();
      }, 1_000);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.pending > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.stopTimeoutMs);
        this.drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.unlisten?.();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.streamTimer) clearTimeout(this.streamTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.retryTimer = this.streamTimer = this.sweepTimer = null;
    if (this.acks && !this.acks.isClosed()) this.acks.unsubscribe();
    this.acks = null;
    this.awaiting.clear();
    if (this.pending > 0) {
      this.drops.drop('shutdown', { timeoutMs: this.stopTimeoutMs }, this.pending);
      this.items = [];
      this.head = this.next = this.bytes = 0;
      this.queueGauges.update();
    }
  }
}

/** The PubAck, or why JetStream did not store the message. */
function parseAck(msg: Msg): PubAckJson | string {
  // No stream listens on the subject (the server answers 503 "no responders").
  if (msg.data.length === 0) return `JetStream did not answer (${msg.headers?.code ?? 'empty'} ${msg.headers?.description ?? ''})`.trim();
  let ack: PubAckJson;
  try {
    ack = JSON.parse(decoder.decode(msg.data)) as PubAckJson;
  } catch {
    return 'JetStream answered with something that is not a PubAck';
  }
  if (ack.error) return `JetStream refused the publish: ${ack.error.code ?? ''} ${ack.error.description ?? ''}`.trim();
  if (typeof ack.stream !== 'string' || ack.stream === '') return 'invalid JetStream ack';
  return ack;
}
