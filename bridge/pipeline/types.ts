import type { FsEvent } from '../event/event.js';

/** Where an event entered the bridge. */
export const Transport = { Esl: 'esl', Multicast: 'multicast', Nats: 'nats' } as const;
export type Transport = (typeof Transport)[keyof typeof Transport];

export interface Origin {
  readonly transport: Transport;
  /** The node the event was fired on: our own node name for ESL, Multicast-Sender for multicast, the subject's node token for NATS. */
  readonly node: string;
  /** Date.now() when the bridge received it. */
  readonly receivedAt: number;
}

/**
 * The envelope that flows through the pipeline. `event` is the event as its origin
 * node fired it (original Event-Name and headers, not the Orig- prefixed copy).
 */
export interface BridgeEvent {
  readonly event: FsEvent;
  readonly origin: Origin;
  /** Present when the transport redelivers what is not acknowledged (JetStream). */
  readonly delivery?: Delivery;
}

/**
 * How a transport that redelivers learns what became of an event. The bridge settles
 * a delivery once the event's fate is known: acknowledged when FreeSWITCH has it (or
 * it was a duplicate, our own, or unusable), negatively when it could not be queued,
 * so it comes again. One never settled (the bridge crashed) is redelivered.
 */
export interface Delivery {
  ack(): void;
  /** Deliver again after `delayMs`. */
  nak(delayMs: number): void;
}

/** What a source may ask of the bridge besides taking events. */
export interface SourceControl {
  /** Null when the bridge takes more now; else resolves when it does. A source that can wait (NATS) waits. */
  backpressure(): Promise<void> | null;
}

/** Receives local events that match its bindings. deliver() is synchronous and never blocks: a sink buffers and counts its own drops. */
export interface Sink {
  readonly name: string;
  deliver(item: BridgeEvent): void;
  start(): Promise<void>;
  /** Flush what it holds (bounded by its own timeout) and release resources. */
  stop(): Promise<void>;
}

/** Produces remote events (multicast receive, NATS subscribe). */
export interface RemoteSource {
  readonly name: string;
  start(emit: (item: BridgeEvent) => void, control?: SourceControl): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Header the bridge adds to every event it injects into its local node (remote
 * events, consumer-fired PRESENCE_IN). The ESL ingest never republishes an event
 * carrying it, which is what keeps two bridged nodes from ping-ponging events the
 * way two copies of startup_script_1.lua do.
 */
export const LOOP_GUARD_HEADER = 'FSB-Injected-By';
