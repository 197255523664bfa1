import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { DatagramError } from '../../errors.js';
import type { Header } from '../../event/event.js';
import { decodeDatagram, type DatagramMode } from '../../transports/multicast/codec.js';
import { blowfishAvailable, relaunchWithLegacyProvider, requireBlowfish } from '../../transports/multicast/blowfish.js';

/** The JSON shape decode prints and encode reads (also the fixtures' .json). */
export interface DatagramJson {
  mode: DatagramMode;
  headers: Header[];
  body: string | null;
}

/** psk bytes for a CLI option; relaunches node with the legacy provider when Blowfish is missing. Resolves null with no psk, 'relaunched' when the child ran the command. */
export async function cliPsk(psk: string | undefined): Promise<Buffer | null | 'relaunched'> {
  if (psk === undefined) return null;
  if (!blowfishAvailable() && (await relaunchWithLegacyProvider())) return 'relaunched';
  requireBlowfish();
  return Buffer.from(psk, 'utf8');
}

export function registerDecode(program: Command): void {
  program
    .command('decode')
    .description('decode one mod_event_multicast datagram file and print it as JSON')
    .argument('<file>', 'raw UDP payload')
    .option('--psk <key>', 'pre-shared key of an encrypted datagram')
    .action(async (file: string, options: { psk?: string }) => {
      const psk = await cliPsk(options.psk);
      if (psk === 'relaunched') return;
      try {
        const { mode, event } = decodeDatagram(readFileSync(file), psk);
        const json: DatagramJson = { mode, headers: event.headers, body: event.body };
        process.stdout.write(JSON.stringify(json) + '\n');
      } catch (error) {
        if (!(error instanceof DatagramError)) throw error;
        process.stderr.write(`${file}: invalid datagram (${error.reason}): ${error.message}\n`);
        process.exitCode = 1;
      }
    });
}
