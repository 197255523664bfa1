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

export interface Consumer {
  readonly name: string;
  /** Local events this consumer needs whatever the transports carry (mod_event_multicast grammar), e.g. `PRESENCE_PROBE`. */
  readonly localBindings?: string;
  start(context: ConsumerContext): Promise<void>;
  /** Flush pending work and release resources. */
  stop(): Promise<void>;
}
