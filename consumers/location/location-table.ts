import { LOCATION_PREFIX, type Order, type RegistrationChange, type Registered } from './registrations.js';

export { LOCATION_PREFIX };

/** A row mod_db should answer for realm + data_key; `row` null means no row. */
export interface RowChange {
  realm: string;
  dataKey: string;
  row: { hostname: string; data: string } | null;
  /** False when only the consumer's own record of the key changed (a tombstone), not the db_data row. Default true. */
  writeRow?: boolean;
  /** Every slot of realm + user, for the consumer's side table; absent when the side table is not touched. */
  slots?: SlotRecord[];
}

export type Binding = Omit<Registered, 'kind'>;

/**
 * Where a slot was learned. `local`: our own sofia events; `kv`: the cluster state,
 * `nats`: an event over NATS (both from bridged nodes, which keep their registrations
 * in KV); `multicast`: an event over multicast, which a legacy mod_event_multicast node
 * may have sent (it never writes KV).
 */
export type Source = 'local' | 'kv' | 'nats' | 'multicast';

/** A registration on one host, or a tombstone: the order of the event that ended it, so an older copy cannot bring it back. */
export interface Slot {
  binding: Binding | null;
  order: Order;
  /** Our clock (epoch ms) when the slot last changed: tombstones are forgotten TOMBSTONE_MS after it. */
  changedAt: number;
  source: Source;
}

/** A slot with where it lives, as the side table keeps it. */
export interface SlotRecord extends Slot {
  realm: string;
  user: string;
  hostname: string;
}

/**
 * An ended registration is remembered this long (our clock) against late or replayed
 * copies, then forgotten: a copy older than that can only bring a row back until its
 * own expiry, counted from when it arrives.
 */
export const TOMBSTONE_MS = 10 * 60 * 1_000;
/** Tombstones kept at most: a flood of unregisters for made-up users evicts the oldest first. */
export const MAX_TOMBSTONES = 100_000;
/** Live registrations kept at most; beyond it a new remote registration is refused (counted). */
export const MAX_REGISTRATIONS = 1_000_000;

export function rowKey(realm: string, user: string): string {
  return `${realm}\u0000${user}`;
}

/**
 * Whether `change` is newer than what a slot holds. Within one FreeSWITCH run
 * (same Core-UUID) Event-Sequence orders events without any clock; either order
 * saying newer wins, so neither a forged sequence number nor a clock stepped back
 * pins the slot. Across runs only the (skew-bounded) timestamp is there.
 */
export function isNewer(change: Order, known: Order): boolean {
  if (change.core !== undefined && change.core === known.core && change.seq !== undefined && known.seq !== undefined) return change.seq > known.seq || change.ts > known.ts;
  return change.ts >= known.ts;
}

function orderOf(change: Order): Order {
  const order: Order = { ts: change.ts };
  if (change.core !== undefined && change.seq !== undefined) {
    order.core = change.core;
    order.seq = change.seq;
  }
  return order;
}

/** What apply() changed for a realm + user. */
export interface Applied {
  key: string;
  /** The db_data row differs (another host or address, or none); false when only the slots changed. */
  rowChanged: boolean;
}

/**
 * Every registration the cluster reported, per realm + user and per host. mod_db's
 * lookup ignores hostname, so the table answers one row per realm + user: the newest
 * live registration (by the origin's event timestamp). Keeping all hosts, not just
 * the row, means that when a phone registered on two nodes leaves one of them, the
 * row falls back to the other instead of disappearing.
 */
export class LocationTable {
  private readonly users = new Map<string, Map<string, Slot>>();
  /** Tombstones by slot id (key NUL hostname), oldest change first. */
  private readonly tombstones = new Map<string, true>();
  private liveCount = 0;

  constructor(private readonly addressOf: (binding: Binding) => string) {}

  /** Live registrations. */
  get size(): number {
    return this.liveCount;
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  /**
   * Apply a change learned from `source` at `nowMs`; null when it was stale or changed
   * nothing, 'full' when a new remote registration would pass MAX_REGISTRATIONS. An
   * unregister for a registration not known leaves a tombstone, so a late copy of the
   * register cannot bring it back.
   */
  apply(change: RegistrationChange, source: Source, nowMs: number): Applied | 'full' | null {
    const key = rowKey(change.realm, change.user);
    const slot = this.users.get(key)?.get(change.hostname);
    if (slot && !isNewer(change, slot.order)) return null;
    const order = orderOf(change);
    const before = this.current(key);
    if (change.kind === 'unregister') {
      this.setSlot(key, change.hostname, { binding: null, order, changedAt: nowMs, source });
      return { key, rowChanged: slot?.binding != null && !this.sameRow(before, this.current(key)) };
    }
    const { kind: _kind, ...binding } = change;
    if (slot?.binding && sameRegistration(slot.binding, binding)) {
      // The same registration again (another transport, the cluster state): nothing to write.
      slot.order = order;
      slot.binding.expiresAt = Math.max(slot.binding.expiresAt, binding.expiresAt);
      return null;
    }
    if (!slot?.binding && source !== 'local' && this.liveCount >= MAX_REGISTRATIONS) return 'full';
    this.setSlot(key, change.hostname, { binding, order, changedAt: nowMs, source });
    // A refresh (re-register on the same node) leaves the db_data row as it is.
    return { key, rowChanged: !this.sameRow(before, this.current(key)) };
  }

  private sameRow(a: Binding | null, b: Binding | null): boolean {
    if (a === null || b === null) return a === b;
    return a.hostname === b.hostname && this.addressOf(a) === this.addressOf(b);
  }

  /** Put back a slot from the side table at startup. */
  restore(record: SlotRecord): void {
    const { realm, user, hostname, ...slot } = record;
    this.setSlot(rowKey(realm, user), hostname, slot);
  }

  /** End a host's registration whatever its order (its owner deleted it from the cluster state). */
  remove(realm: string, user: string, hostname: string, nowMs: number, source: Source): string | null {
    const key = rowKey(realm, user);
    const slot = this.users.get(key)?.get(hostname);
    if (!slot?.binding) return null;
    this.setSlot(key, hostname, { binding: null, order: slot.order, changedAt: nowMs, source });
    return key;
  }

  /** End every registration matching `predicate`; returns the ended bindings. */
  removeWhere(predicate: (binding: Binding, slot: Slot) => boolean, nowMs: number): Binding[] {
    const ended: Binding[] = [];
    for (const [key, hosts] of this.users) {
      for (const [hostname, slot] of hosts) {
        if (slot.binding && predicate(slot.binding, slot)) {
          ended.push(slot.binding);
          this.setSlot(key, hostname, { binding: null, order: slot.order, changedAt: nowMs, source: slot.source });
        }
      }
    }
    return ended;
  }

  /** End registrations past their expiry and forget old tombstones; returns the ended bindings and the keys that lost a tombstone. */
  expire(nowMs: number): { ended: Binding[]; forgotten: Set<string> } {
    const ended = this.removeWhere((b) => b.expiresAt <= nowMs, nowMs);
    const oldest = nowMs - TOMBSTONE_MS;
    const forgotten = new Set<string>();
    for (const id of this.tombstones.keys()) {
      const sep = id.lastIndexOf('\u0000');
      const key = id.slice(0, sep);
      const slot = this.users.get(key)?.get(id.slice(sep + 1));
      if (slot && slot.changedAt >= oldest) break;
      this.forget(id);
      forgotten.add(key);
    }
    return { ended, forgotten };
  }

  /** The slot a host holds for realm + user, if any. */
  slot(realm: string, user: string, hostname: string): Slot | undefined {
    return this.users.get(rowKey(realm, user))?.get(hostname);
  }

  /** The newest live registration of realm + user. */
  current(key: string): Binding | null {
    let best: Binding | null = null;
    const hosts = this.users.get(key);
    if (!hosts) return null;
    for (const slot of hosts.values()) {
      const b = slot.binding;
      if (b && (!best || b.ts > best.ts || (b.ts === best.ts && b.hostname < best.hostname))) best = b;
    }
    return best;
  }

  /** The db_data row mod_db should answer for this key. */
  row(key: string): RowChange {
    const sep = key.indexOf('\u0000');
    const realm = key.slice(0, sep);
    const dataKey = LOCATION_PREFIX + key.slice(sep + 1);
    const b = this.current(key);
    return { realm, dataKey, row: b ? { hostname: b.hostname, data: this.addressOf(b) } : null };
  }

  /** Every slot of realm + user (live or tombstone), for the side table. */
  slots(key: string): SlotRecord[] {
    const sep = key.indexOf('\u0000');
    const realm = key.slice(0, sep);
    const user = key.slice(sep + 1);
    const out: SlotRecord[] = [];
    for (const [hostname, slot] of this.users.get(key) ?? []) out.push({ realm, user, hostname, ...slot });
    return out;
  }

  /** The newest live registration of every realm + user. */
  *live(): IterableIterator<Binding> {
    for (const key of this.users.keys()) {
      const binding = this.current(key);
      if (binding) yield binding;
    }
  }

  /** db_data.data for a registration. */
  address(binding: Binding): string {
    return this.addressOf(binding);
  }

  *keys(): IterableIterator<string> {
    yield* this.users.keys();
  }

  *bindings(): IterableIterator<[Binding, Slot]> {
    for (const hosts of this.users.values()) for (const slot of hosts.values()) if (slot.binding) yield [slot.binding, slot];
  }

  private setSlot(key: string, hostname: string, slot: Slot): void {
    let hosts = this.users.get(key);
    if (!hosts) {
      hosts = new Map();
      this.users.set(key, hosts);
    }
    const before = hosts.get(hostname);
    if (before?.binding) this.liveCount--;
    hosts.set(hostname, slot);
    const id = `${key}\u0000${hostname}`;
    this.tombstones.delete(id);
    if (slot.binding) {
      this.liveCount++;
      return;
    }
    this.tombstones.set(id, true);
    if (this.tombstones.size > MAX_TOMBSTONES) this.forget(this.tombstones.keys().next().value!);
  }

  private forget(id: string): void {
    this.tombstones.delete(id);
    const sep = id.lastIndexOf('\u0000');
    const key = id.slice(0, sep);
    const hosts = this.users.get(key);
    if (!hosts) return;
    const hostname = id.slice(sep + 1);
    if (hosts.get(hostname)?.binding === null) hosts.delete(hostname);
    if (hosts.size === 0) this.users.delete(key);
  }
}

/** The same register event seen twice; each copy computed its expiry from when it arrived. */
function sameRegistration(a: Binding, b: Binding): boolean {
  return a.ts === b.ts && a.ip === b.ip && a.switchname === b.switchname;
}
