/**
 * `run` on a config problem: what `validate` refuses, `run` refuses the same way; what
 * only the host can tell (an address it lacks, a port in use) fails with a typed error
 * naming the params, never a stack trace, and the process exits instead of lingering.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBridge } from '../../bridge/cli/commands/run.js';
import { validateConfig } from '../../bridge/cli/program.js';
import { defaultConfigXml } from '../../bridge/config/load.js';
import { BindError, ConfigError } from '../../bridge/errors.js';
import { createLogger } from '../../bridge/observability/logger.js';
import { runCli } from '../support/cli.js';
import { closedPort } from '../support/ports.js';
import { CHILD_TEST_MS } from '../support/wait.js';

let dir: string;
let busy: Server;
let busyPort: number;
const silent = createLogger('silent');

function configFile(name: string, sections: Record<string, Record<string, string>>): string {
  const file = join(dir, `${name}.xml`);
  writeFileSync(file, defaultConfigXml(sections));
  return file;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fsb-run-config-'));
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  busyPort = (busy.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => busy.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

describe('run and validate on config problems', { timeout: CHILD_TEST_MS }, () => {
  it('refuses in run exactly what validate refuses (bad interface, subject prefix, stream and bucket names, db-path "")', async () => {
    const cases: [string, Record<string, Record<string, string>>][] = [
      ['interface', { multicast: { interface: 'eth0' } }],
      ['subject-prefix', { nats: { enabled: 'yes', 'subject-prefix': 'fs.*' } }],
      ['stream-name', { nats: { enabled: 'yes', 'stream-name': 'FS.EVENTS' } }],
      ['kv-location-bucket', { nats: { enabled: 'yes', 'kv-location-bucket': 'loc ation' } }],
      ['db-path', { 'consumer:location': { enabled: 'yes', 'db-path': '' } }],
      ['stats-interval', { settings: { 'stats-interval': '30d' } }],
    ];
    for (const [param, sections] of cases) {
      const file = configFile(param, sections);
      expect(() => validateConfig(file), param).toThrow(ConfigError);
      await expect(runBridge(file, 'silent', silent), param).rejects.toThrow(`param "${param}"`);
    }
  });

  it('an interface or bind address this host lacks: validate warns, run fails naming the param before opening anything', async () => {
    const file = configFile('not-local', { multicast: { interface: '192.0.2.77' }, metrics: { enabled: 'no' } });
    const report = validateConfig(file);
    expect(report.stdout).toContain('valid event_bridge.conf');
    expect(report.stderr).toMatch(/warning: on this host, run would fail: FSB_ERR_CONFIG: .*param "interface": 192\.0\.2\.77 is not an address of this host/);
    await expect(runBridge(file, 'silent', silent)).rejects.toThrow(/param "interface": 192\.0\.2\.77 is not an address of this host/);
    const bind = configFile('bind-not-local', { multicast: { 'bind-address': '192.0.2.78' }, metrics: { enabled: 'no' } });
    await expect(runBridge(bind, 'silent', silent)).rejects.toThrow(/param "bind-address": 192\.0\.2\.78/);
  });

  it('a metrics port in use fails start with FSB_ERR_BIND naming metrics/host and metrics/port', async () => {
    const file = configFile('busy', { multicast: { enabled: 'no' }, esl: { port: String(await closedPort()) }, metrics: { port: String(busyPort) } });
    const failure = runBridge(file, 'silent', silent);
    await expect(failure).rejects.toBeInstanceOf(BindError);
    await expect(failure).rejects.toThrow(`cannot open the metrics server on 127.0.0.1:${busyPort}`);
    await expect(failure).rejects.toThrow('check metrics/host, metrics/port');
  });

  it('the CLI prints the code and the message, no stack trace, and exits 1', async () => {
    const file = configFile('cli-busy', { multicast: { enabled: 'no' }, esl: { port: String(await closedPort()) }, metrics: { port: String(busyPort) } });
    const result = await runCli(['run', '--config', file]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^fs-event-bridge: FSB_ERR_BIND: cannot open the metrics server on 127\.0\.0\.1:\d+ \(listen EADDRINUSE/m);
    expect(result.stderr).not.toMatch(/^\s+at /m);
    const bad = await runCli(['run', '--config', configFile('cli-bad', { nats: { enabled: 'yes', 'stream-name': 'a b' } })]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/FSB_ERR_CONFIG: .*param "stream-name": "a b" cannot contain " "/);
    expect(bad.stderr).not.toMatch(/^\s+at /m);
  });
});
