import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LEGACY_PROVIDER_FLAG, RELAUNCH_V8_FLAGS } from '../../bridge/transports/multicast/blowfish.js';
import { CHILD_START_MS } from './wait.js';

/** The compiled CLI (npm test builds before running vitest). */
export const CLI = fileURLToPath(new URL('../../dist/bridge/cli/main.js', import.meta.url));

/**
 * Node arguments that run the CLI as one process: given the flags it would relaunch
 * itself with, it does not fork, so killing the child a test holds kills the bridge.
 */
export function cliArgs(args: readonly string[]): string[] {
  return [LEGACY_PROVIDER_FLAG, ...RELAUNCH_V8_FLAGS, CLI, ...args];
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], options: { input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, cliArgs(args), { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? CHILD_START_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}
