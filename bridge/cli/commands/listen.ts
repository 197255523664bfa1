import type { Command } from 'commander';
import { DatagramError } from '../../errors.js';
import { createLogger, type Logger } from '../../observability/logger.js';
import { decodeDatagram } from '../../transports/multicast/codec.js';
import { DEFAULT_RECEIVE_BUFFER_BYTES, MulticastSocket } from '../../transports/multicast/socket.js';
import { cliPsk } from './decode.js';

export interface ListenOptions {
  address: string;
  port: number;
  psk: Buffer | null;
  interface: string;
}

/**
 * Join the group and print every datagram as one JSON line (`from`, `mode`, `headers`,
 * `body`); refused datagrams as `{"from","error","reason"}` lines. Returns a stop function.
 */
export async function listen(options: ListenOptions, write: (line: string) => void, logger: Logger): Promise<() => Promise<void>> {
  const socket = new MulticastSocket(
    { group: options.address, port: options.port, bindAddress: '0.0.0.0', interface: options.interface, ttl: 1, loopback: false, receiveBufferBytes: DEFAULT_RECEIVE_BUFFER_BYTES },
    logger,
  );
  socket.setListener((datagram, from) => {
    const source = `${from.address}:${from.port}`;
    try {
      const { mode, event } = decodeDatagram(datagram, options.psk);
      write(JSON.stringify({ from: source, mode, headers: event.headers, body: event.body }) + '\n');
    } catch (error) {
      if (!(error instanceof DatagramError)) throw error;
      write(JSON.stringify({ from: source, error: error.message, reason: error.reason }) + '\n');
    }
  });
  await socket.acquire();
  return () => socket.release();
}

export function registerListen(program: Command): void {
  program
    .command('listen')
    .description('print every datagram on a multicast group as one JSON line (debugging a cluster)')
    .requiredOption('--address <group>', 'multicast group, e.g. 225.1.1.1')
    .requiredOption('--port <port>', 'UDP port', (value) => Number.parseInt(value, 10))
    .option('--psk <key>', 'pre-shared key')
    .option('--interface <address>', 'local interface address to join on', '')
    .action(async (options: { address: string; port: number; psk?: string; interface: string }) => {
      const psk = await cliPsk(options.psk);
      if (psk === 'relaunched') return;
      const stop = await listen({ address: options.address, port: options.port, psk, interface: options.interface }, (line) => process.stdout.write(line), createLogger('warn', { destination: 2 }));
      await new Promise<void>((resolve) => process.once('SIGINT', resolve).once('SIGTERM', resolve));
      await stop();
    });
}
