/**
 * `npm run demo -- --once` as a user runs it (here from the TypeScript sources through
 * the test loader, so no build is needed): the whole scripted scenario on the local
 * cluster, exit 0 only when every node ends in the expected state.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { typescriptLoader } from '../support/netns.js';

const DEMO = fileURLToPath(new URL('../../compose/local/demo.ts', import.meta.url));

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
    const started = Date.now();
    const { code, output } = await runDemo(['--once'], 90_000);
    expect(code, output).toBe(0);
    expect(output).toContain('one network namespace per node on one LAN, multicast + NATS');
    expect(output).toContain('sat1 dies');
    expect(output).toMatch(/every node ended in the expected state/);
    expect(output).not.toContain('FAIL');
    // 3 nodes x 4 checks.
    expect(output.match(/^ok {4}/gm)).toHaveLength(12);
    expect(Date.now() - started).toBeLessThan(60_000);
  }, 100_000);

  it('refuses an unknown option with exit 1 and the usage', async () => {
    const { code, output } = await runDemo(['--bogus'], 20_000);
    expect(code).toBe(1);
    expect(output).toContain('usage: demo [--once]');
  }, 30_000);
});
