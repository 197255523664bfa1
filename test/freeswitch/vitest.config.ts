import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/**
 * `npm run test:freeswitch`: the suite against two real FreeSWITCH nodes (docs/interop.md).
 * Opt-in: `npm test` and CI never run it (test/vitest.config.ts excludes this folder).
 * One file at a time, since every file uses the same two nodes and their phones.
 */
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/freeswitch/**/*.fs.test.ts'],
    globalSetup: ['test/freeswitch/global-setup.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    execArgv: ['--openssl-legacy-provider'],
    reporters: ['default'],
  },
});
