import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load.js';
import { ConfigError } from '../../errors.js';
import { createLogger } from '../../observability/logger.js';
import { connectNats } from '../../transports/nats/connection.js';
import { renderAuthorization } from '../../transports/nats/permissions.js';
import { provisionNats } from '../../transports/nats/setup.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * The two steps of per-node NATS authorization (docs/security.md): print the server's
 * authorization block for the cluster's nodes, and create the stream and KV buckets
 * with an admin user, since a node's own user may not.
 */
export function registerNatsAdmin(program: Command): void {
  program
    .command('nats-permissions')
    .description("print a nats-server authorization block: one user per node, allowed to publish only under its own subjects, plus an admin user")
    .requiredOption('-c, --config <file>', "event_bridge.conf.xml (its prefix, cluster, stream, durable prefix and bucket names are used)")
    .option('--node <name>', "node name (switchname); repeat for every node of the cluster (default: the config's nats/peers)", collect)
    .action((options: { config: string; node?: string[] }) => {
      const { config } = loadConfigFile(options.config);
      const nodes = options.node ?? config.nats.peers;
      if (nodes.length === 0) throw new ConfigError(options.config, 'peers', 'no nodes: give --node for every node of the cluster, or list them in nats/peers');
      try {
        process.stdout.write(renderAuthorization(config.nats, config.node.cluster, nodes));
      } catch (err) {
        throw new ConfigError(options.config, '<nats>', (err as Error).message);
      }
    });

  program
    .command('nats-setup')
    .description("create or update the events stream and the KV buckets with the config's settings (run with an admin user: FSB_NATS_USER / FSB_NATS_PASS)")
    .requiredOption('-c, --config <file>', 'event_bridge.conf.xml')
    .action(async (options: { config: string }) => {
      const { config } = loadConfigFile(options.config);
      const logger = createLogger(program.opts<{ logLevel?: string }>().logLevel ?? 'warn');
      const nc = await connectNats(config.nats, { logger, name: 'fs-event-bridge nats-setup' });
      try {
        for (const line of await provisionNats(nc, config.nats, config.node.cluster, logger)) process.stdout.write(line + '\n');
      } finally {
        await nc.close();
      }
    });
}
