import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeInNetns, typescriptLoader } from '../../test/support/netns.js';
import { FROM_SOURCES, REPO_ROOT } from './paths.js';
import { LEGACY_PROVIDER_FLAG, RELAUNCH_V8_FLAGS } from '../../bridge/transports/multicast/blowfish.js';

/**
 * Starts this repository's entry points as child processes, inside a network
 * namespace or not. From the TypeScript sources (tests) children run through the
 * transpiling loader of test/support/netns.ts, so tests need no build; from dist/
 * (npm run demo) they run the compiled files. Either way the Blowfish provider is on,
 * so the bridge never relaunches itself and the child's pid is the bridge's.
 *
 * Every child is killed when this process exits, however it exits; a runner that was
 * itself SIGKILLed leaves them behind, and `sweepLeftovers` removes those at the next start.
 */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** `entry` is relative to the repository root without extension, e.g. `bridge/cli/main`. */
export function launch(netns: string | null, entry: string, args: readonly string[]): ChildProcess {
  const stdio: ['pipe', 'pipe', 'pipe'] = ['pipe', 'pipe', 'pipe'];
  // Own process group: a Ctrl-C in the terminal reaches the runner only, which then stops the children in order.
  const detached = true;
  let child: ChildProcess;
  if (FROM_SOURCES && netns) child = nodeInNetns(netns, join(REPO_ROOT, `${entry}.ts`), args, { stdio, detached });
  else {
    // The flags the CLI would relaunch itself with, given up front so it runs as one process.
    const flags = [LEGACY_PROVIDER_FLAG, ...RELAUNCH_V8_FLAGS];
    const nodeArgs = FROM_SOURCES
      ? [...flags, '--import', typescriptLoader(), join(REPO_ROOT, `${entry}.ts`), ...args]
      : [...flags, join(REPO_ROOT, 'dist', `${entry}.js`), ...args];
    // `ip netns exec` execs the command itself, so the pid stays the node process's.
    child = netns ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...nodeArgs], { stdio, detached }) : spawn(process.execPath, nodeArgs, { stdio, detached });
  }
  // A child that died first must not turn a late write to its stdin into an uncaught EPIPE.
  child.stdin!.on('error', () => undefined);
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Sends `signal`, waits for the exit, SIGKILLs after `graceMs`. Resolves with the exit code (null when killed). */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 8_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Runner namespaces are `fsb-<tag>hub-<pid>-<n>` / `fsb-<tag><i>-<pid>-<n>` (test/support/netns.ts names them). */
export const NETNS_TAG = 'cl';
const OWN_NETNS = new RegExp(`^fsb-${NETNS_TAG}(?:hub|\\d+)-(\\d+)-\\d+$`);
export const WORKDIR_PREFIX = 'fsb-cluster-';

/**
 * Removes what a runner that died without cleaning up left: its namespaces (after
 * killing the processes still inside them) and its work directories. Only leftovers
 * of runners whose pid is gone are touched, so parallel runners are safe.
 */
export function sweepLeftovers(): string[] {
  const removed: string[] = [];
  let list = '';
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    // no permission or no iproute2: nothing of ours can exist either
  }
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    const match = OWN_NETNS.exec(name);
    if (!match || alive(Number(match[1]))) continue;
    try {
      const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split('\n').filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      removed.push(name);
    } catch {
      // raced with another sweeper
    }
  }
  for (const entry of existsSync(tmpdir()) ? readdirSync(tmpdir()) : []) {
    const match = new RegExp(`^${WORKDIR_PREFIX}(\\d+)-`).exec(entry);
    if (!match || alive(Number(match[1]))) continue;
    rmSync(join(tmpdir(), entry), { recursive: true, force: true });
    removed.push(join(tmpdir(), entry));
  }
  return removed;
}
