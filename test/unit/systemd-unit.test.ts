import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { GRACEFUL_STOP_LIMIT_MS } from '../../bridge/cli/commands/run.js';
import { buildProgram } from '../../bridge/cli/program.js';
import { LEGACY_PROVIDER_FLAG, RELAUNCH_ENV, RELAUNCH_V8_FLAGS } from '../../bridge/transports/multicast/blowfish.js';

const UNIT = fileURLToPath(new URL('../../config/systemd/fs-event-bridge.service', import.meta.url));

/** Key=value lines per [Section] (systemd's syntax without continuation lines, which the unit does not use); repeated keys keep the last. */
function parseUnit(text: string): Record<string, Record<string, string>> {
  const sections: Record<string, Record<string, string>> = {};
  let current: Record<string, string> | null = null;
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) continue;
    const header = /^\[(\w+)\]$/.exec(trimmed);
    if (header) {
      current = sections[header[1]] = {};
      continue;
    }
    const eq = trimmed.indexOf('=');
    if (current === null || eq < 1) throw new Error(`unparsable unit line: ${line}`);
    current[trimmed.slice(0, eq)] = trimmed.slice(eq + 1);
  }
  return sections;
}

describe('config/systemd/fs-event-bridge.service', () => {
  const unit = parseUnit(readFileSync(UNIT, 'utf8'));
  const service = unit.Service;

  it('starts node with the flags the CLI would relaunch itself with, so it runs as one process', () => {
    const argv = service.ExecStart.split(' ');
    const script = argv.findIndex((arg) => arg.endsWith('/dist/bridge/cli/main.js'));
    expect(script).toBeGreaterThan(0);
    expect(argv.slice(1, script)).toEqual([LEGACY_PROVIDER_FLAG, ...RELAUNCH_V8_FLAGS]);
    expect(argv.slice(script + 1, script + 3)).toEqual(['run', '--config']);
  });

  it('sets the environment the CLI would relaunch itself with', () => {
    const text = readFileSync(UNIT, 'utf8');
    const environment = text.split('\n').filter((line) => line.startsWith('Environment=')).map((line) => line.slice('Environment='.length));
    expect(environment).toEqual(Object.entries(RELAUNCH_ENV).map(([name, value]) => `${name}=${value}`));
  });

  it('names a command and options the CLI knows', () => {
    const argv = service.ExecStart.split(' ');
    const run = buildProgram().commands.find((command) => command.name() === 'run');
    expect(run).toBeDefined();
    const config = argv[argv.indexOf('--config') + 1];
    expect(config).toMatch(/^\/.*\.conf\.xml$/);
    expect(run!.options.map((option) => option.long)).toContain('--config');
  });

  it('reloads with SIGHUP and waits longer than the bridge’s own graceful-stop limit', () => {
    expect(service.ExecReload).toBe('/bin/kill -HUP $MAINPID');
    expect(Number(service.TimeoutStopSec) * 1000).toBeGreaterThan(GRACEFUL_STOP_LIMIT_MS);
    expect(service.Restart).toBe('always');
  });

  it("runs SCHED_RR between FreeSWITCH's call threads (FIFO 1) and its event threads (FIFO 99), after FreeSWITCH, as its user", () => {
    expect(service.CPUSchedulingPolicy).toBe('rr');
    const priority = Number(service.CPUSchedulingPriority);
    // At 1 the multicast receiver waits behind a busy FIFO-1 thread and the kernel drops datagrams (docs/decisions.md).
    expect(priority).toBeGreaterThan(1);
    expect(priority).toBeLessThan(99);
    expect(Number(service.LimitRTPRIO)).toBeGreaterThanOrEqual(priority);
    expect(unit.Unit.After.split(' ')).toContain('freeswitch.service');
    expect(service.User).toBe('freeswitch');
    expect(unit.Install.WantedBy).toBe('multi-user.target');
  });
});
