import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { defaultConfigXml } from '../../bridge/config/load.js';
import { FsEvent } from '../../bridge/event/event.js';
import { LEGACY_PROVIDER_FLAG, RELAUNCH_ENV, RELAUNCH_V8_FLAGS } from '../../bridge/transports/multicast/blowfish.js';
import { CLI, cliArgs, loggedStatus, runCli } from '../support/cli.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { closedPort } from '../support/ports.js';
import { CHILD_START_MS, CHILD_TEST_MS, until } from '../support/wait.js';

/** The real binaries as an operator runs them: `run`, `peers`, `consumer location`. */
let nats: NatsServer;
let dir: string;
const sims: EslSimulator[] = [];
const children: ChildProcess[] = [];

function start(args: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, cliArgs(args), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  children.push(child);
  return { child, output: () => output };
}

function configFile(name: string, sections: Record<string, Record<string, string>>): string {
  const file = join(dir, `${name}.xml`);
  writeFileSync(file, defaultConfigXml(sections));
  return file;
}

beforeAll(async () => {
  nats = await startNatsServer();
  dir = mkdtempSync(join(tmpdir(), 'fsb-cli-'));
}, CHILD_TEST_MS);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const sim of sims) await sim.stop();
  await nats?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('fs-event-bridge processes', () => {
  it('run bridges two nodes, peers lists the other one, consumer location fills its table, SIGHUP reloads, SIGTERM stops cleanly', async () => {
    const nodes = ['fs-a', 'fs-b', 'fs-c'];
    for (const name of nodes) {
      const sim = await EslSimulator.start({ switchname: name, hostname: `host-${name}`, ipv4: `192.0.2.${sims.length + 1}` });
      sims.push(sim);
    }
    const base = (name: string, i: number) => ({
      settings: { 'node-name': name, hostname: `host-${name}`, ipv4: `192.0.2.${i + 1}`, cluster: 'cli', 'stats-interval': '1s' },
      esl: { port: String(sims[i].port) },
      // One HEARTBEAT must keep fs-a UP until `peers` (a new Node process each try) gets to ask, even on a loaded machine.
      multicast: { enabled: 'no', 'peer-timeout': '30s' },
      nats: { enabled: 'yes', servers: nats.url },
      // Port 0: a port probed free could be another test's by the time the child binds it; the started line names the one it got.
      metrics: { enabled: 'yes', port: '0' },
    });
    const a = start(['run', '--config', configFile('a', base('fs-a', 0))]);
    const b = start(['run', '--config', configFile('b', base('fs-b', 1))]);
    const dbPath = join(dir, 'c.db');
    const c = start(['consumer', 'location', '--config', configFile('c', { ...base('fs-c', 2), 'consumer:location': { enabled: 'yes', 'db-path': dbPath } })]);

    const status: Record<string, string> = {};
    for (const [name, proc] of [['fs-a', a], ['fs-b', b]] as const) {
      status[name] = await until(async () => {
        const logged = loggedStatus(proc.output(), 'bridge started');
        return logged && (await fetch(`${logged.url}/ready`)).status === 200 ? logged.url : null;
      }, CHILD_START_MS).catch((err) => {
        throw new Error(`${name} never ready: ${err.message}\n${proc.output()}`);
      });
    }
    await until(() => c.output().includes('consumer started'), CHILD_START_MS).catch((err) => {
      throw new Error(`standalone consumer never started: ${err.message}\n${c.output()}`);
    });

    sims[0].fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready'));
    // Polled over HTTP (a `peers` process per try only added start-up time), then asked once through the binary.
    await until(async () => ((await (await fetch(`${status['fs-b']}/peers`)).json()) as { name: string; up: boolean }[]).some((p) => p.name === 'fs-a' && p.up));
    const peers = await runCli(['peers', '--url', status['fs-b']]);
    expect(peers.code).toBe(0);
    expect(peers.stdout).toMatch(/^Peer fs-a UP; last seen \d+ seconds ago; 1 events received, loss unknown \(no bridge sequence header\)$/m);

    const register = EslSimulator.loadCapture('a-plain.raw').find((e) => e.event.subclass === 'sofia::register')!.event.clone();
    sims[0].fire(register);
    const user = register.get('from-user')!;
    const row = await until(() => {
      const db = new Database(dbPath, { readonly: true, fileMustExist: true });
      try {
        return db.prepare('select hostname, data from db_data where realm=? and data_key=?').get(register.get('from-host'), `LOCATION_${user}`) as { hostname: string; data: string } | undefined;
      } finally {
        db.close();
      }
    });
    expect(row).toEqual({ hostname: 'host-fs-a', data: '192.0.2.1' });

    // The periodic traffic line shows events flowing from ESL to NATS.
    const traffic = await until(() =>
      a
        .output()
        .split('\n')
        .filter((line) => line.includes('"msg":"traffic"'))
        .map((line) => JSON.parse(line) as Record<string, number | string>)
        .find((line) => Number(line.in_esl) > 0),
    );
    expect(traffic).toMatchObject({ esl: 'connected', out_nats: expect.any(Number) });

    // SIGHUP re-reads the file without a restart and, like the legacy module, forgets its peers.
    b.child.kill('SIGHUP');
    await until(() => b.output().includes('"msg":"configuration reloaded"'));
    const afterReload = await runCli(['peers', '--url', status['fs-b']]);
    expect(afterReload.stdout).toBe('No multicast peers seen\n');

    const exited = new Promise<number | null>((resolve) => a.child.once('exit', (code) => resolve(code)));
    a.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(a.output()).toMatch(/"msg":"bridge stopped"/);
  }, 2 * CHILD_TEST_MS);

  it('peers explains when no bridge answers', async () => {
    const result = await runCli(['peers', '--url', `http://127.0.0.1:${await closedPort()}`]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/FSB_ERR_NOT_CONNECTED: no bridge answering at/);
  }, CHILD_TEST_MS);

  it('a relaunched bridge stops when its parent is killed outright (no orphan)', async () => {
    const file = configFile('orphan', {
      settings: { 'node-name': 'fs-orphan', 'stats-interval': '0' },
      esl: { port: String(await closedPort()) },
      multicast: { enabled: 'no' },
      metrics: { enabled: 'no' },
    });
    // Started without the flags, the CLI relaunches itself as a child with them.
    const parent = spawn(process.execPath, [CLI, 'run', '--config', file], { stdio: 'ignore' });
    children.push(parent);
    const childPid = await until(() => {
      const out = spawnSync('pgrep', ['-P', String(parent.pid)], { encoding: 'utf8' }).stdout.trim();
      return out ? Number(out.split('\n')[0]) : 0;
    }, CHILD_START_MS);
    // The child runs as deployed: the relaunch's node flags and environment.
    const childArgv = (await until(() => readFileSync(`/proc/${childPid}/cmdline`, 'utf8'))).split('\0');
    expect(childArgv.slice(1, 2 + RELAUNCH_V8_FLAGS.length)).toEqual([LEGACY_PROVIDER_FLAG, ...RELAUNCH_V8_FLAGS]);
    const childEnv = readFileSync(`/proc/${childPid}/environ`, 'utf8').split('\0');
    for (const [name, value] of Object.entries(RELAUNCH_ENV)) expect(childEnv).toContain(`${name}=${value}`);
    parent.kill('SIGKILL');
    // Gone, or a zombie waiting for whoever adopted it to reap it.
    const alive = () => {
      const status = spawnSync('cat', [`/proc/${childPid}/status`], { encoding: 'utf8' }).stdout;
      return status !== '' && !/^State:\s+Z/m.test(status);
    };
    await until(() => !alive(), CHILD_START_MS).catch((err: Error) => {
      throw new Error(`${err.message}: child ${childPid} ${spawnSync('cat', [`/proc/${childPid}/cmdline`], { encoding: 'utf8' }).stdout}`);
    });
    expect(alive()).toBe(false);
  }, CHILD_TEST_MS);
});
