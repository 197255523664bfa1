import { InvalidArgumentError, type Command } from 'commander';
import { createLogger, type Logger } from '../../observability/logger.js';
import { connectNats } from '../../transports/nats/connection.js';
import { readStored } from '../../transports/nats/subscriber.js';
import { SubjectMapper } from '../../transports/nats/subjects.js';
import { addNatsReadOptions, defaultNatsTarget, parseMatches, type NatsReadOptions, type NatsTargetResolver } from './tail.js';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `10m`, `90s`, `2h`, `1d` (that long before `now`) or an ISO 8601 time. */
export function parseTimeArg(value: string, now = Date.now()): Date {
  const relative = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim());
  if (relative) return new Date(now - Number(relative[1]) * UNIT_MS[relative[2] as keyof typeof UNIT_MS]);
  // Date.parse accepts bare numbers and odd formats; insist on something ISO-like.
  const time = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(time)) throw new InvalidArgumentError(`expected a duration like 10m, 90s, 2h, 1d or an ISO time, got ${JSON.stringify(value)}`);
  return new Date(time);
}

export interface ReplayOptions extends NatsReadOptions {
  since: Date;
  until?: Date;
}

/** Print stored events in the window, oldest first; resolves with how many were printed. */
export async function runReplay(options: ReplayOptions, write: (line: string) => void, logger: Logger, resolve: NatsTargetResolver = defaultNatsTarget): Promise<number> {
  const target = await resolve(options);
  const matches = parseMatches(options.match);
  const nc = await connectNats(target.nats, { logger, name: 'fs-event-bridge replay' });
  let printed = 0;
  try {
    const subjects = new SubjectMapper(target.nats.subjectPrefix, target.cluster);
    for await (const item of readStored(nc, target.nats.stream.name, subjects, options)) {
      if (!matches(item.event)) continue;
      write(item.json + '\n');
      printed++;
    }
  } finally {
    await nc.close();
  }
  return printed;
}

export function registerReplay(program: Command, resolve: NatsTargetResolver = defaultNatsTarget): Command {
  return addNatsReadOptions(program.command('replay').description('print events stored in JetStream for a time window, oldest first, then exit'))
    .requiredOption('--since <time>', 'window start: 10m, 2h, 1d ago or an ISO time', (v) => parseTimeArg(v))
    .option('--until <time>', 'window end (default: the last stored event when the command started)', (v) => parseTimeArg(v))
    .option('--stream <name>', 'JetStream stream (default from --config or FS_EVENTS)')
    .option('-c, --config <file>', 'bridge config file (NATS servers, auth, prefix, cluster, stream)')
    .action(async (options: ReplayOptions) => {
      await runReplay(options, (line) => process.stdout.write(line), createLogger('warn', { destination: 2 }), resolve);
    });
}
