import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderConfigReference } from '../../bridge/config/reference.js';
import { PARAMS } from '../../bridge/config/schema.js';
import { spawnSync } from 'node:child_process';
import { CLI, runCli } from '../support/cli.js';
import { fixturePath } from '../support/fixtures.js';
import { CHILD_START_MS, CHILD_TEST_MS } from '../support/wait.js';

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

describe('fs-event-bridge CLI', { timeout: CHILD_TEST_MS }, () => {
  it('validate accepts the shipped config and the legacy file', async () => {
    const ours = await runCli(['validate', '--config', repo('config/event_bridge.conf.xml')]);
    expect(ours.code).toBe(0);
    expect(ours.stdout).toMatch(/valid event_bridge\.conf \(node fs-a, transports multicast \+ nats\)/);
    const legacy = await runCli(['validate', '--config', fixturePath('reference', 'conf', 'event_multicast-psk.conf.xml')]);
    expect(legacy.code).toBe(0);
    expect(legacy.stdout).toMatch(/valid event_multicast\.conf .*transports multicast\)/);
  });

  it('validate exits 1 with the file, param and problem on a bad config', async () => {
    const result = await runCli(['validate', '--config', fixturePath('esl', 'a-plain.raw')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/FSB_ERR_CONFIG: .*a-plain\.raw/);
  });

  it('docs/config-reference.md is generated from the schema and documents every param', () => {
    const doc = readFileSync(repo('docs/config-reference.md'), 'utf8');
    expect(doc).toBe(renderConfigReference());
    for (const spec of PARAMS) expect(doc).toContain(`### \`${spec.name}\``);
  });

  it('relaunches itself with the OpenSSL legacy provider when started without it (psk needs Blowfish)', () => {
    const datagram = fixturePath('multicast-psk', '001-HEARTBEAT.bin');
    const result = spawnSync(process.execPath, [CLI, 'decode', datagram, '--psk', 'fixture-psk-0123456789'], { encoding: 'utf8', timeout: CHILD_START_MS });
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ mode: 'psk' });
  });
});
