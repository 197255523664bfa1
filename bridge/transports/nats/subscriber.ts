import { nanos, TimeoutError, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  type ConsumerInfo,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import type { NatsConfig, NodeConfig } from '../../config/types.js';
import type { FsEvent } from '../../event/event.js';
import { serializeJson } from '../../event/json.js';
import type { Logger } from '../../observability/logger.js';
import { DropReporter, type Metrics } from '../../observability/metrics.js';
import type { BridgeEvent, Delivery, RemoteSource, SourceControl } from '../../pipeline/types.js';
import type { NatsClient } from './connection.js';
import { decodePayload, PAYLOAD_TYPE, PAYLOAD_TYPE_HEADER } from './payload.js';
import { ensureStream, ORIGIN_NODE_HEADER } from './stream.js';
import { conflictingClaim, subjectOrigin } from './origin.js';
import { explainPermission, nodeDurables, remotePeers } from './permissions.js';
import { SubjectMapper } from './subjects.js';

export interface NatsSubscriberDeps {
  client: NatsClient;
  node: NodeConfig;
  metrics: Metrics;
  logger: Logger;
}

/** One durable consumer the subscriber pulls from. */
interface ConsumerPlan {
  durable: string;
  filter: string;
}

/**
 * Receives other nodes' events from durable JetStream consumers, so a restarted bridge
 * resumes where it stopped and catches up on what it missed (within the stream's max
 * age). A consumer's first start delivers only new events: replaying the whole history
 * into FreeSWITCH would resurrect old registrations.
 *
 * Without `nats/peers`, one consumer takes the whole cluster's subjects, this node's own
 * events included, which it skips. nats-server 2.9 gives a consumer one filter subject
 * and no filter can leave one node out, so with `nats/peers` there is one consumer per
 * other node instead and JetStream never sends a node its own events back: each of
 * them cost the server a delivery and an ack, and the bridge a read, a parse and an ack
 * (nats-server's CPU 40-60% lower without them, the bridge's 8-47% lower per event, in
 * docs/benchmarks.md). A node switching to per-peer consumers starts them where its
 * cluster-wide consumer had got to, then deletes that one, whose position would
 * otherwise replay everything since then if the setting were taken out again.
 */
export class NatsSubscriber implements RemoteSource {
  readonly name = 'nats';
  /** The consumers this node pulls from, by durable name. */
  readonly durables: readonly string[];
  private readonly clusterDurable: string;
  /** nats/peers lists another node: one consumer per peer, none for the whole cluster. */
  private readonly perPeer: boolean;
  private readonly plans: readonly ConsumerPlan[];
  private readonly subjects: SubjectMapper;
  private readonly drops: DropReporter;
  private readonly ownSkipped;
  private emit: ((item: BridgeEvent) => void) | null = null;
  private control: SourceControl | null = null;
  private readonly messages = new Set<ConsumerMessages>();
  private running = false;
  private loops: Promise<void>[] = [];
  private unlisten: (() => void) | null = null;
  private readonly wakers = new Set<() => void>();
  /** One preparation at a time: the loops would otherwise race to migrate the cluster-wide consumer. */
  private preparing: Promise<void> | null = null;
  /** Every per-peer consumer exists and the cluster-wide one was dealt with, deleted or reported. */
  private tookOver = false;
  /** The stream's subjects were checked for nodes nats/peers leaves out (once: the answer lists every subject of the stream). */
  private unlistedChecked = false;

  constructor(
    private readonly config: NatsConfig,
    private readonly deps: NatsSubscriberDeps,
  ) {
    this.subjects = new SubjectMapper(config.subjectPrefix, deps.node.cluster);
    const peers = remotePeers(config.peers, deps.node.name);
    const durables = nodeDurables(config.durablePrefix, deps.node.name, peers);
    this.clusterDurable = durables[0];
    this.perPeer = peers.length > 0;
    this.plans = this.perPeer
      ? peers.map((peer, i) => ({ durable: durables[i + 1], filter: this.subjects.filter({ node: peer }) }))
      : [{ durable: this.clusterDurable, filter: this.subjects.clusterWildcard }];
    this.durables = this.plans.map((plan) => plan.durable);
    this.drops = new DropReporter('nats_subscriber', deps.metrics, deps.logger);
    this.ownSkipped = deps.metrics.counter('fsb_nats_own_events_skipped_total', "This node's own events seen on NATS and skipped");
  }

  async start(emit: (item: BridgeEvent) => void, control?: SourceControl): Promise<void> {
    this.emit = emit;
    this.control = control ?? null;
    this.running = true;
    this.unlisten = this.deps.client.onChange((up) => {
      if (up) for (const wake of [...this.wakers]) wake();
    });
    await this.deps.client.start();
    const nc = this.deps.client.connection;
    // When connected now, create the consumers before returning so every event
    // published after start() is delivered; otherwise the loops do it on connect.
    if (nc && this.deps.client.connected) {
      try {
        await this.prepare(nc);
      } catch (err) {
        this.deps.logger.warn({ component: 'nats_subscriber', err }, 'JetStream consumer not ready; retrying');
      }
    }
    this.loops = this.plans.map((plan) => this.run(plan));
  }

  private prepare(nc: NatsConnection): Promise<void> {
    this.preparing ??= this.prepareOnce(nc).finally(() => {
      this.preparing = null;
    });
    return this.preparing;
  }

  private async prepareOnce(nc: NatsConnection): Promise<void> {
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, this.config.stream, this.subjects.clusterWildcard, this.deps.logger);
    const clusterWide = this.perPeer && !this.tookOver ? await this.consumerInfo(jsm, this.clusterDurable) : null;
    // One peer's consumer that cannot be made (a permission, a name) must not keep the others from starting.
    let allMade = true;
    for (const plan of this.plans) {
      try {
        await this.ensureConsumer(jsm, plan, clusterWide);
      } catch (err) {
        if (!this.perPeer) throw err;
        allMade = false;
        this.deps.logger.warn({ component: 'nats_subscriber', consumer: plan.durable, err: explainPermission(err, `create the consumer ${plan.durable}`) }, 'JetStream consumer not ready; retrying');
      }
    }
    // The cluster-wide consumer's position is what a per-peer consumer still to be made starts from.
    if (this.perPeer && allMade) {
      this.tookOver = true;
      if (clusterWide) await this.retireClusterWide(jsm, clusterWide);
    }
    if (this.perPeer && !this.unlistedChecked) await this.reportUnlistedNodes(jsm);
  }

  /**
   * A node missing from nats/peers is never heard over NATS, and nothing else would say
   * so: the stream's subjects name every node that published, so the ones found there
   * and not listed are logged, once per start.
   */
  private async reportUnlistedNodes(jsm: JetStreamManager): Promise<void> {
    let subjects: Record<string, number>;
    try {
      subjects = (await jsm.streams.info(this.config.stream.name, { subjects_filter: this.subjects.clusterWildcard })).state.subjects ?? {};
    } catch (err) {
      this.deps.logger.debug({ component: 'nats_subscriber', err }, 'stream subjects not readable; unlisted nodes not checked');
      return;
    }
    this.unlistedChecked = true;
    const listed = new Set(this.config.peers);
    const unlisted = new Set<string>();
    for (const subject of Object.keys(subjects)) {
      const node = subjectOrigin(this.subjects, subject);
      if (node !== undefined && node !== this.deps.node.name && !listed.has(node)) unlisted.add(node);
    }
    if (unlisted.size === 0) return;
    this.deps.logger.warn(
      { component: 'nats_subscriber', nodes: [...unlisted].slice(0, 20), count: unlisted.size },
      'JetStream holds events of nodes that nats/peers does not list: they are not read over NATS (add them to nats/peers on every node)',
    );
  }

  private async retireClusterWide(jsm: JetStreamManager, clusterWide: ConsumerInfo): Promise<void> {
    const taken = { component: 'nats_subscriber', from: this.clusterDurable, to: this.durables, streamSequence: clusterWide.ack_floor.stream_seq + 1 };
    try {
      await jsm.consumers.delete(this.config.stream.name, this.clusterDurable);
      this.deps.logger.info(taken, 'per-peer JetStream consumers took over from the cluster-wide one');
    } catch (err) {
      // Permissions generated before nats/peers existed allow no delete. The per-peer
      // consumers work without it; the old one only must not be used again.
      this.deps.logger.warn(
        { ...taken, err: explainPermission(err, `delete the consumer ${this.clusterDurable}`) },
        'per-peer JetStream consumers took over, but the cluster-wide one could not be deleted: delete it (nats consumer rm) or regenerate the permissions (nats-permissions) before ever emptying nats/peers, or it replays everything since now',
      );
    }
  }

  private async consumerInfo(jsm: JetStreamManager, durable: string): Promise<ConsumerInfo | null> {
    try {
      return await jsm.consumers.info(this.config.stream.name, durable);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound) return null;
      throw err;
    }
  }

  /** `takeOver`: the cluster-wide consumer a new per-peer one starts after (what it had acknowledged). */
  private async ensureConsumer(jsm: JetStreamManager, plan: ConsumerPlan, takeOver: ConsumerInfo | null): Promise<void> {
    if ((await this.consumerInfo(jsm, plan.durable)) !== null) return;
    const start = takeOver === null ? { deliver_policy: DeliverPolicy.New } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: takeOver.ack_floor.stream_seq + 1 };
    await jsm.consumers.add(this.config.stream.name, {
      durable_name: plan.durable,
      ack_policy: AckPolicy.Explicit,
      ...start,
      filter_subject: plan.filter,
      ack_wait: nanos(this.config.ackWaitMs),
      max_ack_pending: 1_000,
    });
  }

  private async run(plan: ConsumerPlan): Promise<void> {
    while (this.running) {
      const nc = this.deps.client.connection;
      if (!nc || !this.deps.client.connected) {
        await this.sleep(5_000);
        continue;
      }
      let messages: ConsumerMessages | null = null;
      try {
        await this.prepare(nc);
        const consumer = await jetstream(nc).consumers.get(this.config.stream.name, plan.durable);
        // Short pulls and heartbeats: after a consumer leader dies, missed heartbeats
        // trigger a fresh pull within seconds instead of the 30 s default.
        messages = await consumer.consume({ max_messages: 256, expires: 5_000, idle_heartbeat: 1_000 });
        this.messages.add(messages);
        if (!this.running) messages.stop();
        for await (const msg of messages) {
          // The bridge's inject queue is full: stop taking messages (JetStream keeps them,
          // and stops sending at max_ack_pending) until it has room again.
          const wait = this.control?.backpressure();
          if (wait) await wait;
          this.handle(msg);
        }
      } catch (err) {
        if (this.running) this.deps.logger.warn({ component: 'nats_subscriber', err, consumer: plan.durable }, 'JetStream consumer stopped; restarting');
      } finally {
        if (messages) this.messages.delete(messages);
      }
      if (this.running) await this.sleep(1_000);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const wakers = this.wakers;
      function done() {
        clearTimeout(timer);
        wakers.delete(done);
        resolve();
      }
      wakers.add(done);
    });
  }

  private handle(msg: JsMsg): void {
    const origin = subjectOrigin(this.subjects, msg.subject);
    if (origin === undefined) {
      this.drops.drop('no_origin', { subject: msg.subject });
      msg.term();
      return;
    }
    if (origin === this.deps.node.name) {
      this.ownSkipped.inc();
      msg.ack();
      return;
    }
    let event: FsEvent;
    try {
      event = decodePayload(msg.data, msg.headers);
    } catch (err) {
      this.drops.drop('bad_payload', { subject: msg.subject, err });
      // Redelivery would fail the same way.
      msg.term();
      return;
    }
    const claim = conflictingClaim(event, origin, msg.headers?.get(ORIGIN_NODE_HEADER));
    if (claim !== undefined) {
      // Another node's name inside a message published under this node's subject:
      // forged, or a node whose node-name is not its switchname. Never injected.
      this.drops.drop('origin_mismatch', { subject: msg.subject, header: claim });
      msg.term();
      return;
    }
    this.deps.metrics.eventsIn.inc({ transport: 'nats', node: this.deps.metrics.nodeLabel(origin) });
    // Acknowledged by the bridge once the event's fate is known (FreeSWITCH answered its
    // injection, or it was a duplicate): a crash before that means JetStream redelivers it.
    const delivery: Delivery = { ack: () => msg.ack(), nak: (delayMs) => msg.nak(delayMs) };
    try {
      this.emit?.({ event, origin: { transport: 'nats', node: origin, receivedAt: Date.now() }, delivery });
    } catch (err) {
      this.drops.drop('emit_failed', err);
      msg.ack();
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.unlisten?.();
    for (const wake of [...this.wakers]) wake();
    for (const messages of this.messages) messages.stop();
    await Promise.all(this.loops);
    this.emit = null;
  }
}

/** A received event with where it came from, for tail and replay. */
export interface ReadEvent {
  event: FsEvent;
  subject: string;
  node: string;
  /** Stream sequence (replay) or 0 (live core NATS). */
  seq: number;
  time: Date;
  /** The event as FreeSWITCH `event json` (the payload itself when it was published as json). */
  json: string;
}

/** `node` is the subject's node, never what the message says about itself (see subjectOrigin). */
function toReadEvent(subjects: SubjectMapper, msg: Pick<Msg, 'subject' | 'data' | 'headers'>, seq: number, time: Date): ReadEvent {
  const event = decodePayload(msg.data, msg.headers);
  const json = msg.headers?.get(PAYLOAD_TYPE_HEADER) === PAYLOAD_TYPE.plain ? serializeJson(event) : decoder.decode(msg.data);
  return { event, subject: msg.subject, node: subjectOrigin(subjects, msg.subject) ?? '', seq, time, json };
}

const decoder = new TextDecoder();

/**
 * Live events over core NATS (no JetStream state): what `tail` uses. Unparseable
 * payloads go to onError and the subscription continues.
 */
export function subscribeLive(
  nc: NatsConnection,
  subjects: SubjectMapper,
  filter: { node?: string; event?: string },
  onEvent: (item: ReadEvent) => void,
  onError: (err: unknown, subject: string) => void = () => undefined,
): Subscription {
  return nc.subscribe(subjects.filter(filter), {
    callback: (err, msg) => {
      if (err) {
        onError(err, '');
        return;
      }
      try {
        onEvent(toReadEvent(subjects, msg, 0, new Date()));
      } catch (parseErr) {
        onError(parseErr, msg.subject);
      }
    },
  });
}

/**
 * Stored events from `since` to `until` (or to the stream's last message when the
 * call started), oldest first, through an ordered consumer that the server removes
 * when done. What `replay` uses.
 */
export async function* readStored(
  nc: NatsConnection,
  stream: string,
  subjects: SubjectMapper,
  options: { since: Date; until?: Date; node?: string; event?: string },
): AsyncGenerator<ReadEvent> {
  const lastSeq = await retryOnTimeout(async () => (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq);
  if (lastSeq === 0) return;
  const consumer = await retryOnTimeout(() =>
    jetstream(nc).consumers.get(stream, {
      filter_subjects: subjects.filter(options),
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: options.since.toISOString(),
    }),
  );
  // Batches until one comes back short: everything up to lastSeq was stored before
  // we started, so a short batch means the window is exhausted. (The per-message
  // pending count is not used: nats-server 2.9 reports 0 too early for start-time
  // consumers.)
  const batchSize = 512;
  while (true) {
    const batch = await consumer.fetch({ max_messages: batchSize, expires: 1_000 });
    let received = 0;
    for await (const msg of batch) {
      received++;
      if (msg.seq > lastSeq || (options.until && msg.time > options.until)) return;
      yield toReadEvent(subjects, msg, msg.seq, msg.time);
      if (msg.seq >= lastSeq) return;
    }
    if (received < batchSize) return;
  }
}

/** A JetStream API call can time out while a cluster elects a new meta leader; a few seconds later it works. */
async function retryOnTimeout<T>(call: () => Promise<T>, attempts = 4): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof TimeoutError) || i >= attempts) throw err;
    }
  }
}
