import { Command, Option } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { renderConfigReference } from '../config/reference.js';
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
      const { config, flavour, warnings } = loadConfigFile(options.config);
      for (const warning of warnings) process.stderr.write(`warning: ${warning}\n`);
      const transports = [config.multicast.enabled && 'multicast', config.nats.enabled && 'nats'].filter(Boolean).join(' + ') || 'none';
      process.stdout.write(`${options.config}: valid ${flavour}.conf (node ${config.node.name}, transports ${transports})\n`);
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
