import type { Command } from 'commander';
import { Bridge } from '../../bridge.js';
import { loadConfigFile } from '../../config/load.js';
import type { BridgeConfig } from '../../config/types.js';
import type { Consumer } from '../../consumer.js';
import { createLogger, type Logger } from '../../observability/logger.js';
import { hostProblems } from '../preflight.js';
import { createBlfConsumer, createLocationConsumer } from '../../../consumers/index.js';

/** The consumers a config enables, built with the public factories. */
export function consumersFor(config: BridgeConfig): Consumer[] {
  const consumers: Consumer[] = [];
  if (config.consumers.blf.enabled) consumers.push(createBlfConsumer(config.consumers.blf));
  if (config.consumers.location.enabled) consumers.push(createLocationConsumer(config.consumers.location));
  return consumers;
}

/** A graceful stop that takes longer exits anyway (config/systemd's TimeoutStopSec is above it). */
export const GRACEFUL_STOP_LIMIT_MS = 15_000;

/** Exit with code 1 if a graceful stop is still running after GRACEFUL_STOP_LIMIT_MS (a dead NATS or FreeSWITCH must not hold the process). */
export function exitIfStopHangs(log: Logger, context: Record<string, unknown> = {}): void {
  const force = setTimeout(() => {
    log.error(context, `graceful stop took over ${GRACEFUL_STOP_LIMIT_MS / 1000} s; exiting`);
    process.exit(1);
  }, GRACEFUL_STOP_LIMIT_MS);
  force.unref();
}

/**
 * Run until SIGINT/SIGTERM (graceful: stop reading ESL, flush sinks and consumers,
 * close). SIGHUP re-reads the file and applies bindings, psk and TTL without
 * closing the multicast socket.
 */
export async function runBridge(file: string, logLevel: string | undefined, logger?: Logger): Promise<Bridge> {
  const { config, warnings } = loadConfigFile(file);
  const [hostProblem] = hostProblems(config);
  if (hostProblem) throw hostProblem;
  const log = logger ?? createLogger(logLevel ?? config.logLevel);
  for (const warning of warnings) log.warn(warning);
  const bridge = new Bridge(config, { logger: log, consumers: consumersFor(config) });
  await bridge.start();

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    exitIfStopHangs(log);
    bridge.stop().then(
      () => {
        log.flush?.();
        process.exitCode = 0;
      },
      (err: Error) => {
        log.error({ err }, 'stop failed');
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => {
    try {
      const next = loadConfigFile(file);
      for (const warning of next.warnings) log.warn(warning);
      bridge.reload(next.config);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'reload refused; keeping the running configuration');
    }
  });
  return bridge;
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run the bridge (graceful stop on SIGINT/SIGTERM, reload on SIGHUP)')
    .requiredOption('-c, --config <file>', 'event_bridge.conf.xml or a legacy event_multicast.conf.xml')
    .action(async (options: { config: string }) => {
      await runBridge(options.config, program.opts<{ logLevel?: string }>().logLevel);
    });
}
