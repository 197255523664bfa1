import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['test/**/*.test.ts'],
    // test/freeswitch needs real FreeSWITCH nodes: npm run test:freeswitch (docs/interop.md).
    exclude: ['node_modules/**', 'dist/**', 'test/freeswitch/**'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Suites start real servers and network namespaces; two workers fit the 2-core machines.
    maxWorkers: 2,
    // OpenSSL 3 offers Blowfish (mod_event_multicast's psk cipher) only through its legacy provider.
    execArgv: ['--openssl-legacy-provider'],
    reporters: ['default'],
  },
});
