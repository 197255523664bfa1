import { fileURLToPath } from 'node:url';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * Files run alphabetically, except legacy.fs.test.ts last: it loads mod_event_multicast
 * and starts the seed Lua on the legacy node, which only a FreeSWITCH restart stops
 * (the file ends with one, which is also the "restart under the bridge" test).
 */
class LabOrder extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification) => (file.moduleId.endsWith('legacy.fs.test.ts') ? 1 : 0);
    return [...files].sort((x, y) => rank(x) - rank(y) || x.moduleId.localeCompare(y.moduleId));
  }
}

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
    sequence: { sequencer: LabOrder },
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    execArgv: ['--openssl-legacy-provider'],
    reporters: ['default'],
  },
});
