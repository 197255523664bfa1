import type { Counter } from 'prom-client';
import { type Consumer, type ConsumerContext, type ConsumerHealth, type StateStore, type LocationConsumerConfig, type Registration, type RegistrationSource, MulticastSubclass, DropReporter, LOOP_GUARD_HEADER, Transport, type BridgeEvent, LocationDbError } from '../../bridge/index.js';
import { LOCATION_PREFIX, LocationTable, MAX_REGISTRATIONS, TOMBSTONE_MS, rowKey, type Binding, type RowChange } from './location-table.js';
import { DEFAULT_MAX_CLOCK_SKEW_MS, MAX_EXPIRES_S, UnusableRegistration, isStorableText, registrationChange, type Registered, type RegistrationChange } from './registrations.js';
import { EslRowSink, SqliteRowSink, type RowSink } from './sinks.js';

export const DEFAULT_LOCATION_BUCKET = 'fsb_location';
const DEFAULT_EXPIRY_MARGIN_MS = 60_000;
/** How often registrations past their expiry are looked for. */
const EXPIRY_SWEEP_MS = 1_000;
/** Retry delays for a batch the database or ESL refused (busy, locked, disconnected). */
const RETRY_MIN_MS = 10;
const RETRY_MAX_MS = 1_000;
/** stop() gives a busy database this long to take the last batch. */
const STOP_FLUSH_DEADLINE_MS = 5_000;
/** A lock held (or ESL down) this long is no longer a moment's contention: health says degraded, and a warning is logged. */
const DEGRADED_AFTER_MS = 5_000;

/**
 * Cluster state keys: parts URL-encoded so a `/` in a realm or user cannot shift them.
 * Only storable text reaches here (isStorableText); toWellFormed keeps this total
 * anyway, since encodeURIComponent throws on a lone surrogate and this runs in timers.
 */
export function stateKeyOf(id: { realm: string; user: string; hostname: string }): string {
  return [id.realm, id.user, id.hostname].map((part) => encodeURIComponent(part.toWellFormed())).join('/');
}

function parseStateKey(key: string): { realm: string; user: string; hostname: string } | null {
  const parts = key.split('/');
  if (parts.length !== 3) return null;
  try {
    const [realm, user, hostname] = parts.map(decodeURIComponent);
    return { realm, user, hostname };
  } catch {
    return null;
  }
}

/**
 * A registration from the cluster state, or null when the entry is not one. Its
 * timestamp is bounded like an event's, and its expiry (the owner's clock) by what
 * any register could ask for, so a forged entry cannot outrank or outlive the rest.
 */
function parseStateValue(value: string, nowMs: number, maxSkewMs: number, expiryMarginMs: number): (Registered & { aheadMs: number }) | null {
  let b: Partial<Binding>;
  try {
    b = JSON.parse(value) as Partial<Binding>;
  } catch {
    return null;
  }
  if (typeof b !== 'object' || b === null) return null;
  const strings = [b.realm, b.hostname, b.switchname, b.ip];
  if (strings.some((s) => typeof s !== 'string' || s === '' || !isStorableText(s))) return null;
  if (typeof b.user !== 'string' || b.user === '' || !isStorableText(b.user, LOCATION_PREFIX.length)) return null;
  if (!Number.isSafeInteger(b.ts) || typeof b.expiresAt !== 'number' || !Number.isFinite(b.expiresAt)) return null;
  const transport = typeof b.transport === 'string' && TRANSPORT.test(b.transport) ? b.transport : undefined;
  const received = nowMs * 1000;
  const ahead = b.ts! > received + maxSkewMs * 1000;
  const binding: Registered & { aheadMs: number } = {
    kind: 'register',
    realm: b.realm!,
    user: b.user,
    hostname: b.hostname!,
    switchname: b.switchname!,
    ip: b.ip!,
    ts: ahead ? received : b.ts!,
    expiresAt: Math.min(b.expiresAt, nowMs + MAX_EXPIRES_S * 1000 + expiryMarginMs + maxSkewMs),
    aheadMs: ahead ? Math.round((b.ts! - received) / 1000) : 0,
  };
  // Only the board reads it, but it comes from another node: kept only if it looks like one.
  if (transport !== undefined) binding.transport = transport;
  if (typeof b.core === 'string' && isStorableText(b.core) && Number.isSafeInteger(b.seq) && b.seq! >= 0) {
    binding.core = b.core;
    binding.seq = b.seq;
  }
  return binding;
}

const TRANSPORT = /^[A-Za-z0-9-]{1,16}$/;

/** Nodes remembered by name (switchname to hostname, purge times); a flood of made-up senders evicts the oldest. */
const MAX_NODES = 10_000;

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_NODES) map.delete(map.keys().next().value!);
}

/**
 * Keeps mod_db's db_data answering "which node is this user registered on"
 * (`${db(select/realm/LOCATION_user)}`) for the whole cluster.
 *
 * Parity mode replays locationlocal.lua + locationforeign.lua: every Registered
 * event replaces the realm + key row, nothing ever removes one. The improved mode
 * keeps every host's registration (LocationTable) and writes the newest live one;
 * unregister, expire, a missed expiry and a node going down remove rows.
 *
 * Ordering (docs/consumers.md, "Order and clocks"): within one host's registration
 * of a user, events of one FreeSWITCH run are ordered by Event-Sequence, others by
 * the origin's timestamp, which is trusted at most maxClockSkewMs ahead of our clock;
 * expiry counts from when we received the register. Local registrations belong to
 * this node alone: a remote event or another node's KV write about them is refused.
 *
 * Cluster state: each node writes only the registrations made on it (its own local
 * sofia events) to the KV bucket, so every key has one writer and KV never sees
 * conflicting writes; readers merge by the same order, which also settles the race
 * between a KV change and the same event arriving over multicast. A node that starts
 * loads the bucket before following changes, so it answers lookups before any phone
 * re-registers.
 */
export class LocationConsumer implements Consumer, RegistrationSource {
  readonly name = 'location';
  private context: ConsumerContext | null = null;
  private sink: RowSink | null = null;
  private store: StateStore | null = null;
  private stopWatch: (() => Promise<void>) | null = null;
  private unsubscribe: (() => void) | null = null;
  private drops: DropReporter | null = null;
  private retries: Counter<'cause'> | null = null;
  private rowsWritten: Counter | null = null;
  private clockSkew: Counter | null = null;
  private readonly table: LocationTable;
  private readonly pending = new Map<string, RowChange>();
  private flushTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private retryDelayMs = 0;
  /** Set by stop(): every drain, also one started before, ends by then. */
  private stopDeadline = Number.POSITIVE_INFINITY;
  /** The sink's current failure, from its first refused write until a write succeeds. */
  private writeFailure: { cause: WriteFailureCause; message: string; since: number } | null = null;
  /** Rows of the batch the sink is writing now (out of `pending` meanwhile). */
  private inFlight = 0;
  /** During start() and stop(): the only failures worth waiting for. */
  private retryOnly: ReadonlySet<WriteFailureCause> | null = null;
  private readonly downTimers = new Map<string, NodeJS.Timeout>();
  /** switchname -> hostname, learned from events (peer events name switchnames, rows hold hostnames). */
  private readonly hostnames = new Map<string, string>();
  private readonly kvWrites = new Set<Promise<unknown>>();
  /** When a node's rows were purged after its peerdown (µs, like binding timestamps), until it comes back or TOMBSTONE_MS passed. */
  private readonly purgedAt = new Map<string, number>();
  private readonly legacy: boolean;
  private readonly expiryMarginMs: number;
  private readonly maxSkewMs: number;
  private stopping = false;
  private readonly changeListeners = new Set<() => void>();

  constructor(private readonly config: LocationConsumerConfig) {
    this.legacy = config.legacyParity ?? false;
    this.expiryMarginMs = config.expiryMarginMs ?? DEFAULT_EXPIRY_MARGIN_MS;
    this.maxSkewMs = config.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
    const overrides = config.addressOverrides ?? {};
    this.table = new LocationTable((b) => overrides[b.switchname] ?? overrides[b.hostname] ?? b.ip);
  }

  async start(context: ConsumerContext): Promise<void> {
    this.context = context;
    this.stopping = false;
    this.stopDeadline = Number.POSITIVE_INFINITY;
    this.drops = new DropReporter('location', context.metrics, context.logger);
    this.retries = context.metrics.counter('fsb_location_write_retries_total', 'Location batches the database or ESL refused and that were retried, by cause: busy, readonly, full, corrupt, io, esl_down, db_api, other', ['cause']);
    this.rowsWritten = context.metrics.counter('fsb_location_rows_written_total', 'db_data rows written or deleted by the location consumer');
    // Not loss (they are retried): rows given up on are counted in fsb_drops_total.
    context.metrics.gauge('fsb_location_rows_unwritten', 'Location rows waiting to be written while the database or ESL refuses writes (0 while writes succeed)', [], (g) => g.set(this.writeFailure ? this.pending.size + this.inFlight : 0));
    this.clockSkew = context.metrics.counter('fsb_location_clock_skew_total', 'Registration events and state entries dated further ahead of this node\'s clock than max-clock-skew; ordered by receive time instead');
    this.sink =
      this.config.sink === 'esl'
        ? new EslRowSink(context.local)
        : await SqliteRowSink.open(this.config.dbPath, this.config.busyTimeoutMs, { slots: !this.legacy });
    if (!this.legacy) {
      await this.restoreState(context);
      // start() resolving is what makes the bridge ready: the rows restored from the
      // side table and the cluster state must be committed by then, not 20 ms later (a
      // refused batch is retried until it is). Through the esl sink only the cluster
      // state is waited for: without NATS a node whose FreeSWITCH is down still starts.
      if (this.config.sink === 'sqlite' || context.openState) {
        await this.drain(Number.POSITIVE_INFINITY, START_RETRIES);
        // Waiting helps a lock or an ESL that comes up; a full, read-only or corrupt database is a startup failure.
        const failure = this.writeFailure;
        if (failure && this.config.sink === 'sqlite') {
          await this.sink.close();
          this.sink = null;
          throw new LocationDbError(this.config.dbPath, `the restored rows could not be written: ${failure.message} (${failure.cause})`);
        }
      }
    }
    this.unsubscribe = context.events.subscribe((item) => this.onEvent(item));
    if (!this.legacy) {
      this.sweepTimer = setInterval(() => this.sweepExpired(), EXPIRY_SWEEP_MS);
      this.sweepTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const timer of this.downTimers.values()) clearTimeout(timer);
    this.downTimers.clear();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    await this.stopWatch?.();
    // A drain already retrying (with no deadline of its own) gives up at this one too.
    this.stopDeadline = Date.now() + STOP_FLUSH_DEADLINE_MS;
    // Bounded even if a write never returns (an ESL command the client does not time out).
    let giveUp: NodeJS.Timeout | undefined;
    await Promise.race([this.drain(this.stopDeadline, STOP_RETRIES), new Promise<void>((resolve) => (giveUp = setTimeout(resolve, STOP_FLUSH_DEADLINE_MS + RETRY_MAX_MS)))]);
    clearTimeout(giveUp);
    const lost = this.pending.size + this.inFlight;
    if (lost > 0) {
      this.drops?.drop('unflushed_at_stop', undefined, lost);
      const where = this.config.sink === 'esl' ? "mod_db's db API" : this.config.dbPath;
      this.context?.logger.error({ component: 'location', rows: lost, cause: this.writeFailure?.cause, err: this.writeFailure?.message }, `location: ${lost} rows were not written to ${where} at stop${this.writeFailure ? ` (${this.writeFailure.cause}: ${this.writeFailure.message})` : ''}`);
    }
    this.pending.clear();
    this.inFlight = 0;
    this.writeFailure = null;
    this.context?.metrics.queueDepth.set({ component: 'location' }, 0);
    await Promise.allSettled([...this.kvWrites]);
    await this.sink?.close();
    this.sink = null;
  }

  /** Registrations known (live), for the status view and tests. */
  get registrations(): number {
    return this.table.size;
  }

  /** Ended registrations remembered against late copies. */
  get tombstones(): number {
    return this.table.tombstoneCount;
  }

  currentRegistrations(limit: number, filter = ''): { rows: Registration[]; total: number } {
    const needle = filter.toLowerCase();
    const rows: Registration[] = [];
    for (const b of this.table.live()) {
      const row: Registration = {
        user: b.user,
        realm: b.realm,
        node: b.switchname,
        hostname: b.hostname,
        address: this.table.address(b),
        transport: b.transport ?? null,
        // The phone's own expiry: the table keeps the row expiryMarginMs longer in case the expire event is late.
        expiresAt: b.expiresAt - this.expiryMarginMs,
      };
      if (needle === '' || [row.user, row.realm, row.node, row.hostname, row.address, row.transport ?? ''].some((v) => v.toLowerCase().includes(needle))) rows.push(row);
    }
    rows.sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : a.realm < b.realm ? -1 : a.realm > b.realm ? 1 : 0));
    return { rows: rows.slice(0, limit), total: rows.length };
  }

  onRegistrationChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Write everything pending now (tests, shutdown). */
  async flush(): Promise<void> {
    await this.drain(Date.now() + STOP_FLUSH_DEADLINE_MS);
  }

  private onEvent(item: BridgeEvent): void {
    const { event, origin } = item;
    if (event.has(LOOP_GUARD_HEADER)) return;
    const remote = origin.transport !== Transport.Esl;
    // Only peerup revives a node: a late event (a JetStream replay of what it sent
    // before it died) must not cancel the purge of its rows.
    if (event.name === 'CUSTOM' && (event.subclass === MulticastSubclass.PeerDown || event.subclass === MulticastSubclass.PeerUp)) {
      if (!this.legacy) this.onPeerEvent(event.subclass, event.get('Peer'));
      return;
    }
    const result = registrationChange(event, { sender: origin.node, receivedAt: origin.receivedAt, expiryMarginMs: this.expiryMarginMs, legacy: this.legacy, maxSkewMs: this.maxSkewMs });
    if (result === null) return;
    if (result instanceof UnusableRegistration) {
      this.drops?.drop(result.cause);
      return;
    }
    const { aheadMs, ...change } = result;
    if (remote && this.claimsLocalNode(change)) return;
    if (aheadMs > 0) this.countSkew(change.switchname, aheadMs);
    if (remote && change.kind === 'register' && this.firedBeforePurge(change)) return;
    remember(this.hostnames, change.switchname, change.hostname);
    if (this.legacy) {
      if (change.kind === 'register') {
        this.enqueue(rowKey(change.realm, change.user), {
          realm: change.realm,
          dataKey: LOCATION_PREFIX + change.user,
          row: { hostname: change.hostname, data: this.addressOf(change) },
        });
      }
      return;
    }
    const applied = this.table.apply(change, remote ? origin.transport : 'local', origin.receivedAt);
    if (applied === 'full') {
      this.drops?.drop('too_many_registrations', { max: MAX_REGISTRATIONS });
      return;
    }
    if (applied === null) return;
    this.enqueueKey(applied.key, applied.rowChanged);
    if (!remote) this.publish(change);
  }

  /**
   * Registrations made on this node are this node's alone: a remote event (or another
   * node's KV write) naming our hostname or switchname, forged or from a node
   * misconfigured with our name, must not end or replace them. Counted and ignored.
   */
  private claimsLocalNode(id: { hostname: string; switchname: string }): boolean {
    const node = this.context!.node;
    if (id.hostname !== node.hostname && id.switchname !== node.name) return false;
    this.drops?.drop('claims_local_node', { hostname: id.hostname, switchname: id.switchname });
    return true;
  }

  private countSkew(switchname: string, aheadMs: number): void {
    this.clockSkew?.inc();
    this.drops?.warn('clock_skew', `event or state entry of ${switchname} dated ${aheadMs} ms ahead of this node's clock (max-clock-skew ${this.maxSkewMs} ms): ordered by receive time`, { node: switchname, aheadMs });
  }

  private addressOf(change: Registered): string {
    const overrides = this.config.addressOverrides ?? {};
    return overrides[change.switchname] ?? overrides[change.hostname] ?? change.ip;
  }

  /** Our own registrations go to the cluster state; other nodes publish theirs. */
  private publish(change: RegistrationChange): void {
    const store = this.store;
    if (!store) return;
    const key = stateKeyOf(change);
    if (change.kind === 'register') {
      const { kind: _kind, ...binding } = change;
      this.trackKv(store.put(key, JSON.stringify(binding)));
    } else {
      this.trackKv(store.delete(key));
    }
  }

  private trackKv(promise: Promise<unknown>): void {
    const tracked = promise.catch((error: unknown) => this.drops?.drop('state_write_failed', error instanceof Error ? error.message : String(error)));
    this.kvWrites.add(tracked);
    void tracked.finally(() => this.kvWrites.delete(tracked));
  }

  /**
   * Startup: the consumer's own record (side table) first, then the cluster state on
   * top, then db_data is brought in line. Provenance decides what the cluster state may
   * end: only slots KV owns (learned from KV or NATS, or of a host that writes KV). A
   * legacy node's registrations, which only multicast ever carried, stay until they
   * expire or the node goes down; our own go back to KV if it lost them.
   */
  private async restoreState(context: ConsumerContext): Promise<void> {
    const now = Date.now();
    const recorded = new Set<string>();
    /** Keys whose record in the side table is out of date now (something ended while we were down). */
    const outdated = new Set<string>();
    for (const record of this.sink?.slotRecords() ?? []) {
      const key = rowKey(record.realm, record.user);
      recorded.add(key);
      if (record.binding ? record.binding.expiresAt <= now : record.changedAt < now - TOMBSTONE_MS) {
        outdated.add(key);
        continue;
      }
      this.table.restore(record);
      if (record.binding) remember(this.hostnames, record.binding.switchname, record.binding.hostname);
    }
    const kv = context.openState ? await this.loadClusterState(context, now) : null;
    if (kv) {
      for (const [binding, slot] of [...this.table.bindings()]) {
        const inKv = kv.keys.has(stateKeyOf(binding));
        if (slot.source === 'local') {
          if (!inKv && binding.hostname === context.node.hostname) this.restoreOwnState(binding);
        } else if (!inKv && (slot.source !== 'multicast' || kv.hosts.has(binding.hostname))) {
          this.table.remove(binding.realm, binding.user, binding.hostname, now, 'kv');
          outdated.add(rowKey(binding.realm, binding.user));
        }
      }
    }
    this.resyncRows(recorded, kv?.hosts ?? null);
    for (const key of outdated) if (!this.pending.has(key)) this.enqueueKey(key, false);
  }

  /** Loads the bucket; returns its keys and the hostnames that write it (they own their rows). */
  private async loadClusterState(context: ConsumerContext, now: number): Promise<{ keys: Set<string>; hosts: Set<string> }> {
    const store = await context.openState!(this.config.stateBucket ?? DEFAULT_LOCATION_BUCKET);
    this.store = store;
    // Watch first and hold changes until the load is done, so nothing between the two is missed.
    let held: [string, string | null][] | null = [];
    this.stopWatch = await store.watch((key, value) => {
      if (held) held.push([key, value]);
      else this.onStateChange(key, value);
    });
    const keys = new Set<string>();
    const hosts = new Set<string>([context.node.hostname]);
    for (const [key, value] of await store.entries()) {
      const parsed = parseStateValue(value, now, this.maxSkewMs, this.expiryMarginMs);
      if (!parsed) {
        this.drops?.drop('bad_state_entry', key);
        continue;
      }
      const { aheadMs, ...binding } = parsed;
      hosts.add(binding.hostname);
      if (binding.expiresAt <= now) continue;
      keys.add(stateKeyOf(binding));
      if (aheadMs > 0) this.countSkew(binding.switchname, aheadMs);
      remember(this.hostnames, binding.switchname, binding.hostname);
      // Entries naming this node are what it wrote itself before it (re)started.
      const own = binding.hostname === context.node.hostname;
      this.table.apply(binding, own ? 'local' : 'kv', now);
    }
    const changes = held;
    held = null;
    for (const [key, value] of changes) this.onStateChange(key, value);
    return { keys, hosts };
  }

  /**
   * After the restart: write only the rows that differ from the database. A LOCATION_
   * row nobody holds is deleted only when it is ours to judge: its key was in our own
   * record, or its host writes KV (so KV says it is gone). Rows of other hosts (a legacy
   * node, the Lua scripts before the migration) are left as they are.
   */
  private resyncRows(recorded: Set<string>, kvHosts: Set<string> | null): void {
    const desired = new Map<string, RowChange>();
    for (const key of this.table.keys()) {
      const row = this.table.row(key);
      if (row.row) desired.set(key, row);
    }
    for (const row of this.sink?.locationRows() ?? []) {
      const key = rowKey(row.realm, row.dataKey.slice(LOCATION_PREFIX.length));
      const want = desired.get(key);
      if (want && want.row!.hostname === row.row!.hostname && want.row!.data === row.row!.data) desired.delete(key);
      else if (!want && (recorded.has(key) || kvHosts?.has(row.row!.hostname))) this.enqueueKey(key, true);
    }
    for (const key of desired.keys()) this.enqueueKey(key, true);
  }

  private onStateChange(key: string, value: string | null): void {
    const now = Date.now();
    let rowChanged: string | null = null;
    if (value === null) {
      const id = parseStateKey(key);
      if (!id) return;
      if (id.hostname === this.context!.node.hostname) {
        this.restoreOwnState(id);
        return;
      }
      rowChanged = this.table.remove(id.realm, id.user, id.hostname, now, 'kv');
    } else {
      const parsed = parseStateValue(value, now, this.maxSkewMs, this.expiryMarginMs);
      if (!parsed) {
        this.drops?.drop('bad_state_entry', key);
        return;
      }
      const { aheadMs, ...binding } = parsed;
      // Our own writes come back through the watch; anyone else's about our registrations is refused.
      if (binding.hostname === this.context!.node.hostname) return;
      if (binding.switchname === this.context!.node.name && this.claimsLocalNode(binding)) return;
      if (aheadMs > 0) this.countSkew(binding.switchname, aheadMs);
      if (this.firedBeforePurge(binding)) return;
      remember(this.hostnames, binding.switchname, binding.hostname);
      const applied = this.table.apply(binding, 'kv', now);
      if (applied === 'full') this.drops?.drop('too_many_registrations', { max: MAX_REGISTRATIONS });
      else if (applied?.rowChanged) rowChanged = applied.key;
    }
    if (rowChanged !== null) this.enqueueKey(rowChanged, true);
  }

  /**
   * Someone deleted the key of one of our registrations (survivors purge the keys of a
   * node they think is down, a partition healed since): while it is still live here,
   * the owner writes it back.
   */
  private restoreOwnState(id: { realm: string; user: string; hostname: string }): void {
    const slot = this.table.slot(id.realm, id.user, id.hostname);
    if (!slot?.binding || slot.binding.expiresAt <= Date.now() || !this.store) return;
    this.trackKv(this.store.put(stateKeyOf(slot.binding), JSON.stringify(slot.binding)));
  }

  private onPeerEvent(subclass: string, peer: string | undefined): void {
    if (!peer || peer === this.context?.node.name) return;
    if (subclass === MulticastSubclass.PeerUp) {
      this.peerAlive(peer);
      return;
    }
    if (this.downTimers.has(peer) || this.downTimers.size >= MAX_NODES) return;
    const timer = setTimeout(() => {
      this.downTimers.delete(peer);
      this.removeNode(peer);
    }, this.config.peerDownGraceMs);
    timer.unref();
    this.downTimers.set(peer, timer);
  }

  private peerAlive(node: string): void {
    this.purgedAt.delete(node);
    const timer = this.downTimers.get(node);
    if (!timer) return;
    clearTimeout(timer);
    this.downTimers.delete(node);
  }

  /**
   * A registration of a node that was purged as down, fired before the purge: a late
   * copy (a KV watch or a JetStream durable catching up after a NATS outage) that
   * would bring the dead node's rows back. Counted and ignored.
   */
  private firedBeforePurge(binding: Registered): boolean {
    const purged = this.purgedAt.get(binding.switchname);
    if (purged === undefined || binding.ts > purged) return false;
    this.drops?.drop('stale_registration_of_down_node', binding.switchname);
    return true;
  }

  private removeNode(switchname: string): void {
    const now = Date.now();
    remember(this.purgedAt, switchname, now * 1000);
    const hostname = this.hostnames.get(switchname);
    const node = this.context!.node;
    const ended = this.table.removeWhere(
      (b) => b.hostname !== node.hostname && b.switchname !== node.name && (b.switchname === switchname || (hostname !== undefined && b.hostname === hostname)),
      now,
    );
    // The owner cannot clean up after itself: any survivor deletes its keys (deletes are idempotent).
    for (const binding of ended) {
      this.enqueueKey(rowKey(binding.realm, binding.user), true);
      if (this.store) this.trackKv(this.store.delete(stateKeyOf(binding)));
    }
  }

  private sweepExpired(): void {
    const now = Date.now();
    const ownHostname = this.context?.node.hostname;
    const { ended, forgotten } = this.table.expire(now);
    for (const binding of ended) {
      this.enqueueKey(rowKey(binding.realm, binding.user), true);
      // The owner removes its own missed expiry from the cluster state too.
      if (this.store && binding.hostname === ownHostname) this.trackKv(this.store.delete(stateKeyOf(binding)));
    }
    // Forgotten tombstones leave the side table too.
    for (const key of forgotten) this.enqueueKey(key, false);
    const forgetBefore = (now - TOMBSTONE_MS) * 1000;
    for (const [node, at] of this.purgedAt) {
      if (at >= forgetBefore) break;
      this.purgedAt.delete(node);
    }
  }

  /** Queue the table's current row and slots of `key`; `rowChanged` false writes only the side table. */
  private enqueueKey(key: string, rowChanged: boolean): void {
    this.enqueue(key, { ...this.table.row(key), writeRow: rowChanged, slots: this.table.slots(key) });
  }

  private enqueue(key: string, change: RowChange): void {
    for (const listener of this.changeListeners) listener();
    // Validated before batching: a row this sink can never write must not hold a batch back (a slot-only change writes no row).
    const unwritable = change.writeRow === false ? null : this.sink?.unwritable(change);
    if (unwritable) {
      this.drops?.drop('unwritable_row', unwritable.message);
      // The old row must not keep pointing somewhere: delete it when the key itself can be written.
      const deletion: RowChange = { ...change, row: null };
      if (change.row === null || this.sink?.unwritable(deletion)) return;
      change = deletion;
    }
    const before = this.pending.get(key);
    if (before) mergeInto(change, before);
    // Re-inserting moves the key to the end: batches are written in arrival order.
    this.pending.delete(key);
    this.pending.set(key, change);
    if (this.stopping || this.flushing || this.retryDelayMs > 0) return;
    if (this.pending.size >= this.config.flushMaxRows) this.scheduleFlush(0);
    else this.scheduleFlush(this.config.flushMs);
  }

  private scheduleFlush(delayMs: number): void {
    if (this.flushTimer) {
      if (delayMs > 0) return;
      clearTimeout(this.flushTimer);
    }
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      void this.drain(Number.POSITIVE_INFINITY);
    }, delayMs);
  }

  /**
   * Write pending rows in batches of flushMaxRows. Rows the sink refuses for good are
   * dropped (counted); rows it could not write now are put back (unless newer rows
   * replaced them) and retried with backoff, and while that lasts the failure is
   * warned about (rate-limited), shown in fsb_location_rows_unwritten and as degraded
   * health. With `retryOnly` (start, stop), any other cause ends the drain at once.
   */
  private drain(deadline: number, retryOnly?: ReadonlySet<WriteFailureCause>): Promise<void> {
    if (retryOnly) this.retryOnly = retryOnly;
    if (this.flushing) return this.flushing.then(() => (this.pending.size > 0 && Date.now() < deadline && this.retryable() ? this.drain(deadline, retryOnly) : undefined));
    this.flushing = (async () => {
      while (this.pending.size > 0 && this.sink) {
        const until = Math.min(deadline, this.stopDeadline);
        const batch: [string, RowChange][] = [];
        for (const entry of this.pending) {
          batch.push(entry);
          if (batch.length >= this.config.flushMaxRows) break;
        }
        for (const [key] of batch) this.pending.delete(key);
        this.inFlight = batch.length;
        this.updateQueueDepth();
        const result = await this.sink.write(
          batch.map(([, change]) => change),
          until,
        );
        this.inFlight = 0;
        const refused = new Set(result.refused.map((r) => r.index));
        let rows = 0;
        for (let i = 0; i < result.handled; i++) if (!refused.has(i) && batch[i][1].writeRow !== false) rows++;
        this.rowsWritten?.inc(rows);
        for (const { index, error } of result.refused) this.drops?.drop('unwritable_row', { realm: batch[index][1].realm, dataKey: batch[index][1].dataKey, error: error.message });
        if (result.error === undefined) {
          if (this.writeFailure) this.context?.logger.info({ component: 'location', cause: this.writeFailure.cause, failedForMs: Date.now() - this.writeFailure.since }, 'location: writes succeed again');
          this.writeFailure = null;
          this.retryDelayMs = 0;
          this.updateQueueDepth();
          // Let events in between batches: a large resync must not hold the event loop.
          if (this.pending.size > 0) await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        for (const [key, change] of batch.slice(result.handled)) {
          const newer = this.pending.get(key);
          if (newer) mergeInto(newer, change);
          else this.pending.set(key, change);
        }
        this.onWriteFailure(result.error);
        this.retryDelayMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.retryDelayMs * 2));
        if (!this.retryable() || Date.now() + this.retryDelayMs > Math.min(until, this.stopDeadline)) break;
        await new Promise((resolve) => setTimeout(resolve, this.retryDelayMs));
      }
      this.updateQueueDepth();
    })().finally(() => {
      this.flushing = null;
      this.retryOnly = null;
      // Rows that arrived while the last batch was being written.
      if (this.pending.size > 0 && !this.stopping) this.scheduleFlush(this.config.flushMs);
    });
    return this.flushing;
  }

  /** Whether the current failure is worth waiting for (always, except during start and stop). */
  private retryable(): boolean {
    return !this.writeFailure || !this.retryOnly || this.retryOnly.has(this.writeFailure.cause);
  }

  private onWriteFailure(error: unknown): void {
    const cause = writeFailureCause(error);
    const message = writeFailureMessage(error);
    const since = this.writeFailure?.since ?? Date.now();
    this.writeFailure = { cause, message, since };
    this.retries?.inc({ cause });
    // A lock held for a moment, or ESL reconnecting, is normal; a lasting one, or any other failure, is news.
    const waiting = this.pending.size;
    if (this.degraded) this.drops?.warn(`write_${cause}`, `${waiting} rows waiting: ${this.config.sink === 'esl' ? "mod_db's db API" : this.config.dbPath} refuses writes (${cause}: ${message}); retrying`, { cause, error: message, pending: waiting, failingForMs: Date.now() - since });
    else this.context?.logger.debug({ err: message, cause }, 'location batch refused, retrying');
  }

  /** The sink has been failing for a while, or for another reason than a short lock or ESL reconnecting. */
  private get degraded(): boolean {
    const failure = this.writeFailure;
    return failure !== null && (!TRANSIENT_FAILURES.has(failure.cause) || Date.now() - failure.since >= DEGRADED_AFTER_MS);
  }

  health(): ConsumerHealth {
    const failure = this.writeFailure;
    if (!failure || !this.degraded) return { status: 'ok' };
    return { status: 'degraded', detail: `${this.pending.size + this.inFlight} rows not written for ${Math.round((Date.now() - failure.since) / 1000)} s (${failure.cause}: ${failure.message})` };
  }

  private updateQueueDepth(): void {
    this.context?.metrics.queueDepth.set({ component: 'location' }, this.pending.size + this.inFlight);
  }
}

/** Coalesce an older pending change of the same key into a newer one: a row write still owed is not undone by a slot-only change, nor slots by a row-only one. */
function mergeInto(newer: RowChange, older: RowChange): void {
  if (older.writeRow !== false) newer.writeRow = true;
  newer.slots ??= older.slots;
}

/** Why a write failed, as the label of fsb_location_write_retries_total (docs/reliability.md lists them). */
type WriteFailureCause = 'busy' | 'readonly' | 'full' | 'corrupt' | 'io' | 'esl_down' | 'db_api' | 'other';

/** Failures that end by themselves in the normal course of things: not degraded until they last. */
const TRANSIENT_FAILURES: ReadonlySet<WriteFailureCause> = new Set(['busy', 'esl_down']);
/** What start() waits for (a lock, FreeSWITCH starting): anything else fails the start. */
const START_RETRIES: ReadonlySet<WriteFailureCause> = new Set(['busy', 'esl_down', 'db_api']);
/** What stop() waits for, up to its deadline: in the bridge ESL is already closed by then. */
const STOP_RETRIES: ReadonlySet<WriteFailureCause> = new Set(['busy']);

/** The error as an operator needs it: SQLite's code with its text, and what to do when retrying cannot help. */
function writeFailureMessage(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  // The connection still holds the old file; only a new open (a restart) reaches the one now at the path.
  if (code === 'SQLITE_READONLY_DBMOVED') return `${code}: the file was replaced or removed while open; restart to open the one now at the path`;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? `${code}: ${message}` : message;
}

function writeFailureCause(error: unknown): WriteFailureCause {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return 'other';
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'busy';
  // CANTOPEN at write time: the rollback journal cannot be created next to the file.
  if (code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_PERM') return 'readonly';
  if (code === 'SQLITE_FULL') return 'full';
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') return 'corrupt';
  if (code.startsWith('SQLITE_IOERR')) return 'io';
  if (code === 'FSB_ERR_NOT_CONNECTED' || code === 'FSB_ERR_COMMAND_TIMEOUT') return 'esl_down';
  if (code === 'FSB_ERR_COMMAND') return 'db_api';
  return 'other';
}

export function createLocationConsumer(config: LocationConsumerConfig): Consumer {
  return new LocationConsumer(config);
}
