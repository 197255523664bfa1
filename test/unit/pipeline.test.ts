import { describe, expect, it } from 'vitest';
import { FsEvent } from '../../bridge/event/event.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { DedupCache, SequenceWindow } from '../../bridge/pipeline/dedup.js';
import { toMulticastEvent } from '../../bridge/pipeline/inject.js';
import { Pipeline } from '../../bridge/pipeline/pipeline.js';
import { LOOP_GUARD_HEADER, type BridgeEvent, type Sink } from '../../bridge/pipeline/types.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { silentLogger } from '../../bridge/observability/logger.js';

function recordingSink(name: string, bindings: Bindings): Sink & { got: BridgeEvent[] } {
  const got: BridgeEvent[] = [];
  return { name, got, deliver: (item) => bindings.matches(item.event) && got.push(item), start: async () => {}, stop: async () => {} };
}

function event(name: string, seq: number, uuid = 'u-1', subclass?: string): FsEvent {
  const e = FsEvent.create(name, subclass);
  e.add('Core-UUID', uuid).add('Event-Sequence', String(seq));
  return e;
}

async function count(counter: Metrics['drops'] | Metrics['filtered'], cause: string): Promise<number> {
  const m = await counter.get();
  return m.values.find((v) => v.labels.cause === cause)?.value ?? 0;
}

/** Discarded by design: in fsb_filtered_total, never in fsb_drops_total (which means loss). */
async function filteredOnly(metrics: Metrics, cause: string): Promise<number> {
  expect(await count(metrics.drops, cause)).toBe(0);
  return count(metrics.filtered, cause);
}

function setup(dedup = { maxEntries: 1000, ttlMs: 60_000 }) {
  const metrics = new Metrics();
  const multicast = recordingSink('multicast', Bindings.parse('PRESENCE_IN CUSTOM sofia::register'));
  const nats = recordingSink('nats', Bindings.parse('ALL'));
  const injected: BridgeEvent[] = [];
  const seen: BridgeEvent[] = [];
  const pipeline = new Pipeline({
    nodeName: 'fs-a',
    sinks: [multicast, nats],
    dedup,
    inject: (item) => injected.push(item),
    metrics,
    logger: silentLogger(),
  });
  pipeline.subscribe((item) => seen.push(item));
  return { pipeline, metrics, multicast, nats, injected, seen };
}

describe('pipeline', () => {
  it('routes local events to every sink, and to consumers', () => {
    const { pipeline, multicast, nats, seen } = setup();
    pipeline.local(event('PRESENCE_IN', 1));
    pipeline.local(event('CUSTOM', 2, 'u-1', 'sofia::register'));
    pipeline.local(event('CUSTOM', 3, 'u-1', 'sofia::pre_register'));
    pipeline.local(event('CHANNEL_CREATE', 4));
    expect(multicast.got.map((i) => i.event.sequence)).toEqual([1, 2]);
    expect(nats.got.map((i) => i.event.sequence)).toEqual([1, 2, 3, 4]);
    expect(seen.map((i) => i.origin)).toEqual(seen.map(() => expect.objectContaining({ transport: 'esl', node: 'fs-a' })));
  });

  it('never republishes what the bridge injected (loop guard) and counts it', async () => {
    const { pipeline, metrics, multicast, nats, seen } = setup();
    const guarded = event('PRESENCE_IN', 9).add(LOOP_GUARD_HEADER, 'fs-a');
    pipeline.local(guarded);
    expect(multicast.got).toHaveLength(0);
    expect(nats.got).toHaveLength(0);
    expect(seen).toHaveLength(0);
    expect(await filteredOnly(metrics, 'loop_guard')).toBe(1);
  });

  it('injects a remote event once when it arrives by multicast and by NATS, counting the duplicate', async () => {
    const { pipeline, metrics, injected, seen, multicast } = setup();
    const e = event('PRESENCE_IN', 5, 'remote-uuid');
    pipeline.remote({ event: e, origin: { transport: 'multicast', node: 'fs-b', receivedAt: 1 } });
    pipeline.remote({ event: e.clone(), origin: { transport: 'nats', node: 'fs-b', receivedAt: 2 } });
    expect(injected).toHaveLength(1);
    expect(seen).toHaveLength(1);
    expect(multicast.got).toHaveLength(0); // remote events are never re-sent
    expect(await filteredOnly(metrics, 'duplicate_nats')).toBe(1);
  });

  it('injects once a copy that arrives after the key cache forgot its twin (a transport lagging more than ttl / max-entries)', async () => {
    // The soak: NATS copies minutes behind their multicast twins were injected again.
    const { pipeline, metrics, injected } = setup({ maxEntries: 100, ttlMs: 60_000 });
    const late = event('CUSTOM', 5, 'run-b', 'fsb::soak');
    pipeline.remote({ event: late, origin: { transport: 'multicast', node: 'fs-b', receivedAt: 1 } });
    for (let seq = 6; seq < 500; seq++) pipeline.remote({ event: event('CUSTOM', seq, 'run-b', 'fsb::soak'), origin: { transport: 'multicast', node: 'fs-b', receivedAt: 1 } });
    pipeline.remote({ event: late.clone(), origin: { transport: 'nats', node: 'fs-b', receivedAt: 2 } });
    expect(injected).toHaveLength(495);
    expect(await filteredOnly(metrics, 'duplicate_nats')).toBe(1);
    // Another run of the same node (FreeSWITCH restarted: new Core-UUID), same sequence: a new event.
    pipeline.remote({ event: event('CUSTOM', 5, 'run-b2', 'fsb::soak'), origin: { transport: 'nats', node: 'fs-b', receivedAt: 3 } });
    expect(injected).toHaveLength(496);
  });

  it('recognises journal keys by their run and sequence after the key cache forgot them (restart after kill -9)', async () => {
    const { pipeline, metrics, injected } = setup({ maxEntries: 100, ttlMs: 60_000 });
    pipeline.preload(['4:fs-b:run-b:7', 'sha256:not-a-sequence', '4:fs-b:run-b:x', 'garbage']);
    for (let seq = 8; seq < 300; seq++) pipeline.remote({ event: event('CUSTOM', seq, 'run-b', 'fsb::soak'), origin: { transport: 'multicast', node: 'fs-b', receivedAt: 1 } });
    pipeline.remote({ event: event('CUSTOM', 7, 'run-b', 'fsb::soak'), origin: { transport: 'nats', node: 'fs-b', receivedAt: 2 } });
    expect(injected).toHaveLength(292);
    expect(await filteredOnly(metrics, 'duplicate_nats')).toBe(1);
  });

  it("a node reusing another node's Core-UUID and Event-Sequence cannot make the real event a duplicate", async () => {
    const { pipeline, metrics, injected } = setup();
    // fs-c copies fs-b's Core-UUID into an event published under its own name, ahead of fs-b's real event.
    pipeline.remote({ event: event('CUSTOM', 42, 'uuid-of-b', 'sofia::unregister'), origin: { transport: 'nats', node: 'fs-c', receivedAt: 1 } });
    pipeline.remote({ event: event('CUSTOM', 42, 'uuid-of-b', 'sofia::register'), origin: { transport: 'nats', node: 'fs-b', receivedAt: 2 } });
    expect(injected.map((i) => [i.origin.node, i.event.subclass])).toEqual([
      ['fs-c', 'sofia::unregister'],
      ['fs-b', 'sofia::register'],
    ]);
    expect(await count(metrics.filtered, 'duplicate_nats')).toBe(0);
  });

  it('ignores its own events coming back from a transport', async () => {
    const { pipeline, metrics, injected } = setup();
    pipeline.remote({ event: event('HEARTBEAT', 1), origin: { transport: 'multicast', node: 'fs-a', receivedAt: 1 } });
    expect(injected).toHaveLength(0);
    expect(await filteredOnly(metrics, 'own_event')).toBe(1);
  });

  it('treats a multicast::event fired by a legacy module on this node as the remote original', () => {
    const { pipeline, injected, nats } = setup();
    const original = event('CUSTOM', 7, 'legacy-uuid', 'sofia::register').add('Multicast-Sender', 'fs-legacy');
    const legacy = toMulticastEvent(original, 'fs-legacy', 'x');
    legacy.delete(LOOP_GUARD_HEADER); // the legacy module does not add our guard
    pipeline.local(legacy);
    expect(injected).toHaveLength(1);
    expect(injected[0].origin.node).toBe('fs-legacy');
    expect(injected[0].event.subclass).toBe('sofia::register');
    expect(nats.got).toHaveLength(0);
  });

  it('a consumer that throws does not stop the others and is counted', async () => {
    const { pipeline, metrics, seen } = setup();
    pipeline.subscribe(() => {
      throw new Error('boom');
    });
    pipeline.local(event('PRESENCE_IN', 1));
    expect(seen).toHaveLength(1);
    expect(await count(metrics.drops, 'consumer_error')).toBe(1);
  });
});

describe('dedup cache', () => {
  it('is bounded in entries and forgets keys after the ttl', () => {
    let now = 0;
    const cache = new DedupCache(3, 100, () => now);
    expect(cache.firstSighting('a')).toBe(true);
    expect(cache.firstSighting('a')).toBe(false);
    cache.firstSighting('b');
    cache.firstSighting('c');
    cache.firstSighting('d');
    expect(cache.size).toBe(3);
    expect(cache.firstSighting('a')).toBe(true); // evicted by size
    now = 500;
    expect(cache.firstSighting('b')).toBe(true); // expired
    expect(cache.size).toBe(1);
  });
});

describe('sequence window', () => {
  it('remembers each number of a run once, out of order, across growth and slides, and forgets runs beyond its bound', () => {
    const window = new SequenceWindow();
    expect(window.record('a', 100)).toBe(false);
    expect(window.record('a', 100)).toBe(true);
    // Older than the first number seen, within the room kept below it.
    expect(window.record('a', 90)).toBe(false);
    expect(window.record('a', 90)).toBe(true);
    // Far ahead: the bitmap grows, what it held stays.
    expect(window.record('a', 500_000)).toBe(false);
    expect(window.record('a', 100)).toBe(true);
    expect(window.record('a', 500_000)).toBe(true);
    // Beyond the window: it slides; the newest numbers stay known, the oldest become unknown (false, the key cache decides).
    const far = 100 + SequenceWindow.WINDOW_BITS * 2;
    expect(window.record('a', far)).toBe(false);
    expect(window.record('a', far)).toBe(true);
    expect(window.record('a', 100)).toBe(false);
    expect(window.record('a', far - 1000)).toBe(false);
    expect(window.record('a', far - 1000)).toBe(true);
    // Hostile numbers neither throw nor count.
    expect(window.record('a', Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(window.record('a', -1)).toBe(false);
    expect(window.record('a', Number.NaN)).toBe(false);
    // Bounded in runs: the least recently seen is forgotten first.
    for (let run = 0; run < SequenceWindow.MAX_RUNS; run++) window.record(`r${run}`, 1);
    expect(window.size).toBe(SequenceWindow.MAX_RUNS);
    expect(window.record('a', Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(window.record('r1', 1)).toBe(true);
  });
});

describe('pipeline and presence scope', () => {
  it("keeps mod_sofia's answer to one phone's probe (PRESENCE_IN with call-id) on its node: neither published nor injected", async () => {
    const { pipeline, metrics, multicast, nats, injected, seen } = setup();
    const answer = event('PRESENCE_IN', 1).add('from', '1000@127.0.0.1').add('call-id', 'sub-1@10.99.0.3').add('status', 'Registered(UDP)');
    pipeline.local(answer);
    expect(multicast.got).toHaveLength(0);
    expect(nats.got).toHaveLength(0);
    // Consumers still see it.
    expect(seen).toHaveLength(1);
    // A legacy node multicasts its own: not injected here either.
    pipeline.remote({ event: event('PRESENCE_IN', 7, 'u-legacy').add('call-id', 'sub-9'), origin: { transport: 'multicast', node: 'fs-legacy', receivedAt: 0 } });
    expect(injected).toHaveLength(0);
    expect(await filteredOnly(metrics, 'subscription_answer')).toBe(2);
    // A channel's PRESENCE_IN (no call-id) goes everywhere as before.
    pipeline.local(event('PRESENCE_IN', 2).add('Unique-ID', 'call-1'));
    pipeline.remote({ event: event('PRESENCE_IN', 8, 'u-legacy').add('Unique-ID', 'call-2'), origin: { transport: 'multicast', node: 'fs-legacy', receivedAt: 0 } });
    expect(multicast.got).toHaveLength(1);
    expect(injected).toHaveLength(1);
  });
});
