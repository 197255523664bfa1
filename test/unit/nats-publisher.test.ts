import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { NatsClient } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { natsTestConfig, testEvent, testNode } from '../support/nats-server.js';
import { closedPort } from '../support/ports.js';

const logger = silentLogger();

async function dropped(metrics: Metrics, cause: string): Promise<number> {
  return (await metrics.drops.get()).values.find((v) => v.labels.component === 'nats_publisher' && v.labels.cause === cause)?.value ?? 0;
}

describe('NatsPublisher without a reachable server', () => {
  it('starts anyway, buffers within the event and byte limits, drops the oldest (counted), and bounds stop()', async () => {
    // Nothing listens on this port: the bridge must not wait for NATS.
    const url = `nats://127.0.0.1:${await closedPort()}`;
    const config = natsTestConfig([url], { buffer: { maxEvents: 100, maxBytes: 1024 * 1024 } });
    const client = new NatsClient(config, { logger });
    const metrics = new Metrics();
    const publisher = new NatsPublisher(config, { client, node: testNode('fs-a'), metrics, logger, stopTimeoutMs: 200 });
    const started = Date.now();
    await client.start(100);
    await publisher.start();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(client.connected).toBe(false);

    // deliver() is synchronous: the loop finishing at all shows it never waited for NATS.
    for (let i = 1; i <= 1_000; i++) publisher.deliver({ event: testEvent('uuid-u', i), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
    expect(publisher.pending).toBe(100);
    expect(await dropped(metrics, 'buffer_full')).toBe(900);

    // A byte limit smaller than the events' total holds fewer events.
    const small = natsTestConfig([url], { buffer: { maxEvents: 1_000, maxBytes: 2_000 } });
    const metrics2 = new Metrics();
    const bytePublisher = new NatsPublisher(small, { client, node: testNode('fs-a'), metrics: metrics2, logger, stopTimeoutMs: 50 });
    for (let i = 1; i <= 100; i++) bytePublisher.deliver({ event: testEvent('uuid-b', i), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
    expect(bytePublisher.pendingBytes).toBeLessThanOrEqual(2_000);
    expect(bytePublisher.pending).toBeGreaterThan(0);
    expect(bytePublisher.pending + (await dropped(metrics2, 'buffer_full'))).toBe(100);

    const stopStarted = Date.now();
    await publisher.stop();
    await bytePublisher.stop();
    expect(Date.now() - stopStarted).toBeLessThan(2_000);
    expect(await dropped(metrics, 'shutdown')).toBe(100);
    // After stop, deliver still never throws; the event is counted.
    publisher.deliver({ event: testEvent('uuid-u', 2_000), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
    expect(await dropped(metrics, 'stopped')).toBe(1);
    await client.close();
  });
});
