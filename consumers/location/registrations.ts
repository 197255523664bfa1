import type { FsEvent } from '../../bridge/index.js';

/** db_data.data_key is this prefix and the user. */
export const LOCATION_PREFIX = 'LOCATION_';

/** The sofia subclasses that start and end a registration. */
export const SofiaSubclass = {
  Register: 'sofia::register',
  Unregister: 'sofia::unregister',
  Expire: 'sofia::expire',
} as const;

/**
 * `Registered(UDP)`, `Registered(TLS-NAT)`, `Registered(WSS-NAT)`... Plain `Registered`
 * is accepted too. The original wiki script matched only `Registered(UDP)`, which
 * left TCP, TLS and WebRTC phones out of the table.
 */
const REGISTERED = /^Registered(?:\([A-Z0-9-]+\))?$/;

/** mod_db's db_data columns are VARCHAR(255), and `db select` reads at most 255 bytes of a value. */
export const MAX_FIELD_BYTES = 255;

// eslint-disable-next-line no-control-regex -- control characters are exactly what must be found
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Text the location table may keep and hand to SQLite, KV keys and mod_db's API:
 * well-formed UTF-16 (a lone surrogate, which only a forged JSON event can carry,
 * makes encodeURIComponent throw and is written as U+FFFD elsewhere), no control
 * characters (a NUL ends the string for mod_db's C code, CR/LF end an ESL command),
 * and no longer than mod_db reads back. Nothing a phone registers with fails this.
 */
export function isStorableText(text: string, prefixBytes = 0): boolean {
  return text.isWellFormed() && !CONTROL.test(text) && prefixBytes + Buffer.byteLength(text, 'utf8') <= MAX_FIELD_BYTES;
}

/** Where a registration lives, as mod_db's db_data sees it. */
export interface RegistrationId {
  realm: string;
  user: string;
  /** FreeSWITCH-Hostname of the registering node (db_data.hostname). */
  hostname: string;
}

/**
 * Where an event stands in its origin's history: the origin's Event-Date-Timestamp in
 * microseconds (bounded by the accepted clock skew), and its Core-UUID and
 * Event-Sequence, which order events of one FreeSWITCH run without any clock.
 */
export interface Order {
  ts: number;
  core?: string;
  seq?: number;
}

export interface Registered extends RegistrationId, Order {
  kind: 'register';
  /** FreeSWITCH-Switchname of the registering node (Multicast-Sender, peer events name it). */
  switchname: string;
  /** The registering node's FreeSWITCH-IPv4 (before any configured override). */
  ip: string;
  /** Epoch ms (our clock) after which the registration is gone even if no unregister/expire arrives. */
  expiresAt: number;
  /** The transport in `Registered(<transport>)` (UDP, TLS-NAT...), for the cluster board; absent when the status names none. */
  transport?: string;
}

export interface Unregistered extends RegistrationId, Order {
  kind: 'unregister';
  switchname: string;
}

export type RegistrationChange = Registered | Unregistered;

/**
 * Longest registration kept without news, in seconds: a register without a usable
 * `expires`, or with a larger one, lives this long (a forged `expires` cannot pin a
 * row for years). SIP registrations are refreshed far more often.
 */
export const MAX_EXPIRES_S = 86_400;

/** Default for max-clock-skew: how far ahead of our clock an origin timestamp may be. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 30_000;

/** A header was missing or unusable; the event is skipped and counted with this cause. */
export class UnusableRegistration {
  constructor(readonly cause: string) {}
}

export function isRegisteredStatus(status: string | undefined, legacy: boolean): boolean {
  if (status === undefined) return false;
  // locationlocal.lua / locationforeign.lua compare the first 10 characters.
  return legacy ? status.startsWith('Registered') : REGISTERED.test(status);
}

/**
 * The origin's timestamp, trusted up to `maxSkewMs` ahead of when we received the
 * event; beyond that (a node whose clock is wrong, or a forged date) the receive time
 * stands in, so a timestamp from the future cannot outrank every later event.
 */
function orderOf(event: FsEvent, receivedAtMs: number, maxSkewMs: number): Order & { aheadMs: number } {
  const origin = Number(event.get('Event-Date-Timestamp'));
  const received = Math.round(receivedAtMs * 1000);
  let ts = Number.isSafeInteger(origin) && origin > 0 ? origin : received;
  let aheadMs = 0;
  if (ts > received + maxSkewMs * 1000) {
    aheadMs = Math.round((ts - received) / 1000);
    ts = received;
  }
  const order: Order & { aheadMs: number } = { ts, aheadMs };
  const core = event.coreUuid;
  const seq = event.sequence;
  if (core !== undefined && seq !== undefined && seq >= 0 && isStorableText(core)) {
    order.core = core;
    order.seq = seq;
  }
  return order;
}

/**
 * The registration change a sofia event describes, null for events that are not
 * about a completed registration, UnusableRegistration when one is but a header the
 * table needs is missing.
 */
export function registrationChange(
  event: FsEvent,
  options: { sender: string; receivedAt: number; expiryMarginMs: number; legacy: boolean; maxSkewMs?: number },
): (RegistrationChange & { aheadMs: number }) | UnusableRegistration | null {
  if (event.name !== 'CUSTOM') return null;
  const subclass = event.subclass;
  const isExpire = subclass === SofiaSubclass.Expire;
  if (subclass !== SofiaSubclass.Register && subclass !== SofiaSubclass.Unregister && !isExpire) return null;
  if (subclass === SofiaSubclass.Register && !isRegisteredStatus(event.get('status'), options.legacy)) return null;
  // sofia::expire names the user `user` / `host`, the others `from-user` / `from-host`.
  const user = event.get(isExpire ? 'user' : 'from-user');
  const realm = event.get(isExpire ? 'host' : 'from-host');
  const hostname = event.get('FreeSWITCH-Hostname');
  if (!user || !realm) return new UnusableRegistration('no_user_or_realm');
  if (!hostname) return new UnusableRegistration('no_hostname');
  const switchname = event.get('FreeSWITCH-Switchname') ?? event.get('Multicast-Sender') ?? options.sender;
  if (!isStorableText(user, LOCATION_PREFIX.length) || !isStorableText(realm) || !isStorableText(hostname) || !isStorableText(switchname)) return new UnusableRegistration('unusable_text');
  const order = orderOf(event, options.receivedAt, options.maxSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS);
  if (subclass !== SofiaSubclass.Register) return { kind: 'unregister', realm, user, hostname, switchname, ...order };
  const ip = event.get('FreeSWITCH-IPv4');
  if (!ip) return new UnusableRegistration('no_ipv4');
  if (!isStorableText(ip)) return new UnusableRegistration('unusable_text');
  const expires = Number(event.get('expires'));
  // Counted from when we received it, as mod_sofia does for a multicast register: the origin's clock may be wrong.
  const lifetimeS = Number.isFinite(expires) && expires > 0 ? Math.min(expires, MAX_EXPIRES_S) : MAX_EXPIRES_S;
  const expiresAt = Math.round(options.receivedAt + lifetimeS * 1000 + options.expiryMarginMs);
  const transport = /^Registered\(([A-Za-z0-9-]{1,16})\)$/.exec(event.get('status') ?? '')?.[1];
  return { kind: 'register', realm, user, hostname, switchname, ip, expiresAt, ...order, ...(transport ? { transport } : {}) };
}
