import { InvalidArgumentError, type Command } from 'commander';
import type { NatsConfig } from '../../config/types.js';
import { loadConfigFile } from '../../config/load.js';
import type { FsEvent } from '../../event/event.js';
import { createLogger, type Logger } from '../../observability/logger.js';
import { connectNats } from '../../transports/nats/connection.js';
import { subscribeLive } from '../../transports/nats/subscriber.js';
import { SubjectMapper } from '../../transports/nats/subjects.js';

/** What tail and replay need to reach the cluster's events. */
export interface NatsTarget {
  nats: Pick<NatsConfig, 'servers' | 'auth' | 'tls' | 'subjectPrefix'> & { stream: { name: string } };
  cluster: string;
}

/** Options every NATS reading command takes. */
export interface NatsReadOptions {
  server?: string[];
  config?: string;
  cluster?: string;
  prefix?: string;
  stream?: string;
  node?: string;
  event?: string;
  match?: string[];
}

/** Builds the target from the parsed options; the default reads --config when given, then applies flags. */
export type NatsTargetResolver = (options: NatsReadOptions) => NatsTarget | Promise<NatsTarget>;

export const defaultNatsTarget: NatsTargetResolver = (options) => {
  const base: NatsTarget = options.config
    ? (() => {
        const { config } = loadConfigFile(options.config);
        return { nats: config.nats, cluster: config.node.cluster };
      })()
    : { nats: { servers: ['nats://127.0.0.1:4222'], auth: {}, tls: null, subjectPrefix: 'fs', stream: { name: 'FS_EVENTS' } }, cluster: 'default' };
  return {
    nats: {
      ...base.nats,
      servers: options.server && options.server.length > 0 ? options.server : base.nats.servers,
      subjectPrefix: options.prefix ?? base.nats.subjectPrefix,
      stream: { name: options.stream ?? base.nats.stream.name },
    },
    cluster: options.cluster ?? base.cluster,
  };
};

/** `--match header=value` pairs; an event passes when every named header has that value. */
export function parseMatches(pairs: readonly string[] = []): (event: FsEvent) => boolean {
  const conditions = pairs.map((pair) => {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`--match expects header=value, got ${JSON.stringify(pair)}`);
    return [pair.slice(0, eq), pair.slice(eq + 1)] as const;
  });
  return (event) => conditions.every(([name, value]) => event.get(name) === value);
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Options shared by tail and replay. */
export function addNatsReadOptions(command: Command): Command {
  return command
    .option('--server <url>', 'NATS server URL (repeatable; default from --config or nats://127.0.0.1:4222)', collect)
    .option('--cluster <name>', 'cluster name in the subject (default from --config or "default")')
    .option('--prefix <prefix>', 'subject prefix (default from --config or "fs")')
    .option('--node <name>', 'only events fired on this node')
    .option('--event <name>', 'only this event: a name (PRESENCE_IN), CUSTOM, or a subclass (sofia::register)')
    .option('--match <header=value>', 'only events whose header has this value (repeatable, all must match)', collect);
}

/**
 * Print live events, one FreeSWITCH `event json` line each, until the returned stop
 * function is called. Filters on node and event run in the server (subject), --match here.
 */
export async function runTail(options: NatsReadOptions, write: (line: string) => void, logger: Logger, resolve: NatsTargetResolver = defaultNatsTarget): Promise<() => Promise<void>> {
  const target = await resolve(options);
  const matches = parseMatches(options.match);
  const nc = await connectNats(target.nats, { logger, name: 'fs-event-bridge tail' });
  const subjects = new SubjectMapper(target.nats.subjectPrefix, target.cluster);
  subscribeLive(
    nc,
    subjects,
    { node: options.node, event: options.event },
    (item) => {
      if (matches(item.event)) write(item.json + '\n');
    },
    (err, subject) => logger.warn({ err, subject }, 'skipped a message that is not an event'),
  );
  await nc.flush();
  return async () => {
    await nc.drain();
  };
}

export function registerTail(program: Command, resolve: NatsTargetResolver = defaultNatsTarget): Command {
  return addNatsReadOptions(program.command('tail').description('print live events from NATS, one JSON line each (FreeSWITCH `event json` shape)'))
    .option('-c, --config <file>', 'bridge config file (NATS servers, auth, prefix, cluster)')
    .action(async (options: NatsReadOptions) => {
      const stop = await runTail(options, (line) => process.stdout.write(line), createLogger('warn', { destination: 2 }), resolve);
      await new Promise<void>((done) => process.once('SIGINT', done).once('SIGTERM', done));
      await stop();
    });
}
