import { Command, Option } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { renderConfigReference } from '../config/reference.js';
import { hostProblems } from './preflight.js';
import { registerConsumer } from './commands/consumer.js';
import { registerDecode } from './commands/decode.js';
import { registerEncode } from './commands/encode.js';
import { registerListen } from './commands/listen.js';
import { registerNatsAdmin } from './commands/nats-admin.js';
import { registerTail } from './commands/tail.js';
import { registerPeers } from './commands/peers.js';
import { registerReplay } from './commands/replay.js';
import { registerRun } from './commands/run.js';

/**
 * Thin by design: parse arguments, load config, call the library. Each subcommand
 * lives in ./commands and registers itself here.
 */
/**
 * `validate`: every check `run` makes before it opens a socket (loadConfigFile), and
 * what this host lacks for it as warnings (hostProblems). Throws ConfigError when invalid.
 */
export function validateConfig(file: string): { stdout: string; stderr: string } {
  const { config, flavour, warnings } = loadConfigFile(file);
  let stderr = warnings.map((warning) => `warning: ${warning}\n`).join('');
  for (const problem of hostProblems(config)) stderr += `warning: on this host, run would fail: ${problem.code}: ${problem.message}\n`;
  const transports = [config.multicast.enabled && 'multicast', config.nats.enabled && 'nats'].filter(Boolean).join(' + ') || 'none';
  return { stdout: `${file}: valid ${flavour}.conf (node ${config.node.name}, transports ${transports})\n`, stderr };
}

export function buildProgram(): Command {
  const program = new Command()
    .name('fs-event-bridge')
    .description('Event bridge for FreeSWITCH clusters: ESL to native multicast and NATS, and back')
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
    .showHelpAfterError();

  program
    .command('validate')
    .description('check a config file (event_bridge.conf.xml or a legacy event_multicast.conf.xml); exit 0 when valid')
    .requiredOption('-c, --config <file>', 'config file')
    .action((options: { config: string }) => {
      const report = validateConfig(options.config);
      process.stderr.write(report.stderr);
      process.stdout.write(report.stdout);
    });

  program
    .command('config-reference')
    .description('print the configuration reference (docs/config-reference.md)')
    .action(() => {
      process.stdout.write(renderConfigReference());
    });

  registerRun(program);
  registerDecode(program);
  registerEncode(program);
  registerListen(program);
  registerConsumer(program);
  registerPeers(program);
  registerTail(program);
  registerReplay(program);
  registerNatsAdmin(program);
  return program;
}
