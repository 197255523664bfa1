import type { FsEvent } from './event/event.js';
import type { NodeConfig } from './config/types.js';
import type { BridgeEvent } from './pipeline/types.js';
import type { Logger } from './observability/logger.js';
import type { Metrics } from './observability/metrics.js';

/** Local and remote events after dedup, in arrival order. */
export interface EventStream {
  /** Returns the unsubscribe function. Listeners run synchronously: queue slow work. */
  subscribe(listener: (item: BridgeEvent) => void): () => void;
}

/** What a consumer may do to its own FreeSWITCH node. */
export interface LocalNode {
  /** `api <command>`; resolves with the response body, rejects with a typed error. */
  api(command: string): Promise<string>;
  /**
   * `sendevent`; the bridge adds its loop-guard header so the event is never
   * republished to other nodes. Rejects (HeaderInjectionError) on CR/LF.
   */
  sendEvent(event: FsEvent): Promise<void>;
}

/**
 * Cluster-wide key/value state (a NATS KV bucket). Keys are free text; the store
 * escapes them for the backend.
 */
export interface StateStore {
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  /** Every live key with its value. */
  entries(): Promise<Map<string, string>>;
  /** Follow changes made after the call (by any node); value null means deleted. Returns a stop function. */
  watch(onChange: (key: string, value: string | null) => void): Promise<() => Promise<void>>;
}

export interface ConsumerContext {
  node: NodeConfig;
  events: EventStream;
  local: LocalNode;
  logger: Logger;
  metrics: Metrics;
  /** Present when NATS is configured: opens (creating if needed) a KV bucket. */
  openState?: (bucket: string) => Promise<StateStore>;
}

/** A consumer's own view of its health, for /health. */
export interface ConsumerHealth {
  status: 'ok' | 'degraded';
  /** What is wrong, for an operator (degraded only). */
  detail?: string;
}

/** The /health fields for these consumers: `status: 'degraded'` and, by consumer, what is wrong, while any cannot do its work. */
export function consumersHealth(consumers: readonly Consumer[]): { status: 'ok' } | { status: 'degraded'; degraded: Record<string, string> } {
  const degraded: Record<string, string> = {};
  for (const consumer of consumers) {
    const health = consumer.health?.();
    if (health?.status === 'degraded') degraded[consumer.name] = health.detail ?? 'degraded';
  }
  return Object.keys(degraded).length === 0 ? { status: 'ok' } : { status: 'degraded', degraded };
}

export interface Consumer {
  readonly name: string;
  /** Local events this consumer needs whatever the transports carry (mod_event_multicast grammar), e.g. `PRESENCE_PROBE`. */
  readonly localBindings?: string;
  start(context: ConsumerContext): Promise<void>;
  /** Flush pending work and release resources. */
  stop(): Promise<void>;
  /** Degraded while the consumer cannot do its work (its database refuses writes, say). Optional. */
  health?(): ConsumerHealth;
}

/** What a BLF lamp shows for a user: what a phone subscribed to that user sees. */
export type LampState = 'idle' | 'ringing' | 'busy';

export interface Lamp {
  /** The user the lamp is for, as presence names it (`1000@example.com`). */
  user: string;
  state: LampState;
  /** Switchname of the node the call that sets the lamp is on (the last call, once idle). */
  node: string;
  /** Date.now() when the lamp took this state. */
  since: number;
}

/**
 * A consumer that knows the BLF lamps (the cluster board shows them). Read-only: the
 * board never reaches into a consumer further than this.
 */
export interface LampSource {
  /** Every user with a call seen lately, lit or idle. */
  currentLamps(): Lamp[];
  /** Called synchronously on each change of a user's lamp; returns the unsubscribe function. */
  onLampChange(listener: (lamp: Lamp) => void): () => void;
}

/** One registration as the location table holds it. */
export interface Registration {
  user: string;
  realm: string;
  /** Switchname of the node the phone registered on. */
  node: string;
  hostname: string;
  /** The address db_data gives for the user (the node's address, after overrides). */
  address: string;
  /** From `Registered(<transport>)`: UDP, TCP, TLS, WSS-NAT...; null when the status names none. */
  transport: string | null;
  /** Epoch ms when it expires, null when it never does. */
  expiresAt: number | null;
}

/** A consumer that knows the cluster's registrations (the cluster board shows them). Read-only. */
export interface RegistrationSource {
  /** The row per realm + user that lookups answer, at most `limit` of them (sorted by user, realm), and how many there are. */
  currentRegistrations(limit: number, filter?: string): { rows: Registration[]; total: number };
  /** Called (synchronously, possibly often) when any row may have changed; returns the unsubscribe function. */
  onRegistrationChange(listener: () => void): () => void;
}

export function isLampSource(value: unknown): value is LampSource {
  const v = value as Partial<LampSource> | null;
  return typeof v?.currentLamps === 'function' && typeof v.onLampChange === 'function';
}

export function isRegistrationSource(value: unknown): value is RegistrationSource {
  const v = value as Partial<RegistrationSource> | null;
  return typeof v?.currentRegistrations === 'function' && typeof v.onRegistrationChange === 'function';
}
