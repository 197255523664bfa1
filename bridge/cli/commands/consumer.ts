import type { Command } from 'commander';
import { boardUrl, guardedLocalNode } from '../../bridge.js';
import { loadConfigFile } from '../../config/load.js';
import { consumersHealth, type Consumer, type ConsumerContext } from '../../consumer.js';
import { ConfigError } from '../../errors.js';
import { createLogger } from '../../observability/logger.js';
import { Board } from '../../observability/board/board.js';
import { StatusServer } from '../../observability/http.js';
import { DropReporter, Metrics, registerStateGauges } from '../../observability/metrics.js';
import { PeerTracker } from '../../pipeline/peers.js';
import { Pipeline } from '../../pipeline/pipeline.js';
import { EslClient, EslState } from '../../sources/esl/client.js';
import { NatsClient } from '../../transports/nats/connection.js';
import { openStateStore } from '../../transports/nats/kv.js';
import { conflictingClaim } from '../../transports/nats/origin.js';
import { nodeInboxPrefix } from '../../transports/nats/permissions.js';
import { SubjectMapper } from '../../transports/nats/subjects.js';
import { subscribeLive } from '../../transports/nats/subscriber.js';
import { exitIfStopHangs } from './run.js';
import { createBlfConsumer, createLocationConsumer } from '../../../consumers/index.js';

/**
 * `fs-event-bridge consumer blf|location`: one consumer outside the bridge process,
 * fed from NATS (every node's events, this node's included, which the bridge
 * publishes) and acting on the local FreeSWITCH over its own ESL connection. Useful
 * where the bridge runs elsewhere, or to scale a consumer separately.
 */
export function registerConsumer(program: Command): void {
  program
    .command('consumer')
    .description('run one consumer standalone, reading events from NATS')
    .argument('<kind>', 'blf or location')
    .requiredOption('-c, --config <file>', 'event_bridge.conf.xml (its <nats>, <esl> and consumer sections are used)')
    .action(async (kind: string, options: { config: string }) => {
      const { config } = loadConfigFile(options.config);
      if (kind !== 'blf' && kind !== 'location') throw new ConfigError(options.config, '<consumer>', `unknown consumer ${JSON.stringify(kind)}; expected blf or location`);
      if (!config.nats.enabled) throw new ConfigError(options.config, 'enabled', 'a standalone consumer reads from NATS: enable <nats>');
      const logger = createLogger(program.opts<{ logLevel?: string }>().logLevel ?? config.logLevel);
      const metrics = new Metrics({ defaultMetrics: true });
      const node = config.node;
      const consumer: Consumer = kind === 'blf' ? createBlfConsumer(config.consumers.blf) : createLocationConsumer(config.consumers.location);

      const nats = new NatsClient(config.nats, { name: `fs-event-bridge consumer ${kind} ${node.name}`, logger, inboxPrefix: nodeInboxPrefix(config.nats.subjectPrefix, node.cluster, node.name) });
      await nats.start();
      const nc = await nats.ready();
      // The pipeline gives the same own-node, dedup and fan-out rules as inside the bridge; it has no sinks and injects nothing.
      const stream = new Pipeline({ nodeName: node.name, sinks: [], dedup: config.dedup, inject: () => undefined, metrics, logger });
      const peers = new PeerTracker((event, peer) => stream.publish({ event, origin: { transport: 'nats', node: peer, receivedAt: Date.now() } }), {
        timeoutMs: config.multicast.peerTimeoutMs,
      });
      const subjects = new SubjectMapper(config.nats.subjectPrefix, node.cluster);
      const drops = new DropReporter('nats_subscriber', metrics, logger);
      const subscription = subscribeLive(
        nc,
        subjects,
        {},
        (read) => {
          const receivedAt = Date.now();
          // Same origin rules as the bridge's subscriber (docs/security.md).
          if (read.node === '' || conflictingClaim(read.event, read.node, undefined) !== undefined) {
            drops.drop(read.node === '' ? 'no_origin' : 'origin_mismatch', { subject: read.subject });
            return;
          }
          if (read.node === node.name) {
            stream.local(read.event, receivedAt);
            return;
          }
          const item = { event: read.event, origin: { transport: 'nats' as const, node: read.node, receivedAt } };
          peers.observe(item);
          stream.remote(item);
        },
        (err, subject) => logger.warn({ subject, err: (err as Error).message }, 'unreadable event on NATS'),
      );

      // The ESL session only carries commands; its event stream is drained so replies never wait behind it.
      const esl = new EslClient(config.esl, { subscription: 'BACKGROUND_JOB', logger, metrics, nodeName: node.name });
      esl.start();
      void (async () => {
        for await (const _ of esl.events()) void _;
      })();

      const context: ConsumerContext = {
        node,
        events: stream,
        local: guardedLocalNode(esl, node.name),
        logger,
        metrics,
        openState: (bucket) => openStateStore(nc, bucket, { replicas: config.nats.stream.replicas, logger, metrics }),
      };
      try {
        await consumer.start(context);
      } catch (err) {
        subscription.unsubscribe();
        await esl.stop();
        await nats.close();
        throw err;
      }
      peers.start();

      // The same status server as the bridge's (metrics, health, peers, and the board when enabled).
      const status = () => ({ ...consumersHealth([consumer]), node: node.name, consumer: kind, esl: esl.state, nats: nats.connected ? 'connected' : 'disconnected' });
      registerStateGauges(metrics, { node, eslConnected: () => esl.state === EslState.Connected, natsConnected: () => nats.connected, peers: () => peers.list() });
      const board = config.metrics.board
        ? new Board({ node, role: `consumer ${kind}`, status, peers: () => peers.list(), events: stream, metrics, consumers: [consumer] }, config.metrics.board, logger)
        : null;
      const server = new StatusServer(metrics, { ready: () => nats.connected, status, peers: () => peers.list() }, board ? [board.route] : []);
      let listening: { address: string; port: number } | null = null;
      if (config.metrics.enabled) {
        const address = await server.listen(config.metrics.host, config.metrics.port);
        listening = { address: address.address, port: address.port };
        board?.start();
      }
      logger.info({ consumer: kind, node: node.name, status: listening, board: board && listening ? boardUrl(listening) : 'off' }, 'consumer started');

      const stop = async () => {
        // State writes retry through a NATS outage; do not let a dead NATS hold the process forever.
        exitIfStopHangs(logger, { consumer: kind });
        peers.stop();
        subscription.unsubscribe();
        await consumer.stop();
        await esl.stop();
        await nats.close();
        board?.stop();
        await server.close();
        logger.info({ consumer: kind }, 'consumer stopped');
      };
      process.once('SIGINT', () => void stop());
      process.once('SIGTERM', () => void stop());
    });
}
