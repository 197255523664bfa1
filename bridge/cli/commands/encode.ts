import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { FsEvent, type Header } from '../../event/event.js';
import { SENDER_HEADER, encodeDatagram } from '../../transports/multicast/codec.js';
import { cliPsk } from './decode.js';

function isHeaderList(value: unknown): value is Header[] {
  return Array.isArray(value) && value.every((h) => Array.isArray(h) && h.length === 2 && typeof h[0] === 'string' && typeof h[1] === 'string');
}

export function registerEncode(program: Command): void {
  program
    .command('encode')
    .description('read {"headers":[[name,value],...],"body":...} (the decode output) and write one datagram')
    .requiredOption('--out <file>', 'where to write the datagram')
    .option('--in <file>', 'read the JSON from this file instead of stdin')
    .option('--psk <key>', 'encrypt with this pre-shared key')
    .option('--sender <name>', 'Multicast-Sender, when the JSON has no such header')
    .action(async (options: { out: string; in?: string; psk?: string; sender?: string }) => {
      const psk = await cliPsk(options.psk);
      if (psk === 'relaunched') return;
      const input = JSON.parse(readFileSync(options.in ?? 0, 'utf8')) as { headers?: unknown; body?: unknown };
      if (!isHeaderList(input.headers) || !(input.body === undefined || input.body === null || typeof input.body === 'string')) {
        throw new Error('input must be {"headers":[["Name","value"],...],"body":null|"..."}');
      }
      const event = new FsEvent(input.headers, input.body ?? null);
      const sender = event.get(SENDER_HEADER) ?? options.sender;
      if (sender === undefined) throw new Error(`no ${SENDER_HEADER} header in the input: pass --sender`);
      writeFileSync(options.out, encodeDatagram(event, sender, psk));
    });
}
