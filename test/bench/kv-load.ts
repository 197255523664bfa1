import type { StateStore } from '../../bridge/consumer.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';
import { openStateStore } from '../../bridge/transports/nats/kv.js';
import { startNatsServer } from '../support/nats-server.js';
import type { BenchCase } from './types.js';

/** Writes `count` registration-like entries, many puts in flight at once (a sequential await per put would take minutes). */
export async function fillRegistrations(store: StateStore, count: number): Promise<void> {
  const window = 2_000;
  for (let start = 0; start < count; start += window) {
    const puts: Promise<void>[] = [];
    for (let i = start; i < Math.min(start + window, count); i++) {
      puts.push(store.put(`user${i}@example.com`, `sip:user${i}@10.0.0.${i % 10}:5060;transport=udp`));
    }
    await Promise.all(puts);
  }
}

/**
 * A late joiner loads 100k registrations from KV (target < 2 s). Baseline, measured
 * in the same run: the naive way, keys() followed by one get() per key.
 */
export const kvLoad: BenchCase = async ({ quick }) => {
  const count = quick ? 20_000 : 100_000;
  const server = await startNatsServer();
  const logger = silentLogger();
  const writer = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
  const reader = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger });
  try {
    await fillRegistrations(await openStateStore(writer, 'bench_location'), count);
    const store = await openStateStore(reader, 'bench_location');
    const started = performance.now();
    const entries = await store.entries();
    const loadMs = performance.now() - started;
    if (entries.size !== count) throw new Error(`loaded ${entries.size} of ${count} entries`);

    const { Kvm } = await import('@nats-io/kv');
    const kv = await new Kvm(reader).open('bench_location');
    const naiveStarted = performance.now();
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    // Gets in parallel windows, the best case for the naive approach.
    for (let i = 0; i < keys.length; i += 1_000) await Promise.all(keys.slice(i, i + 1_000).map((k) => kv.get(k)));
    const naiveMs = performance.now() - naiveStarted;

    const target = 2_000 * (count / 100_000);
    return [
      {
        case: `kv_late_joiner_load_${count / 1000}k`,
        value: Math.round(loadMs),
        unit: 'ms',
        baseline: 'KV keys() + get() per key (1000 in parallel)',
        baseline_value: Math.round(naiveMs),
        ratio: naiveMs / loadMs,
        target,
        met: loadMs < target,
        notes: `lower is better; ratio = baseline/value. nats-server 2.9.10 on loopback, one ordered consumer with last-per-subject delivery; ${count} keys`,
      },
    ];
  } finally {
    await writer.close();
    await reader.close();
    await server.dispose();
  }
};
