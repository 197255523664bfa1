import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { FsEvent } from '../../bridge/event/event.js';
import { serializeJson } from '../../bridge/event/json.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { createModDbSchema } from '../../consumers/location/sinks.js';
import { cliArgs, loggedStatus } from '../support/cli.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { CHILD_START_MS, CHILD_TEST_MS, until } from '../support/wait.js';

/**
 * A call_limit.db the location consumer cannot use at startup must end the process
 * with status 1 and one line that names the param and the file: before, the CLI
 * printed a stack trace without the path and kept running with /ready false, so
 * systemd never restarted it.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
let dir: string;
let sim: EslSimulator;
let nats: NatsServer;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), `fsb-locdb-${process.pid}-`));
  sim = await EslSimulator.start({ switchname: 'fs-a', hostname: 'node-a', ipv4: '192.0.2.1' });
  nats = await startNatsServer();
}, 60_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await sim?.stop();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function configFile(name: string, dbPath: string, withNats = false): string {
  const file = join(dir, `${name}.xml`);
  writeFileSync(
    file,
    defaultConfigXml({
      settings: { 'node-name': 'fs-a', hostname: 'node-a', ipv4: '192.0.2.1' },
      esl: { port: String(sim.port) },
      multicast: { enabled: 'no' },
      nats: withNats ? { enabled: 'yes', servers: nats.url } : { enabled: 'no' },
      metrics: { enabled: 'yes', port: '0' },
      'consumer:location': { enabled: 'yes', 'db-path': dbPath },
    }),
  );
  return file;
}

/** Runs the CLI (optionally wrapped, e.g. in a mount namespace) to its exit. */
function exitOf(args: string[], wrap: (argv: string[]) => string[] = (argv) => argv): Promise<{ code: number | null; stderr: string }> {
  const argv = wrap([process.execPath, ...cliArgs(args)]);
  const child = spawn(argv[0], argv.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stdout!.on('data', (d) => (stderr += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

function goodDb(path: string): void {
  const db = new Database(path);
  createModDbSchema(db);
  db.close();
}

/** Another process holding BEGIN EXCLUSIVE until killed. */
function holdLock(path: string): Promise<ChildProcess> {
  const script = `
    import Database from 'better-sqlite3';
    const db = new Database(process.argv[1]);
    db.exec('BEGIN EXCLUSIVE');
    process.stdout.write('locked\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, path], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('locked') && resolve(child)));
}

function expectClearFailure(result: { code: number | null; stderr: string }, path: string, problem: RegExp): void {
  expect(result.code).toBe(1);
  expect(result.stderr).toContain('FSB_ERR_LOCATION_DB');
  expect(result.stderr).toContain('"db-path"');
  expect(result.stderr).toContain(path);
  expect(result.stderr).toMatch(problem);
  // One line, no stack trace.
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

// Each case starts the CLI (twice when it runs in a mount namespace): a child's start-up on a loaded machine.
describe('location database unusable at startup', { timeout: CHILD_TEST_MS }, () => {
  it('run: a missing directory exits 1 naming db-path and the path', async () => {
    const path = join(dir, 'no-such-dir', 'call_limit.db');
    expectClearFailure(await exitOf(['run', '--config', configFile('missing', path)]), path, /directory does not exist/);
  });

  it('run: a file that is not a database exits 1', async () => {
    const path = join(dir, 'corrupt.db');
    writeFileSync(path, 'this is not a database\n'.repeat(100));
    expectClearFailure(await exitOf(['run', '--config', configFile('corrupt', path)]), path, /not a SQLite database, or corrupt/);
  });

  it('run: a read-only file (read-only mount) exits 1', async () => {
    const source = join(dir, 'ro-source.db');
    goodDb(source);
    const mount = join(dir, 'ro');
    mkdirSync(mount);
    const path = join(mount, 'call_limit.db');
    // A mount namespace of its own: the tmpfs and its read-only remount vanish with the process.
    const inReadOnlyMount = (argv: string[]) => ['unshare', '-m', 'sh', '-c', `mount -t tmpfs tmpfs "$1" && cp "$2" "$3" && mount -o remount,ro "$1" && shift 3 && exec "$@"`, 'sh', mount, source, path, ...argv];
    expectClearFailure(await exitOf(['run', '--config', configFile('readonly', path)], inReadOnlyMount), path, /read-only/);
  });

  it('run: a database another process keeps locked exits 1 after the lock wait', async () => {
    const path = join(dir, 'locked.db');
    goodDb(path);
    const holder = await holdLock(path);
    try {
      expectClearFailure(await exitOf(['run', '--config', configFile('locked', path)]), path, /locked by another process for 5000 ms/);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('consumer location (standalone, from NATS): a missing directory and a corrupt file exit 1', async () => {
    const missing = join(dir, 'gone', 'call_limit.db');
    expectClearFailure(await exitOf(['consumer', 'location', '--config', configFile('consumer-missing', missing, true)]), missing, /directory does not exist/);
    const corrupt = join(dir, 'corrupt-2.db');
    writeFileSync(corrupt, Buffer.alloc(4096, 0xa5));
    expectClearFailure(await exitOf(['consumer', 'location', '--config', configFile('consumer-corrupt', corrupt, true)]), corrupt, /not a SQLite database, or corrupt/);
  });
});

/**
 * call_limit.db failing while the process runs (issue 13 #3): /health says degraded
 * with the cause, fsb_location_rows_unwritten shows the rows waiting, and SIGTERM says
 * how many were not written. The directory is made immutable (as root, chmod would not
 * stop the writes): the rollback journal cannot be created.
 */
describe('location database failing at run time', () => {
  /** Starts the CLI, returns its output so far, its status address (from the "started" log line) and a way to stop it. */
  async function running(args: string[], startedMsg: string) {
    const child = spawn(process.execPath, cliArgs(args), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const status = (await until(() => loggedStatus(output, startedMsg), CHILD_START_MS)).url;
    const stop = async () => {
      child.kill('SIGTERM');
      return { code: await exited, output };
    };
    return { status, stop, output: () => output };
  }

  const health = async (status: string) => (await (await fetch(`${status}/health`)).json()) as { ok: boolean; status: string; degraded?: Record<string, string> };
  const unwritten = async (status: string) => Number(/^fsb_location_rows_unwritten (\d+)$/m.exec(await (await fetch(`${status}/metrics`)).text())?.[1]);

  async function expectDegradedThenStop(proc: Awaited<ReturnType<typeof running>>, path: string, fire: (n: number) => Promise<void>) {
    expect(await health(proc.status)).toMatchObject({ ok: true, status: 'ok' });
    execFileSync('chattr', ['+i', dirname(path)]);
    try {
      let fired = 0;
      const degraded = await until(async () => {
        await fire(fired++);
        const h = await health(proc.status);
        return h.status === 'degraded' ? h : null;
      }, CHILD_START_MS);
      expect(degraded.ok).toBe(false);
      expect(degraded.degraded?.location).toMatch(/rows not written for \d+ s \(readonly: /);
      // Every registration fired since the directory became immutable is waiting (each is a user of its own).
      await until(async () => (await unwritten(proc.status)) === fired, CHILD_START_MS);
      expect(proc.output()).toMatch(new RegExp(`location: \\d+ rows waiting: ${path} refuses writes \\(readonly`));
      const { code, output } = await proc.stop();
      expect(code).toBe(0);
      expect(output).toContain(`location: ${fired} rows were not written to ${path} at stop (readonly: `);
    } finally {
      execFileSync('chattr', ['-i', dirname(path)]);
    }
  }

  it('run: /health degraded, rows waiting in /metrics, the count at stop', async () => {
    const path = join(dir, 'run-failing', 'call_limit.db');
    mkdirSync(dirname(path));
    const proc = await running(['run', '--config', configFile('run-failing', path)], 'bridge started');
    await until(async () => (await fetch(`${proc.status}/ready`)).ok, CHILD_START_MS);
    await expectDegradedThenStop(proc, path, async (n) => {
      sim.fire(FsEvent.create('CUSTOM', 'sofia::register').add('status', 'Registered(UDP)').add('from-user', `run-${n}`).add('from-host', '127.0.0.1').add('expires', '300').add('FreeSWITCH-IPv4', '192.0.2.1'));
    });
  }, CHILD_TEST_MS);

  it('consumer location (standalone): /health degraded, rows waiting in /metrics, the count at stop', async () => {
    const path = join(dir, 'consumer-failing', 'call_limit.db');
    mkdirSync(dirname(path));
    const file = configFile('consumer-failing', path, true);
    const proc = await running(['consumer', 'location', '--config', file], 'consumer started');
    const { nats: natsConfig, node } = loadConfigText(readFileSync(file, 'utf8'), file, {}).config;
    const subjects = new SubjectMapper(natsConfig.subjectPrefix, node.cluster);
    const nc = await connectNats({ servers: [nats.url], auth: {}, tls: null }, { logger: silentLogger() });
    try {
      await expectDegradedThenStop(proc, path, async (n) => {
        const event = FsEvent.create('CUSTOM', 'sofia::register')
          .add('FreeSWITCH-Hostname', 'node-b')
          .add('FreeSWITCH-Switchname', 'fs-b')
          .add('FreeSWITCH-IPv4', '192.0.2.2')
          .add('Core-UUID', 'core-b')
          .add('Event-Sequence', String(n + 1))
          .add('Event-Date-Timestamp', String(Date.now() * 1000))
          .add('status', 'Registered(UDP)')
          .add('from-user', `consumer-${n}`)
          .add('from-host', '127.0.0.1')
          .add('expires', '300');
        nc.publish(subjects.subject('fs-b', event.name, event.subclass), serializeJson(event));
        await nc.flush();
      });
    } finally {
      await nc.close();
    }
  }, CHILD_TEST_MS);
});
