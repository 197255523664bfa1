#!/usr/bin/env node
import { BridgeError } from '../errors.js';
import { buildProgram } from './program.js';

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    const message = err instanceof BridgeError ? `${err.code}: ${err.message}` : (err as Error).stack ?? String(err);
    process.stderr.write(`fs-event-bridge: ${message}\n`);
    process.exitCode = 1;
  }
}

await main();
