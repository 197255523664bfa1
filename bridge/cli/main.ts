#!/usr/bin/env node
import { BridgeError } from '../errors.js';
import { blowfishAvailable, followParent, relaunchWithLegacyProvider } from '../transports/multicast/blowfish.js';
import { buildProgram } from './program.js';

/** Commands that may meet a psk: they need Blowfish, which Node's OpenSSL 3 keeps in the legacy provider. */
const CIPHER_COMMANDS = new Set(['run', 'listen', 'decode', 'encode', 'demo', 'consumer']);

export async function main(argv = process.argv): Promise<void> {
  followParent();
  try {
    if (argv.slice(2).some((arg) => CIPHER_COMMANDS.has(arg)) && !blowfishAvailable() && (await relaunchWithLegacyProvider())) return;
    await buildProgram().parseAsync(argv);
  } catch (err) {
    const message = err instanceof BridgeError ? `${err.code}: ${err.message}` : (err as Error).stack ?? String(err);
    process.stderr.write(`fs-event-bridge: ${message}\n`);
    process.exitCode = 1;
    // A command that failed half-way may leave a socket or timer open: exit anyway, so a
    // supervisor sees the failure instead of a process that idles forever.
    setTimeout(() => process.exit(1), FAILED_EXIT_GRACE_MS).unref();
  }
}

/** Time given to a failed command to close what it opened before the process is ended. */
const FAILED_EXIT_GRACE_MS = 2_000;

await main();
