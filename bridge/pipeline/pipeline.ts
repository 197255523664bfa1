import type { FsEvent } from '../event/event.js';
import { MulticastSubclass } from '../event/names.js';
import type { EventStream } from '../consumer.js';
import type { Logger } from '../observability/logger.js';
import { DropReporter, type Metrics } from '../observability/metrics.js';
import { DedupCache } from './dedup.js';
import { fromMulticastEvent } from './inject.js';
import { isSubscriptionAnswer } from './presence-scope.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent, type Sink } from './types.js';

export interface PipelineOptions {
  nodeName: string;
  /** Each sink applies its own bindings (they can change on reload) and loop rules. */
  sinks: Sink[];
  dedup: { maxEntries: number; ttlMs: number };
  /** Hands a remote event to the local node (the bridge turns it into multicast::event over ESL). */
  inject: (item: BridgeEvent) => void;
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
      return;
    }
    const key = item.event.key;
    if (key === undefined) {
      this.drops.drop('no_event_key', { node: item.origin.node, name: item.event.name });
      return;
    }
    // Scoped by the sending node: Core-UUID and Event-Sequence are the sender's own
    // claims, so a node that copies another node's Core-UUID into its events must not
    // make the real ones look like duplicates (docs/security.md). Both transports name
    // a bridge by its node name, so the two copies of one event still meet.
    if (!this.dedup.firstSighting(`${item.origin.node}\n${key}`)) {
      this.drops.filtered(`duplicate_${item.origin.transport}`);
      return;
    }
    if (isSubscriptionAnswer(item.event)) {
      // A legacy node multicasts its probe answers; injected here they would reach every watcher.
      this.drops.filtered('subscription_answer');
      return;
    }
    this.options.inject(item);
    this.publish(item);
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
