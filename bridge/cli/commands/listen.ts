import type { Command } from 'commander';
import { parseMulticastKey } from '../../config/multicast-key.js';
import { ConfigError, DatagramError } from '../../errors.js';
import { createLogger, type Logger } from '../../observability/logger.js';
import { decodeDatagram, decodeSecureDatagram } from '../../transports/multicast/codec.js';
import { SecureOpener } from '../../transports/multicast/secure.js';
import { DEFAULT_RECEIVE_BUFFER_BYTES, MulticastSocket } from '../../transports/multicast/socket.js';
import { cliPsk } from './decode.js';

export interface ListenOptions {
  address: string;
  port: number;
  psk: Buffer | null;
  /** Secure mode: decodes secure datagrams (and refuses the others, as a secure bridge does). */
  secure?: SecureOpener | null;
  interface: string;
}

/**
 * The secure keys from the bridge's own variables, so a key never goes on a command line
 * (where `ps` shows it). Null when FSB_MULTICAST_SECURE_KEY is not set.
 */
export function secureOpenerFromEnv(env: NodeJS.ProcessEnv = process.env): SecureOpener | null {
  const key = env.FSB_MULTICAST_SECURE_KEY;
  if (key === undefined || key.trim() === '') return null;
  const keys = [key, env.FSB_MULTICAST_SECURE_ACCEPT_KEY].filter((k): k is string => k !== undefined && k.trim() !== '');
  const parsed = keys.map((text, i) => {
    try {
      return parseMulticastKey(text);
    } catch (err) {
      throw new ConfigError(i === 0 ? 'environment FSB_MULTICAST_SECURE_KEY' : 'environment FSB_MULTICAST_SECURE_ACCEPT_KEY', 'secure-key', (err as Error).message);
    }
  });
  return new SecureOpener(parsed, { maxAgeMs: 10_000, replayWindow: 1024 });
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
      const { mode, event } = options.secure ? decodeSecureDatagram(datagram, options.secure) : decodeDatagram(datagram, options.psk);
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
    .addHelpText('after', '\nSecure mode: set FSB_MULTICAST_SECURE_KEY (and FSB_MULTICAST_SECURE_ACCEPT_KEY) in the environment, as for the bridge.')
    .action(async (options: { address: string; port: number; psk?: string; interface: string }) => {
      const secure = secureOpenerFromEnv();
      const psk = secure ? null : await cliPsk(options.psk);
      if (psk === 'relaunched') return;
      const stop = await listen({ address: options.address, port: options.port, psk, secure, interface: options.interface }, (line) => process.stdout.write(line), createLogger('warn', { destination: 2 }));
      await new Promise<void>((resolve) => process.once('SIGINT', resolve).once('SIGTERM', resolve));
      await stop();
    });
}
