import { LOCATION_PREFIX, type RegistrationChange, type Registered } from './registrations.js';

export { LOCATION_PREFIX };

/** A row mod_db should answer for realm + data_key; `row` null means no row. */
export interface RowChange {
  realm: string;
  dataKey: string;
  row: { hostname: string; data: string } | null;
}

export type Binding = Omit<Registered, 'kind'>;

/** A registration on one host, or the time it ended (so an older copy cannot bring it back). */
type Slot = { binding: Binding; endedTs?: undefined } | { binding: null; endedTs: number };

/** An ended registration is remembered this long against late or replayed copies. */
const TOMBSTONE_US = 10 * 60 * 1_000_000;

export function rowKey(realm: string, user: string): string {
  return `${realm}\u0000${user}`;
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

  constructor(private readonly addressOf: (binding: Binding) => string) {}

  get size(): number {
    let n = 0;
    for (const hosts of this.users.values()) for (const slot of hosts.values()) if (slot.binding) n++;
    return n;
  }

  /** Apply a change; returns the row key when the row may have changed, null when the change was stale or a no-op. */
  apply(change: RegistrationChange): string | null {
    const key = rowKey(change.realm, change.user);
    let hosts = this.users.get(key);
    const slot = hosts?.get(change.hostname);
    const knownTs = slot ? (slot.binding ? slot.binding.ts : slot.endedTs) : -1;
    if (change.ts < knownTs) return null;
    if (change.kind === 'unregister') {
      if (!slot?.binding) return null;
      hosts!.set(change.hostname, { binding: null, endedTs: change.ts });
      return key;
    }
    const { kind: _kind, ...binding } = change;
    if (slot?.binding && sameBinding(slot.binding, binding)) return null;
    if (!hosts) {
      hosts = new Map();
      this.users.set(key, hosts);
    }
    hosts.set(change.hostname, { binding });
    return key;
  }

  /** Forget a host's registration whatever its timestamp (its owner deleted it from the cluster state). */
  remove(realm: string, user: string, hostname: string): string | null {
    const key = rowKey(realm, user);
    const slot = this.users.get(key)?.get(hostname);
    if (!slot?.binding) return null;
    this.users.get(key)!.set(hostname, { binding: null, endedTs: slot.binding.ts });
    return key;
  }

  /** End every registration matching `predicate`; returns the ended bindings. */
  removeWhere(predicate: (binding: Binding) => boolean): Binding[] {
    const ended: Binding[] = [];
    for (const hosts of this.users.values()) {
      for (const [hostname, slot] of hosts) {
        if (slot.binding && predicate(slot.binding)) {
          ended.push(slot.binding);
          hosts.set(hostname, { binding: null, endedTs: slot.binding.ts });
        }
      }
    }
    return ended;
  }

  /** End registrations past their expiry and drop old tombstones; returns the ended bindings. */
  expire(nowMs: number): Binding[] {
    const ended = this.removeWhere((b) => b.expiresAt <= nowMs);
    const oldest = nowMs * 1000 - TOMBSTONE_US;
    for (const [key, hosts] of this.users) {
      for (const [hostname, slot] of hosts) if (!slot.binding && slot.endedTs < oldest) hosts.delete(hostname);
      if (hosts.size === 0) this.users.delete(key);
    }
    return ended;
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
}

function sameBinding(a: Binding, b: Binding): boolean {
  return a.ts === b.ts && a.ip === b.ip && a.expiresAt === b.expiresAt && a.switchname === b.switchname;
}
