import type { ConsumerContext, EventStream, LocalNode, StateStore } from '../../bridge/consumer.js';
import type { NodeConfig } from '../../bridge/config/types.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';

/** Synchronous fan-out, like the bridge's pipeline. */
export class MemoryEventStream implements EventStream {
  private readonly listeners = new Set<(item: BridgeEvent) => void>();

  subscribe(listener: (item: BridgeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(item: BridgeEvent): void {
    for (const listener of this.listeners) listener(item);
  }

  /** An event as the given transport would deliver it (origin.node = sender switchname). */
  emitFrom(event: FsEvent, transport: Transport, node: string, receivedAt = Date.now()): void {
    this.emit({ event, origin: { transport, node, receivedAt } });
  }

  get listenerCount(): number {
    return this.listeners.size;
  }
}

/** Records what a consumer does to its node; `onSendEvent` lets a test wire the node's ESL output back. */
export class RecordingLocalNode implements LocalNode {
  readonly sent: FsEvent[] = [];
  readonly apiCalls: string[] = [];
  apiReply: (command: string) => Promise<string> = async () => '+OK';
  onSendEvent: ((event: FsEvent) => void) | null = null;

  async api(command: string): Promise<string> {
    this.apiCalls.push(command);
    return this.apiReply(command);
  }

  async sendEvent(event: FsEvent): Promise<void> {
    this.sent.push(event);
    this.onSendEvent?.(event);
  }
}

/** A NATS KV bucket in memory; watchers see every change after they start, like KV watch with updatesOnly. */
export class MemoryStateStore implements StateStore {
  readonly data = new Map<string, string>();
  private readonly watchers = new Set<(key: string, value: string | null) => void>();
  puts = 0;
  deletes = 0;

  async put(key: string, value: string): Promise<void> {
    this.puts++;
    this.data.set(key, value);
    for (const w of this.watchers) w(key, value);
  }

  async delete(key: string): Promise<void> {
    this.deletes++;
    this.data.delete(key);
    for (const w of this.watchers) w(key, null);
  }

  async entries(): Promise<Map<string, string>> {
    return new Map(this.data);
  }

  async watch(onChange: (key: string, value: string | null) => void): Promise<() => Promise<void>> {
    this.watchers.add(onChange);
    return async () => {
      this.watchers.delete(onChange);
    };
  }
}

export interface FakeContext extends ConsumerContext {
  events: MemoryEventStream;
  local: RecordingLocalNode;
  buckets: Map<string, MemoryStateStore>;
}

export const NODE_A: NodeConfig = { name: 'fs-a', hostname: 'node-a', ipv4: '10.99.0.1', cluster: 'lab' };
export const NODE_B: NodeConfig = { name: 'fs-b', hostname: 'node-b', ipv4: '10.99.0.2', cluster: 'lab' };

/** A ConsumerContext with in-memory parts; pass `buckets` to share KV between several fake nodes. */
export function fakeContext(node: NodeConfig, options: { buckets?: Map<string, MemoryStateStore>; withState?: boolean } = {}): FakeContext {
  const buckets = options.buckets ?? new Map<string, MemoryStateStore>();
  const context: FakeContext = {
    node,
    events: new MemoryEventStream(),
    local: new RecordingLocalNode(),
    logger: silentLogger(),
    metrics: new Metrics(),
    buckets,
  };
  if (options.withState ?? true) {
    context.openState = async (bucket: string) => {
      let store = buckets.get(bucket);
      if (!store) {
        store = new MemoryStateStore();
        buckets.set(bucket, store);
      }
      return store;
    };
  }
  return context;
}

/** Let queued promise callbacks (async sendEvent, KV writes) run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export { Transport };
