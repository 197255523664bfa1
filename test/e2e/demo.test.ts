/**
 * `npm run demo -- --once` as a user runs it (here from the TypeScript sources through
 * the test loader, so no build is needed): the whole scripted scenario on the local
 * cluster, exit 0 only when every node ends in the expected state.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { typescriptLoader } from '../support/netns.js';
import { CHILD_START_MS, CHILD_TEST_MS } from '../support/wait.js';

const DEMO = fileURLToPath(new URL('../../compose/local/demo.ts', import.meta.url));
/**
 * Past this the demo is stopped (SIGINT) and the test fails: it guards against a hang,
 * it is no timing target (the scenario takes about 30 s idle, twice that on a loaded machine).
 */
const DEMO_LIMIT_MS = 180_000;

function runDemo(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--openssl-legacy-provider', '--import', typescriptLoader(), DEMO, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('npm run demo -- --once', () => {
  it('plays the scenario and exits 0 with every node in the expected state', async () => {
    const { code, output } = await runDemo(['--once'], DEMO_LIMIT_MS);
    expect(code, output).toBe(0);
    expect(output).toContain('one network namespace per node on one LAN, multicast + NATS');
    expect(output).toContain('sat1 dies');
    expect(output).toMatch(/every node ended in the expected state/);
    expect(output).not.toContain('FAIL');
    // 3 nodes x 4 checks.
    expect(output.match(/^ok {4}/gm)).toHaveLength(12);
  }, DEMO_LIMIT_MS + 10_000);

  it('refuses an unknown option with exit 1 and the usage', async () => {
    const { code, output } = await runDemo(['--bogus'], CHILD_START_MS);
    expect(code).toBe(1);
    expect(output).toContain('usage: demo [--once]');
  }, CHILD_TEST_MS);
});
