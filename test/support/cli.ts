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

/**
 * The status server (metrics, /ready, /peers, the board) of a `run` or `consumer` process
 * from its "bridge started" / "consumer started" log line, null before that line. With
 * metrics port 0 the process binds a port nobody can take first, and this says which.
 */
export function loggedStatus(output: string, startedMsg: string): { url: string; board: string } | null {
  for (const line of output.split('\n')) {
    if (!line.includes(`"msg":"${startedMsg}"`)) continue;
    const parsed = JSON.parse(line) as { status?: { address: string; port: number } | null; board?: string };
    if (!parsed.status) continue;
    const host = parsed.status.address.includes(':') ? `[${parsed.status.address}]` : parsed.status.address;
    return { url: `http://${host}:${parsed.status.port}`, board: parsed.board ?? 'off' };
  }
  return null;
}
