/**
 * A runner killed with SIGKILL cannot clean up after itself: its namespaces and the
 * processes inside them stay. The next runner's start sweeps them (sweepLeftovers);
 * this kills a real demo mid-scenario and checks that nothing of it survives the sweep.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { sweepLeftovers } from '../../compose/local/launcher.js';
import { typescriptLoader } from '../support/netns.js';
import { CHILD_START_MS, CHILD_TEST_MS, until } from '../support/wait.js';

const DEMO = fileURLToPath(new URL('../../compose/local/demo.ts', import.meta.url));

const namespacesOf = (pid: number) =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.split(' ')[0])
    .filter((name) => new RegExp(`^fsb-cl(hub|\\d+)-${pid}-`).test(name));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

it('removes the namespaces, processes and work dir of a runner that was SIGKILLed', async () => {
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '--import', typescriptLoader(), DEMO, '--once', '--pause', '1000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = child.pid!;
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('phone 1000 registers')) resolve();
    });
    child.once('exit', () => reject(new Error(`demo exited early:\n${output}`)));
  });
  const namespaces = namespacesOf(pid);
  expect(namespaces).toHaveLength(5);
  const inside = namespaces.flatMap((name) => execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number));
  expect(inside.length).toBeGreaterThan(0);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;

  const removed = sweepLeftovers();
  expect(removed).toEqual(expect.arrayContaining(namespaces));
  expect(namespacesOf(pid)).toEqual([]);
  // SIGKILLed children are reaped by init (their parent is gone) a moment later.
  await until(() => !inside.some(alive), CHILD_START_MS).catch(() => undefined);
  expect(inside.filter(alive)).toEqual([]);
  expect(readdirSync(tmpdir()).filter((d) => d.startsWith(`fsb-cluster-${pid}-`))).toEqual([]);
  expect(existsSync(`/run/netns/${namespaces[0]}`)).toBe(false);
}, CHILD_TEST_MS);
