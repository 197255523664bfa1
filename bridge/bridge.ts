import type { Counter } from 'prom-client';
import type { BridgeConfig } from './config/types.js';
import { consumersHealth, type Consumer, type ConsumerContext, type EventStream, type LocalNode, type StateStore } from './consumer.js';
import type { FsEvent } from './event/event.js';
import { InjectQueueFullError, JournalError, NotConnectedError } from './errors.js';
import type { Logger } from './observability/logger.js';
import { MulticastSubclass } from './event/names.js';
import { Budget, DropReporter, Metrics, registerStateGauges } from './observability/metrics.js';
import { StatusServer } from './observability/http.js';
import { Board } from './observability/board/board.js';
import { Bindings } from './pipeline/bindings.js';
import { DedupJournal } from './pipeline/dedup.js';
import { injectionOrderKey, sanitizeForInjection, toMulticastEvent } from './pipeline/inject.js';
import { PeerTracker } from './pipeline/peers.js';
import { Pipeline } from './pipeline/pipeline.js';
import { LOOP_GUARD_HEADER, type BridgeEvent, type Delivery, type RemoteSource, type Sink } from './pipeline/types.js';
import { EslClient, EslState, sendeventCommand } from './sources/esl/client.js';
import { EslInjector, type InjectOutcome } from './sources/esl/injector.js';
import { MulticastTransport } from './transports/multicast/transport.js';
import { NatsClient } from './transports/nats/connection.js';
import { openStateStore } from './transports/nats/kv.js';
import { nodeInboxPrefix } from './transports/nats/permissions.js';
import { NatsPublisher } from './transports/nats/publisher.js';
import { NatsSubscriber } from './transports/nats/subscriber.js';

export interface BridgeOptions {
  logger: Logger;
  metrics?: Metrics;
  /** Consumers run in-process (the CLI builds the ones enabled in config). */
  consumers?: Consumer[];
}

/** A LocalNode over an ESL client whose sendevent always carries the loop guard. */
export function guardedLocalNode(esl: Pick<EslClient, 'api' | 'sendEvent'>, nodeName: string): LocalNode {
  return {
    api: (command) => esl.api(command),
    sendEvent: async (event) => {
      const guarded = event.clone();
      guarded.set(LOOP_GUARD_HEADER, nodeName);
      await esl.sendEvent(guarded);
    },
  };
}

/** Where a browser opens the board served on `address`. */
export function boardUrl(address: { address: string; port: number }): string {
  const host = address.address.includes(':') ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}/board/`;
}

/** Local events the consumers need whatever the transports carry. */
const CONSUMER_BINDINGS = 'CUSTOM sofia::register sofia::unregister sofia::expire';
/** How long a NATS message the inject queue had no room for waits before JetStream delivers it again. */
const REDELIVER_WHEN_FULL_MS = 1_000;
/**
 * Per 10 s: peer change log lines, and peerup/peerdown injected into FreeSWITCH. A
 * 100-node cluster coming up at once passes; a flood of invented senders costs
 * FreeSWITCH at most 10 events/s (the rest are counted as peer_event_rate drops, and
 * still reach the consumers).
 */
const PEER_BUDGET_INTERVAL_MS = 10_000;
const PEER_LOG_BUDGET = 20;
export const PEER_EVENT_BUDGET = 100;

/**
 * The composition root: the one module that knows every source, transport and
 * consumer, and wires them through the pipeline. Transports never see each other.
 */
export class Bridge {
  readonly metrics: Metrics;
  readonly pipeline: Pipeline;
  readonly peers: PeerTracker;
  readonly esl: EslClient;
  /** Command-only ESL connections that carry everything the bridge injects. */
  readonly injector: EslInjector;
  private readonly logger: Logger;
  private readonly drops: DropReporter;
  private readonly multicast: MulticastTransport | null;
  private readonly natsClient: NatsClient | null;
  private readonly sinks: Sink[] = [];
  private readonly sources: RemoteSource[] = [];
  private readonly consumers: Consumer[];
  private readonly status: StatusServer;
  private readonly board: Board | null;
  private statusAddress: { address: string; port: number } | null = null;
  private journal: DedupJournal | null = null;
  /** Dedup keys of remote events queued for injection and not yet written. */
  private readonly pendingKeys = new Set<string>();
  /** Deliveries of copies that arrived while the first copy waited: settled with it. */
  private readonly waitingCopies = new Map<string, Delivery[]>();
  private readonly deferred: Counter;
  private readonly unconfirmed: Counter<'transport'>;
  /** Every part started: consumers with their state written, then the remote sources (a new NATS durable delivers only what comes after it). */
  private started = false;
  private readonly peerEvents: Counter<'event'>;
  /** Peer changes logged one line each; a flood of invented senders is summarized instead. */
  private readonly peerLogBudget = new Budget(PEER_LOG_BUDGET, PEER_BUDGET_INTERVAL_MS);
  private readonly peerInjectBudget = new Budget(PEER_EVENT_BUDGET, PEER_BUDGET_INTERVAL_MS);
  private pump: Promise<void> | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private lastTotals = new Map<string, number>();
  private stopped = false;

  constructor(
    readonly config: BridgeConfig,
    options: BridgeOptions,
  ) {
    this.logger = options.logger;
    this.metrics = options.metrics ?? new Metrics({ defaultMetrics: true, maxNodeLabels: config.multicast.maxPeers });
    this.consumers = options.consumers ?? [];
    this.drops = new DropReporter('bridge', this.metrics, this.logger);
    const node = config.node;
    const deps = { metrics: this.metrics, logger: this.logger };

    const untracked = this.metrics.counter('fsb_peers_untracked_events_total', 'Remote events whose sender found the peer table full of peers that are up (max-peers): delivered, but the sender is not tracked and gets no peerup');
    this.peerEvents = this.metrics.counter('fsb_peer_events_total', 'peerup and peerdown events, by event (all reach the consumers; FreeSWITCH gets at most PEER_EVENT_BUDGET per 10 s)', ['event']);
    this.peers = new PeerTracker((event, peer) => this.onPeerEvent(event, peer), {
      timeoutMs: config.multicast.peerTimeoutMs,
      checkIntervalMs: Math.max(50, Math.min(5_000, Math.floor(config.multicast.peerTimeoutMs / 4))),
      maxPeers: config.multicast.maxPeers,
      forgetAfterMs: config.multicast.peerForgetMs,
      onUntracked: () => untracked.inc(),
    });
    const peerCounts = (state: 'held' | 'up') => this.peers.counts()[state];
    this.metrics.gauge('fsb_peers', 'Peers tracked (held) and, of those, up', ['state'], (gauge) => {
      gauge.set({ state: 'held' }, peerCounts('held'));
      gauge.set({ state: 'up' }, peerCounts('up'));
    });

    this.multicast = config.multicast.enabled ? new MulticastTransport(config.multicast, { nodeName: node.name, gaps: this.peers, ...deps }) : null;
    if (this.multicast) {
      this.sinks.push(this.multicast.sink);
      this.sources.push(this.multicast.source);
    }
    this.natsClient = config.nats.enabled ? new NatsClient(config.nats, { name: `fs-event-bridge ${node.name}`, logger: this.logger, inboxPrefix: nodeInboxPrefix(config.nats.subjectPrefix, node.cluster, node.name) }) : null;
    if (this.natsClient) {
      this.sinks.push(new NatsPublisher(config.nats, { client: this.natsClient, node, ...deps }));
      this.sources.push(new NatsSubscriber(config.nats, { client: this.natsClient, node, ...deps }));
    }

    this.pipeline = new Pipeline({
      nodeName: node.name,
      sinks: this.sinks,
      dedup: config.dedup,
      inject: (item, key) => this.inject(item, key),
      duplicate: (item, key) => this.duplicate(item, key),
      ...deps,
    });
    this.injector = new EslInjector(config.esl, config.inject, {
      nodeName: node.name,
      onWritten: (keys) => this.journal?.record(keys),
      ...deps,
    });
    this.deferred = this.metrics.counter('fsb_inject_deferred_total', 'NATS messages the inject queue had no room for, left to JetStream to deliver again (not lost)');
    this.unconfirmed = this.metrics.counter(
      'fsb_inject_unconfirmed_total',
      'Injections written to FreeSWITCH whose reply never came because the ESL connection closed: most likely delivered (FreeSWITCH reads what reached its socket), not written again',
      ['transport'],
    );

    const subscribed = [config.multicast.enabled && config.multicast.bindings, config.nats.enabled && config.nats.bindings].filter((b): b is Bindings => b !== false);
    if (this.consumers.length > 0) subscribed.push(Bindings.parse(CONSUMER_BINDINGS));
    for (const consumer of this.consumers) if (consumer.localBindings) subscribed.push(Bindings.parse(consumer.localBindings));
    this.esl = new EslClient(config.esl, {
      subscription: Bindings.union(subscribed).toEslSubscription() || 'HEARTBEAT',
      nodeName: node.name,
      ...deps,
    });
    const board = config.metrics.board;
    this.board = board
      ? new Board({ node, role: 'bridge', status: () => this.statusReport(), peers: () => this.peers.list(), events: this.pipeline, metrics: this.metrics, consumers: this.consumers }, board, this.logger)
      : null;
    this.status = new StatusServer(
      this.metrics,
      {
        ready: () => this.ready,
        status: () => this.statusReport(),
        peers: () => this.peers.list(),
      },
      this.board ? [this.board.route] : [],
    );
    const nats = this.natsClient;
    registerStateGauges(this.metrics, {
      node,
      eslConnected: () => this.esl.state === EslState.Connected,
      natsConnected: nats ? () => nats.connected : undefined,
      peers: () => this.peers.list(),
    });
  }

  /** The stream consumers subscribe to: local events and deduplicated remote ones. */
  get events(): EventStream {
    return this.pipeline;
  }

  /** ESL up (events and injection), every consumer's state written, the remote sources listening. */
  get ready(): boolean {
    return !this.stopped && this.esl.state === EslState.Connected && this.injector.connected && this.started;
  }

  /** Where the status server listens (port 0 in config picks a free one). */
  get statusEndpoint(): { address: string; port: number } | null {
    return this.statusAddress;
  }

  /**
   * What a consumer may do to the local node: api, and sendevent with the loop guard,
   * through the injector like remote events (so a call's events keep their order).
   */
  get local(): LocalNode {
    return {
      api: (command) => this.esl.api(command),
      sendEvent: (event) => {
        const guarded = event.clone();
        guarded.set(LOOP_GUARD_HEADER, this.config.node.name);
        return new Promise<void>((resolve, reject) => {
          const accepted = this.injector.offer({
            // Throws HeaderInjectionError / InvalidEslHeaderError: a consumer's own event is not silently repaired.
            command: sendeventCommand(guarded),
            event: guarded,
            orderKey: injectionOrderKey(event),
            done: (outcome, error) => (outcome === 'injected' ? resolve() : reject(error ?? new NotConnectedError(`injection ${outcome}`))),
          });
          if (!accepted) reject(new InjectQueueFullError(this.config.inject.queueMaxBytes));
        });
      },
    };
  }

  /**
   * `eslTimeoutMs`: how long to wait for FreeSWITCH before starting the rest anyway (the
   * ESL client keeps retrying). When a part fails to start (a consumer's database, say),
   * what already started is stopped again before the error is thrown, so the process
   * can exit instead of idling with /ready false.
   */
  async start(options: { eslTimeoutMs?: number } = {}): Promise<void> {
    try {
      await this.startParts(options.eslTimeoutMs ?? 10_000);
    } catch (err) {
      await this.stop().catch((stopErr: unknown) => this.logger.warn({ err: stopErr }, 'stop after a failed start failed'));
      throw err;
    }
  }

  private async startParts(eslTimeoutMs: number): Promise<void> {
    const { config } = this;
    if (config.metrics.enabled) {
      const address = await this.status.listen(config.metrics.host, config.metrics.port);
      this.statusAddress = { address: address.address, port: address.port };
    }
    if (this.natsClient) await this.natsClient.start();
    for (const sink of this.sinks) await sink.start();

    // Order matters. ESL first: until the pump runs, its events wait in the client's
    // bounded queue (FreeSWITCH holds the rest). Consumers next, once ESL is up,
    // since loading their state relights lamps on the local node. Then local events
    // flow, and only then remote sources start: a NATS durable consumer delivers
    // what arrived meanwhile, and nothing is injected into a node we cannot reach yet.
    this.openJournal();
    this.esl.start();
    this.injector.start();
    try {
      await Promise.all([this.esl.ready(eslTimeoutMs), this.injector.ready(eslTimeoutMs)]);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'FreeSWITCH not reachable yet; retrying in the background');
    }
    const context = this.consumerContext();
    for (const consumer of this.consumers) await consumer.start(context);
    this.board?.start();
    this.pump = this.pumpLocalEvents();
    // NATS waits while the inject queue is full: its messages stay in JetStream meanwhile.
    const control = { backpressure: () => this.injector.room() };
    for (const source of this.sources) await source.start(this.remote, control);
    this.started = true;
    this.peers.start();
    if (config.statsIntervalMs > 0) {
      this.statsTimer = setInterval(() => void this.logStats(), config.statsIntervalMs);
      this.statsTimer.unref();
    }
    this.logger.info(
      {
        node: config.node.name,
        multicast: config.multicast.enabled ? `${config.multicast.address}:${config.multicast.port}` : 'off',
        nats: config.nats.enabled ? config.nats.servers : 'off',
        status: this.statusAddress,
        board: this.board && this.statusAddress ? boardUrl(this.statusAddress) : 'off',
      },
      'bridge started',
    );
  }

  /** Graceful stop: no new input first, then flush what is held, then close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.statsTimer) clearInterval(this.statsTimer);
    await this.esl.stop();
    await this.pump;
    this.peers.stop();
    for (const source of this.sources) await source.stop();
    for (const consumer of this.consumers) await consumer.stop();
    // FreeSWITCH gets what is queued, within the command timeout.
    await this.injector.stop(Date.now() + this.config.esl.commandTimeoutMs);
    this.journal?.close();
    for (const sink of this.sinks) await sink.stop();
    await this.natsClient?.close();
    this.board?.stop();
    await this.status.close();
    this.logger.info({ node: this.config.node.name }, 'bridge stopped');
  }

  /** Where every remote source hands its events: peer liveness first, then the pipeline (dedup, inject, consumers). */
  readonly remote = (item: BridgeEvent): void => {
    this.observeAge(item);
    this.peers.observe(item);
    this.pipeline.remote(item);
  };

  /** SIGHUP: new bindings, psk, secure keys and TTL without closing the socket; peers are forgotten as the legacy module does. */
  reload(next: BridgeConfig): void {
    this.multicast?.reconfigure({ bindings: next.multicast.bindings, psk: next.multicast.psk, secure: next.multicast.secure, ttl: next.multicast.ttl });
    this.peers.clear();
    this.logger.info({ bindings: next.multicast.bindings.toString(), ttl: next.multicast.ttl }, 'configuration reloaded');
  }

  private async pumpLocalEvents(): Promise<void> {
    for await (const batch of this.esl.events()) {
      const receivedAt = Date.now();
      for (const event of batch) this.pipeline.local(event, receivedAt);
    }
  }

  /** fsb_remote_event_age_seconds: origin Event-Date-Timestamp (µs) to receipt; a peer's clock ahead of ours counts as 0. */
  private observeAge(item: BridgeEvent): void {
    const firedAtMicros = Number(item.event.get('Event-Date-Timestamp'));
    if (!(firedAtMicros > 0)) return;
    this.metrics.latency.observe({ transport: item.origin.transport }, Math.max(0, item.origin.receivedAt - firedAtMicros / 1000) / 1000);
  }


  /** Read back what was injected before a restart, so JetStream's redeliveries are recognised. */
  private openJournal(): void {
    const path = this.config.dedup.journal;
    if (path === '' && this.config.nats.enabled) {
      this.logger.warn('dedup/journal is not set: after a crash, the NATS messages written to FreeSWITCH but not yet acknowledged are injected again');
    }
    if (path === '' || this.journal) return;
    let opened;
    try {
      opened = DedupJournal.open(path, { maxLines: Math.max(50, Math.floor(this.config.dedup.maxEntries / 2)), logger: this.logger, metrics: this.metrics });
    } catch (err) {
      throw new JournalError(path, err);
    }
    this.journal = opened.journal;
    this.pipeline.preload(opened.keys);
    this.logger.info({ journal: path, keys: opened.keys.length }, 'dedup journal loaded');
  }

  /**
   * A remote event becomes the legacy multicast::event on our node, exactly once (the
   * pipeline deduplicated it). Its delivery, if the transport redelivers, is settled
   * when FreeSWITCH has answered, so a crash before that means it comes again.
   */
  private inject(item: BridgeEvent, key: string): void {
    const delivery = item.delivery;
    const transport = item.origin.transport;
    const node = item.origin.node;
    const event = this.sanitized(toMulticastEvent(item.event, node, this.config.node.name), node);
    if (event === null) {
      delivery?.ack();
      return;
    }
    const accepted = this.injector.offer({
      command: sendeventCommand(event),
      event,
      orderKey: injectionOrderKey(item.event),
      key,
      // Names only what it needs: a closure over `item` would keep the whole remote event while it waits in the queue.
      done: (outcome, error) => this.settle(key, node, transport, outcome, error, delivery),
    });
    if (accepted) {
      this.pendingKeys.add(key);
      return;
    }
    // A later copy (the other transport's, or JetStream's redelivery) may still get in.
    this.pipeline.injectionRefused(key);
    if (delivery) {
      this.deferred.inc();
      delivery.nak(REDELIVER_WHEN_FULL_MS);
    } else {
      this.drops.drop('inject_queue_full', { node: item.origin.node, queueMaxBytes: this.config.inject.queueMaxBytes });
      this.peers.recordDrop(item.origin.node);
    }
  }

  /** A second copy of an event: settled now, or with the first copy if that one is still waiting to be written. */
  private duplicate(item: BridgeEvent, key: string): void {
    if (!item.delivery) return;
    if (!this.pendingKeys.has(key)) {
      item.delivery.ack();
      return;
    }
    const copies = this.waitingCopies.get(key);
    if (copies) copies.push(item.delivery);
    else this.waitingCopies.set(key, [item.delivery]);
  }

  private settle(key: string, node: string, transport: string, outcome: InjectOutcome, error: Error | undefined, delivery: Delivery | undefined): void {
    this.pendingKeys.delete(key);
    const deliveries = this.waitingCopies.get(key) ?? [];
    this.waitingCopies.delete(key);
    if (delivery) deliveries.push(delivery);
    if (outcome === 'stopped') {
      // Not written: a NATS copy is left unacknowledged, so the next start gets it again.
      if (deliveries.length === 0) {
        this.drops.drop('inject_unflushed_at_stop');
        this.peers.recordDrop(node);
      }
      return;
    }
    if (outcome === 'injected') this.metrics.injected.inc({ transport });
    else if (outcome === 'unconfirmed') this.unconfirmed.inc({ transport });
    else {
      this.drops.drop('inject_refused', { error: error?.message });
      this.peers.recordDrop(node);
    }
    for (const d of deliveries) d.ack();
  }

  private onPeerEvent(event: FsEvent, peer: string): void {
    const change = event.subclass === MulticastSubclass.PeerUp ? 'up' : 'down';
    this.peerEvents.inc({ event: event.subclass });
    const notLogged = this.peerLogBudget.admit();
    if (notLogged >= 0) {
      const fields = { peer, event: event.subclass, lastseen: event.get('Lastseen'), ...(notLogged > 0 && { peerChangesNotLogged: notLogged }) };
      this.logger.info(fields, notLogged > 0 ? `peer ${peer} ${change} (${notLogged} peer changes before it not logged: too many at once)` : `peer ${peer} ${change}`);
    }
    const guarded = this.sanitized(event.clone().add(LOOP_GUARD_HEADER, this.config.node.name));
    if (guarded !== null && this.peerInjectBudget.admit() < 0) {
      this.drops.drop('peer_event_rate', { peer, event: event.subclass, budget: `${PEER_EVENT_BUDGET} per ${PEER_BUDGET_INTERVAL_MS / 1000} s` });
    } else if (guarded !== null) {
      const accepted = this.injector.offer({
        command: sendeventCommand(guarded),
        event: guarded,
        orderKey: null,
        done: (outcome, error) => {
          if (outcome === 'injected') this.metrics.injected.inc({ transport: 'peer' });
          else if (outcome === 'unconfirmed') this.unconfirmed.inc({ transport: 'peer' });
          else this.drops.drop(outcome === 'stopped' ? 'inject_unflushed_at_stop' : 'inject_refused', { error: error?.message });
        },
      });
      if (!accepted) this.drops.drop('inject_queue_full', { peer });
    }
    this.pipeline.publish({ event, origin: { transport: 'multicast', node: peer, receivedAt: Date.now() } });
  }

  /**
   * The event as it can be written to the local node, or null when it cannot be. Remote
   * header values may hold CR/LF (an SDP, say): those headers are left out by design and
   * counted as filtered, so that a peer cannot add headers on our node; a NUL in the
   * body cannot be carried at all (dropped, counted).
   */
  private sanitized(event: FsEvent, origin?: string): FsEvent | null {
    const clean = sanitizeForInjection(event);
    if (clean.crlf > 0) this.drops.filtered('crlf_header_removed', clean.crlf);
    if (clean.nul > 0) this.drops.filtered('nul_header_removed', clean.nul);
    if (clean.badName > 0) this.drops.filtered('colon_header_removed', clean.badName);
    if (clean.event.body !== null && clean.event.body.includes('\0')) {
      this.drops.drop('nul_in_body');
      if (origin) this.peers.recordDrop(origin);
      return null;
    }
    return clean.event;
  }

  private consumerContext(): ConsumerContext {
    const client = this.natsClient;
    const openState = client
      ? async (bucket: string): Promise<StateStore> => openStateStore(await client.ready(), bucket, { replicas: this.config.nats.stream.replicas, logger: this.logger, metrics: this.metrics })
      : undefined;
    return { node: this.config.node, events: this.pipeline, local: this.local, logger: this.logger, metrics: this.metrics, openState };
  }

  /** One line per interval with what flowed since the last one, so an operator sees traffic (or its absence) at a glance. */
  private async logStats(): Promise<void> {
    const totals = new Map<string, number>();
    const add = (key: string, value: number) => totals.set(key, (totals.get(key) ?? 0) + value);
    for (const v of (await this.metrics.eventsIn.get()).values) add(`in_${v.labels.transport}`, v.value);
    for (const v of (await this.metrics.eventsOut.get()).values) add(`out_${v.labels.transport}`, v.value);
    for (const v of (await this.metrics.injected.get()).values) add('injected', v.value);
    for (const v of (await this.metrics.drops.get()).values) add('dropped', v.value);
    const delta: Record<string, number> = {};
    for (const [key, value] of totals) delta[key] = value - (this.lastTotals.get(key) ?? 0);
    this.lastTotals = totals;
    this.logger.info({ ...delta, esl: this.esl.state, peers: this.peers.list().filter((p) => p.up).length, intervalMs: this.config.statsIntervalMs }, 'traffic');
  }

  private statusReport(): Record<string, unknown> {
    return {
      ...consumersHealth(this.consumers),
      node: this.config.node.name,
      esl: this.esl.state,
      nats: this.natsClient ? (this.natsClient.connected ? 'connected' : 'disconnected') : 'off',
      multicast: this.multicast ? 'on' : 'off',
      consumers: this.consumers.map((c) => c.name),
      injection: { connected: this.injector.connected, queued: this.injector.length, queuedBytes: this.injector.bytes },
    };
  }
}
