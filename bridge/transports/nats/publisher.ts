import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type PubAck } from '@nats-io/jetstream';
import type { NatsConfig, NodeConfig } from '../../config/types.js';
import { serializeJson } from '../../event/json.js';
import type { Logger } from '../../observability/logger.js';
import { DropReporter, type Metrics } from '../../observability/metrics.js';
import { LOOP_GUARD_HEADER, type BridgeEvent, type Sink } from '../../pipeline/types.js';
import type { NatsClient } from './connection.js';
import { ensureStream, ORIGIN_NODE_HEADER } from './stream.js';
import { SubjectMapper } from './subjects.js';
import { sharedCounter } from './metrics.js';

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
  readonly msgId: string | undefined;
  readonly bytes: number;
  state: State;
  /** Evicted by overflow while its publish was in flight: counted as sent if acked, as dropped if the publish fails. */
  dropped: boolean;
}

const encoder = new TextEncoder();

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
 */
export class NatsPublisher implements Sink {
  readonly name = 'nats';
  private readonly subjects: SubjectMapper;
  private readonly drops: DropReporter;
  private readonly out;
  private readonly depth;
  private readonly duplicates;
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
  private js: JetStreamClient | null = null;
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
    this.depth = deps.metrics.queueDepth.labels({ component: 'nats_publisher' });
    this.duplicates = sharedCounter(deps.metrics, 'fsb_nats_publish_duplicates_total', 'Publishes JetStream reported as duplicates (resends after a failure, or the same event delivered twice)');
    this.stopTimeoutMs = deps.stopTimeoutMs ?? 5_000;
    this.ackTimeoutMs = deps.ackTimeoutMs ?? 5_000;
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
      data = encoder.encode(serializeJson(event));
    } catch (err) {
      this.drops.drop('serialize_failed', err);
      return;
    }
    const subject = this.subjects.subject(this.deps.node.name, event.name, event.subclass);
    const entry: Entry = { subject, data, msgId: event.key, bytes: data.length + subject.length, state: State.Waiting, dropped: false };
    this.items.push(entry);
    this.bytes += entry.bytes;
    this.enforceLimits();
    this.depth.set(this.pending);
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
    const js = this.js;
    if (!js || !this.streamReady || this.failing || !this.deps.client.connected) return;
    const max = this.config.maxInFlight;
    while (this.inFlight < max && this.next < this.items.length) {
      const entry = this.items[this.next++];
      if (entry.state !== State.Waiting) continue;
      entry.state = State.InFlight;
      this.inFlight++;
      js.publish(entry.subject, entry.data, {
        msgID: entry.msgId,
        headers: this.headersFor(),
        timeout: this.ackTimeoutMs,
        // Our own resend loop keeps order; library retries would not.
        retries: 0,
      }).then(
        (ack) => this.onAck(entry, ack),
        (err: unknown) => this.onFail(entry, err),
      );
    }
  }

  /** Built per send, not per deliver(): the library takes ownership and adds Nats-Msg-Id to it. */
  private headersFor(): MsgHdrs {
    const h = natsHeaders();
    h.set(ORIGIN_NODE_HEADER, this.deps.node.name);
    return h;
  }

  private onAck(entry: Entry, ack: PubAck): void {
    this.inFlight--;
    if (!entry.dropped) {
      entry.state = State.Acked;
      if (ack.duplicate) this.duplicates.inc();
      else this.out.inc();
      while (this.head < this.items.length && this.items[this.head].state === State.Acked) this.removeHead();
      this.depth.set(this.pending);
      this.retryDelayMs = 100;
    } else if (!ack.duplicate) {
      this.out.inc();
    }
    this.afterSettle();
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
      this.js = jetstream(nc);
      this.streamReady = true;
      this.schedulePump();
    } catch (err) {
      // JetStream may still be electing a leader after a cluster restart: try again.
      this.deps.logger.warn({ component: 'nats_publisher', err, stream: this.config.stream.name }, 'JetStream stream not ready; retrying');
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
    this.retryTimer = this.streamTimer = null;
    if (this.pending > 0) {
      this.drops.drop('shutdown', { timeoutMs: this.stopTimeoutMs }, this.pending);
      this.items = [];
      this.head = this.next = this.bytes = 0;
      this.depth.set(0);
    }
  }
}
