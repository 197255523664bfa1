import type { BridgeConfig } from './config/types.js';
import type { Consumer, ConsumerContext, EventStream, LocalNode, StateStore } from './consumer.js';
import type { FsEvent } from './event/event.js';
import type { Logger } from './observability/logger.js';
import { DropReporter, Metrics, registerStateGauges } from './observability/metrics.js';
import { StatusServer } from './observability/http.js';
import { Board } from './observability/board/board.js';
import { Bindings } from './pipeline/bindings.js';
import { toMulticastEvent } from './pipeline/inject.js';
import { PeerTracker } from './pipeline/peers.js';
import { Pipeline } from './pipeline/pipeline.js';
import { LOOP_GUARD_HEADER, type BridgeEvent, type RemoteSource, type Sink } from './pipeline/types.js';
import { EslClient, EslState } from './sources/esl/client.js';
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
/** Remote events waiting for FreeSWITCH to acknowledge their injection. */
const MAX_PENDING_INJECTIONS = 10_000;

/**
 * The composition root: the one module that knows every source, transport and
 * consumer, and wires them through the pipeline. Transports never see each other.
 */
export class Bridge {
  readonly metrics: Metrics;
  readonly pipeline: Pipeline;
  readonly peers: PeerTracker;
  readonly esl: EslClient;
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
  private pendingInjections = 0;
  private consumersReady = false;
  private pump: Promise<void> | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private lastTotals = new Map<string, number>();
  private stopped = false;

  constructor(
    readonly config: BridgeConfig,
    options: BridgeOptions,
  ) {
    this.logger = options.logger;
    this.metrics = options.metrics ?? new Metrics({ defaultMetrics: true });
    this.consumers = options.consumers ?? [];
    this.drops = new DropReporter('bridge', this.metrics, this.logger);
    const node = config.node;
    const deps = { metrics: this.metrics, logger: this.logger };

    this.peers = new PeerTracker((event, peer) => this.onPeerEvent(event, peer), {
      timeoutMs: config.multicast.peerTimeoutMs,
      checkIntervalMs: Math.max(50, Math.min(5_000, Math.floor(config.multicast.peerTimeoutMs / 4))),
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
      inject: (item) => this.inject(item),
      ...deps,
    });

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

  /** ESL up, and every consumer has loaded its state. */
  get ready(): boolean {
    return !this.stopped && this.esl.state === EslState.Connected && this.consumersReady;
  }

  /** Where the status server listens (port 0 in config picks a free one). */
  get statusEndpoint(): { address: string; port: number } | null {
    return this.statusAddress;
  }

  /** What a consumer may do to the local node: api, and sendevent with the loop guard. */
  get local(): LocalNode {
    return guardedLocalNode(this.esl, this.config.node.name);
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
    this.esl.start();
    try {
      await this.esl.ready(eslTimeoutMs);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'FreeSWITCH not reachable yet; retrying in the background');
    }
    const context = this.consumerContext();
    for (const consumer of this.consumers) await consumer.start(context);
    this.consumersReady = true;
    this.board?.start();
    this.pump = this.pumpLocalEvents();
    const emit = (item: BridgeEvent) => {
      this.observeAge(item);
      this.peers.observe(item);
      this.pipeline.remote(item);
    };
    for (const source of this.sources) await source.start(emit);
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
    for (const sink of this.sinks) await sink.stop();
    await this.natsClient?.close();
    this.board?.stop();
    await this.status.close();
    this.logger.info({ node: this.config.node.name }, 'bridge stopped');
  }

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

  /** A remote event becomes the legacy multicast::event on our node, exactly once (the pipeline deduplicated it). */
  private inject(item: BridgeEvent): void {
    if (this.pendingInjections >= MAX_PENDING_INJECTIONS) {
      this.drops.drop('inject_backlog', { node: item.origin.node });
      this.peers.recordDrop(item.origin.node);
      return;
    }
    const injected = toMulticastEvent(item.event, item.origin.node, this.config.node.name);
    this.send(injected, item.origin.transport, item.origin.node);
  }

  private onPeerEvent(event: FsEvent, peer: string): void {
    this.logger.info({ peer, event: event.subclass, lastseen: event.get('Lastseen') }, `peer ${peer} ${event.subclass === 'multicast::peerup' ? 'up' : 'down'}`);
    const guarded = event.clone();
    guarded.add(LOOP_GUARD_HEADER, this.config.node.name);
    this.send(guarded, 'peer');
    this.pipeline.publish({ event, origin: { transport: 'multicast', node: peer, receivedAt: Date.now() } });
  }

  /**
   * Writes to the local node. Remote header values may hold CR/LF (an SDP, say);
   * mod_event_socket would read them as extra lines, so those headers are left
   * out and counted rather than letting a peer add headers on our node.
   */
  private send(event: FsEvent, label: string, origin?: string): void {
    const unsafe = event.headers.filter(([name, value]) => /[\r\n\0]/.test(name) || /[\r\n\0]/.test(value));
    if (unsafe.length > 0) {
      for (const [name] of unsafe) event.delete(name);
      this.drops.drop('crlf_header_removed', { headers: unsafe.map(([name]) => name.slice(0, 64)) }, unsafe.length);
    }
    if (event.body !== null && event.body.includes('\0')) {
      this.drops.drop('nul_in_body');
      if (origin) this.peers.recordDrop(origin);
      return;
    }
    this.pendingInjections++;
    this.metrics.queueDepth.set({ component: 'inject' }, this.pendingInjections);
    this.esl
      .sendEvent(event)
      .then(
        () => this.metrics.injected.inc({ transport: label }),
        (err: Error & { code?: string }) => {
          this.drops.drop(err.code === 'FSB_ERR_NOT_CONNECTED' ? 'inject_esl_down' : 'inject_failed', { error: err.message });
          if (origin) this.peers.recordDrop(origin);
        },
      )
      .finally(() => {
        this.pendingInjections--;
        this.metrics.queueDepth.set({ component: 'inject' }, this.pendingInjections);
      });
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
      node: this.config.node.name,
      esl: this.esl.state,
      nats: this.natsClient ? (this.natsClient.connected ? 'connected' : 'disconnected') : 'off',
      multicast: this.multicast ? 'on' : 'off',
      consumers: this.consumers.map((c) => c.name),
      pendingInjections: this.pendingInjections,
    };
  }
}
