import type { FsEvent } from '../event/event.js';
import { MulticastSubclass } from '../event/names.js';
import type { EventStream } from '../consumer.js';
import type { Logger } from '../observability/logger.js';
import { DropReporter, type Metrics } from '../observability/metrics.js';
import { DedupCache, SequenceWindow, dedupKey } from './dedup.js';
import { fromMulticastEvent } from './inject.js';
import { isSubscriptionAnswer } from './presence-scope.js';
import { nodeNameProblem } from './peers.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent, type Sink } from './types.js';

export interface PipelineOptions {
  nodeName: string;
  /** Each sink applies its own bindings (they can change on reload) and loop rules. */
  sinks: Sink[];
  dedup: { maxEntries: number; ttlMs: number };
  /** Hands a remote event to the local node (the bridge turns it into multicast::event over ESL). */
  inject: (item: BridgeEvent, key: string) => void;
  /** A copy of an event already handed on: settle its delivery (the bridge acknowledges it, or ties it to the first copy still queued). */
  duplicate?: (item: BridgeEvent, key: string) => void;
  metrics: Metrics;
  logger: Logger;
}

/**
 * The one place events are routed. Local events (ESL) fan out to every sink (each
 * keeps its own bindings); remote events (any transport) are deduplicated, injected into
 * the local node once, and handed to consumers. Everything here is synchronous:
 * sinks buffer on their own, so a slow transport never stalls the others.
 */
export class Pipeline implements EventStream {
  private readonly listeners = new Set<(item: BridgeEvent) => void>();
  private readonly dedup: DedupCache;
  private readonly sequences = new SequenceWindow();
  /** Keys whose injection was refused for room: a later copy is injected (not handed to consumers again). */
  private readonly retryInjection = new Set<string>();
  private readonly drops: DropReporter;

  constructor(private readonly options: PipelineOptions) {
    this.dedup = new DedupCache(options.dedup.maxEntries, options.dedup.ttlMs);
    this.drops = new DropReporter('pipeline', options.metrics, options.logger);
  }

  subscribe(listener: (item: BridgeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** An event from the local FreeSWITCH. */
  local(event: FsEvent, receivedAt = Date.now()): void {
    if (event.has(LOOP_GUARD_HEADER)) {
      this.drops.filtered('loop_guard');
      return;
    }
    if (event.name === 'CUSTOM' && event.subclass === MulticastSubclass.Event) {
      // A legacy mod_event_multicast still loaded on this node received it: treat
      // the original inside as remote, so it is deduplicated against our own copy.
      const original = fromMulticastEvent(event);
      const sender = original.get('Multicast-Sender') ?? 'unknown';
      this.remote({ event: original, origin: { transport: Transport.Multicast, node: sender, receivedAt } });
      return;
    }
    const item: BridgeEvent = { event, origin: { transport: Transport.Esl, node: this.options.nodeName, receivedAt } };
    if (isSubscriptionAnswer(event)) {
      // Meant for one subscription on this node: other nodes (legacy ones too) would show it to every watcher.
      this.drops.filtered('subscription_answer');
    } else {
      for (const sink of this.options.sinks) sink.deliver(item);
    }
    this.publish(item);
  }

  /** An event another node fired, delivered by a transport. */
  remote(item: BridgeEvent): void {
    if (item.origin.node === this.options.nodeName) {
      this.drops.filtered('own_event');
      item.delivery?.ack();
      return;
    }
    const senderProblem = nodeNameProblem(item.origin.node);
    if (senderProblem !== undefined) {
      // A name FreeSWITCH would never have: it could not even be named in Orig-Multicast-Sender or peerup's Peer.
      this.drops.drop('bad_sender', { node: JSON.stringify(item.origin.node.slice(0, 64)), problem: senderProblem, transport: item.origin.transport });
      item.delivery?.ack();
      return;
    }
    const raw = item.event.key;
    if (raw === undefined) {
      this.drops.drop('no_event_key', { node: item.origin.node, name: item.event.name });
      item.delivery?.ack();
      return;
    }
    // Scoped by the sending node: Core-UUID and Event-Sequence are the sender's own
    // claims, so a node that copies another node's Core-UUID into its events must not
    // make the real ones look like duplicates (docs/security.md). Both transports name
    // a bridge by its node name, so the two copies of one event still meet. The length
    // prefix keeps node and key apart without a separator a name could contain.
    const key = dedupKey(`${item.origin.node.length}:${item.origin.node}:${raw}`);
    // Both asked every time: each remembers what the other may have forgotten.
    const first = this.dedup.firstSighting(key);
    const seenInRun = this.recordSequence(item.origin.node, raw);
    if (!first || seenInRun) {
      if (this.retryInjection.delete(key)) {
        this.options.inject(item, key);
        return;
      }
      this.drops.filtered(`duplicate_${item.origin.transport}`);
      if (this.options.duplicate) this.options.duplicate(item, key);
      else item.delivery?.ack();
      return;
    }
    if (isSubscriptionAnswer(item.event)) {
      // A legacy node multicasts its probe answers; injected here they would reach every watcher.
      this.drops.filtered('subscription_answer');
      item.delivery?.ack();
      return;
    }
    this.options.inject(item, key);
    this.publish(item);
  }

  /** Keys read back from the dedup journal: events injected before a restart count as seen. */
  preload(keys: Iterable<string>): void {
    const list = [...keys];
    this.dedup.preload(list);
    for (const key of list) {
      // The journal holds dedupKey forms: `<length>:<node>:<Core-UUID>:<Event-Sequence>` (hashed ones carry no sequence).
      const length = /^(\d+):/.exec(key);
      if (!length) continue;
      const start = length[0].length;
      const node = key.slice(start, start + Number(length[1]));
      if (key[start + node.length] === ':') this.recordSequence(node, key.slice(start + node.length + 1));
    }
  }

  /** Marks an event's `<Core-UUID>:<Event-Sequence>` seen in its run; true when it already was. */
  private recordSequence(node: string, raw: string): boolean {
    const colon = raw.lastIndexOf(':');
    const digits = raw.slice(colon + 1);
    if (colon <= 0 || !/^\d{1,15}$/.test(digits)) return false;
    return this.sequences.record(dedupKey(`${node.length}:${node}:${raw.slice(0, colon)}`), Number(digits));
  }

  /**
   * The injection of `key` was refused because the inject queue was full: the next copy
   * of the event (the other transport's, a redelivery) is injected instead of filtered.
   */
  injectionRefused(key: string): void {
    this.retryInjection.add(key);
    // Bounded like the dedup cache: the oldest refusals are forgotten first.
    if (this.retryInjection.size > this.options.dedup.maxEntries) this.retryInjection.delete(this.retryInjection.values().next().value!);
  }

  /** Events the bridge itself produces for consumers (peerup/peerdown). */
  publish(item: BridgeEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(item);
      } catch (err) {
        this.drops.drop('consumer_error', { error: (err as Error).message });
      }
    }
  }
}
