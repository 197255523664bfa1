import { afterAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { connectNats, NatsClient } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { NatsSubscriber, readStored } from '../../bridge/transports/nats/subscriber.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import type { BridgeEvent } from '../../bridge/pipeline/types.js';
import { natsTestConfig, startNatsCluster, testEvent, testNode, type NatsCluster } from '../support/nats-server.js';
import { sleep, until } from '../support/wait.js';

const logger = silentLogger();

describe('NATS 3-server cluster on loopback', () => {
  let cluster: NatsCluster | undefined;
  afterAll(async () => {
    await cluster?.dispose();
  });

  it('loses no acknowledged event when the server the publisher is connected to is killed', async () => {
    cluster = await startNatsCluster(3);
    const config = natsTestConfig(cluster.urls, { stream: { ...natsTestConfig([]).stream, name: 'CLUSTER', replicas: 3 } });
    // Both start on the first server, so killing it fails over the publisher and the subscriber.
    const clientA = new NatsClient(config, { logger, inOrder: true });
    const clientB = new NatsClient({ ...config, servers: [cluster.urls[1], cluster.urls[2], cluster.urls[0]] }, { logger, inOrder: true });
    const publisher = new NatsPublisher(config, { client: clientA, node: testNode('fs-a'), metrics: new Metrics(), logger });
    const subscriber = new NatsSubscriber(config, { client: clientB, node: testNode('fs-b'), metrics: new Metrics(), logger });
    const received: BridgeEvent[] = [];
    try {
      await publisher.start();
      let seq = 0;
      const deliver = () => publisher.deliver({ event: testEvent('uuid-c', ++seq), origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
      // The stream is created once JetStream elected its meta leader.
      deliver();
      await until(() => publisher.pending === 0, 20_000);
      await subscriber.start((item) => {
        received.push(item);
        item.delivery?.ack();
      });

      let stop = false;
      const traffic = (async () => {
        while (!stop) {
          deliver();
          await sleep(5);
        }
      })();
      await sleep(500);
      const connectedTo = clientA.connection!.getServer();
      const victim = cluster.servers.find((s) => connectedTo.endsWith(`:${s.port}`))!;
      expect(victim).toBeDefined();
      const beforeKill = seq;
      await victim.kill();
      await sleep(3_000);
      stop = true;
      await traffic;
      await until(() => publisher.pending === 0, 30_000);
      expect(clientA.connection!.getServer()).not.toBe(connectedTo);

      // Every event was acknowledged (nothing pending, nothing dropped) and all are in the stream, in order.
      const survivor = cluster.servers.find((s) => s !== victim)!;
      const nc = await connectNats({ servers: [survivor.url], auth: {}, tls: null }, { logger });
      try {
        // Right after the kill the survivors may still be electing a JetStream meta leader.
        const info = await until(async () => (await jetstreamManager(nc)).streams.info('CLUSTER'), 30_000);
        expect(info.state.messages).toBe(seq);
        const stored: number[] = [];
        for await (const item of readStored(nc, 'CLUSTER', new SubjectMapper('fs', 'test'), { since: new Date(0) })) stored.push(item.event.sequence!);
        expect(stored).toEqual(Array.from({ length: seq }, (_, i) => i + 1));
      } finally {
        await nc.close();
      }
      expect(seq - beforeKill).toBeGreaterThan(100);

      // The subscriber (connected anywhere) receives everything after its start exactly once, in order.
      await until(() => received.length >= seq - 1, 30_000);
      const keys = received.map((r) => r.event.sequence!);
      expect(new Set(keys).size).toBe(keys.length);
      for (let i = 1; i < keys.length; i++) expect(keys[i]).toBeGreaterThan(keys[i - 1]);
      expect(keys.at(-1)).toBe(seq);

      // The killed member comes back on its port and store.
      await victim.start();
      expect(victim.running).toBe(true);
    } finally {
      await publisher.stop();
      await subscriber.stop();
      await clientA.close();
      await clientB.close();
    }
  }, 55_000);
});
