import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CASES, FREESWITCH_CASE, parseArgs, writeFreeswitchReport, writeReport } from '../bench/run.js';
import {
  FINDINGS_END,
  FINDINGS_START,
  FREESWITCH_END,
  FREESWITCH_START,
  errorRow,
  extractFindings,
  extractFreeswitchSection,
  machine,
  renderFreeswitchSection,
  renderMarkdown,
  renderTable,
  replaceFreeswitchSection,
  resultRow,
  type Report,
} from '../bench/support-report.js';
import type { BenchResult } from '../bench/types.js';
import { busyPercent, describeThreads, machineCpu, threadCpuMs } from '../bench/support-processes.js';
import { createLinkedNetns } from '../support/netns.js';

const met: BenchResult = { case: 'fake fast', value: 123_456, unit: 'events/s', baseline: 'fake peer', baseline_value: 1_000, ratio: 123.456, target: 100_000, met: true, notes: 'higher | better' };
const missed: BenchResult = { case: 'fake slow', value: 5, unit: 'ms', baseline: 'floor', baseline_value: 1, ratio: 5, target: 2, met: false };

function report(rows = [resultRow(met), resultRow(missed), errorRow('fake-broken', 'nats-server not found at /x\nstack line')]): Report {
  return { machine: machine(true, new Date('2026-01-02T03:04:05Z')), rows, setup: ['one process per case'], durations: { 'fake-broken': 0.5 }, findings: '## Profile findings\n\nJSON serialization was hot.' };
}

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('bench report', () => {
  it('writes benchmarks.json as the documented array of rows, error rows with null figures', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fsb-bench-test-'));
    dirs.push(dir);
    const written = writeReport(dir, report());
    const rows = JSON.parse(readFileSync(written.json, 'utf8')) as Record<string, unknown>[];
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      expect(Object.keys(row)).toEqual(expect.arrayContaining(['case', 'value', 'unit', 'baseline', 'baseline_value', 'ratio', 'target', 'met']));
      expect(typeof row.met).toBe('boolean');
    }
    expect(rows[0]).toMatchObject({ case: 'fake fast', value: 123_456, baseline_value: 1_000, ratio: 123.46, target: 100_000, met: true });
    expect(rows[1]).toMatchObject({ case: 'fake slow', met: false });
    expect(rows[2]).toMatchObject({ case: 'fake-broken', value: null, baseline_value: null, ratio: null, met: false });
    expect(rows[2].error).toContain('nats-server not found');
  });

  it('writes benchmarks.md with the machine, one table row per figure, notes and the findings', () => {
    const markdown = renderMarkdown(report());
    expect(markdown).toContain(`- Node: ${process.version}`);
    expect(markdown).toMatch(/- CPU: .+, \d+ cores/);
    expect(markdown).toContain('- Date: 2026-01-02T03:04:05.000Z');
    expect(markdown).toContain('- Mode: quick');
    const tableRows = markdown.split('\n').filter((line) => line.startsWith('| fake'));
    expect(tableRows).toEqual([
      '| fake fast | 123,456 | events/s | fake peer | 1,000 | 123.46 | 100,000 | yes |',
      '| fake slow | 5 | ms | floor | 1 | 5 | 2 | **no** |',
      '| fake-broken | error | – | – | – | – | – | error |',
    ]);
    expect(markdown).toContain('higher \\| better');
    expect(markdown).toContain('fake-broken 0.5 s');
    expect(extractFindings(markdown)).toBe('## Profile findings\n\nJSON serialization was hot.');
  });

  it('keeps the findings block across regenerations and drops it when there is none', () => {
    const once = renderMarkdown(report());
    const again = renderMarkdown({ ...report(), findings: extractFindings(once) });
    expect(again).toBe(once);
    expect(renderMarkdown({ ...report(), findings: '' })).not.toContain(FINDINGS_START);
    expect(extractFindings(`x ${FINDINGS_END} y ${FINDINGS_START}`)).toBe('');
  });

  it('replaces only its own section on a --freeswitch run and keeps that section on the other runs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fsb-bench-test-'));
    dirs.push(dir);
    const full = renderMarkdown(report());
    const section = renderFreeswitchSection(machine(false, new Date('2026-02-03T04:05:06Z')), [resultRow(met)], 42);
    expect(section.startsWith(FREESWITCH_START) && section.endsWith(FREESWITCH_END)).toBe(true);
    expect(section).toContain('| fake fast | 123,456 | events/s | fake peer | 1,000 | 123.46 | 100,000 | yes |');
    expect(section).toContain('Last run: 2026-02-03T04:05:06.000Z');
    const written = writeFreeswitchReport(dir, full, section, [resultRow(met)]);
    const withSection = readFileSync(written.markdown, 'utf8');
    // Everything of the full run is still there, the section sits before the findings.
    expect(withSection.replace(section + '\n\n', '')).toBe(full);
    expect(withSection.indexOf(FREESWITCH_START)).toBeLessThan(withSection.indexOf(FINDINGS_START));
    expect(JSON.parse(readFileSync(written.json, 'utf8'))).toEqual([resultRow(met)]);
    // A later --freeswitch run replaces it, a later full run keeps it.
    const newer = renderFreeswitchSection(machine(false, new Date('2026-03-04T05:06:07Z')), [resultRow(missed)], 40);
    const replaced = replaceFreeswitchSection(withSection, newer);
    expect(extractFreeswitchSection(replaced)).toBe(newer);
    expect(replaced).not.toContain('2026-02-03T04:05:06');
    const regenerated = renderMarkdown({ ...report(), freeswitch: extractFreeswitchSection(replaced) });
    expect(extractFreeswitchSection(regenerated)).toBe(newer);
    expect(extractFindings(regenerated)).toBe(extractFindings(full));
    expect(extractFreeswitchSection(full)).toBe('');
  });

  it('prints a terminal table with a line per row and the error in place of the baseline', () => {
    const lines = renderTable(report().rows).trimEnd().split('\n');
    expect(lines).toHaveLength(5);
    expect(lines[4]).toContain('ERROR');
    expect(lines[4]).toContain('nats-server not found at /x');
    expect(lines[4]).not.toContain('stack line');
  });

  it('turns non-finite figures into null rather than invalid JSON', () => {
    const row = resultRow({ ...met, value: NaN, ratio: Infinity });
    expect(row.value).toBeNull();
    expect(row.ratio).toBeNull();
  });
});

describe('bench arguments', () => {
  it('parses --quick, --out and --only, and refuses unknown cases and options', () => {
    const args = parseArgs(['--quick', '--out', '/tmp/x', '--only', 'esl-parse,rss']);
    expect(args).toMatchObject({ quick: true, out: '/tmp/x', only: ['esl-parse', 'rss'] });
    expect(() => parseArgs(['--only', 'nope'])).toThrow(/unknown case nope/);
    expect(() => parseArgs(['--fast'])).toThrow(/unknown option/);
    expect(() => parseArgs(['--out'])).toThrow(/needs a value/);
    expect(parseArgs(['--freeswitch']).freeswitch).toBe(true);
    expect(parseArgs([]).freeswitch).toBe(false);
    expect(() => parseArgs(['--freeswitch', '--only', 'rss'])).toThrow(/runs alone/);
    expect(CASES).not.toContain(FREESWITCH_CASE);
  });

  it('lists every case of the issue, each with a bounded timeout', () => {
    expect(CASES.map((c) => c.name)).toEqual(['esl-parse', 'esl-to-sinks', 'multicast-receive', 'latency', 'location-writes', 'kv-load', 'rss', 'board-latency', 'inject', 'multicast-crypto']);
    // Hung cases end well inside CI's 90 minutes, even all of them.
    expect(Math.max(...CASES.map((c) => c.timeoutMs))).toBeLessThanOrEqual(180_000);
    expect(CASES.reduce((sum, c) => sum + c.timeoutMs, 0)).toBeLessThanOrEqual(20 * 60_000);
  });
});

describe('bench support', () => {
  it('never links a namespace from the host: createLinkedNetns refuses beside the host NICs', () => {
    // The test process runs on the host (its eth0 is there); the bench runs the call inside a namespace of its own.
    expect(() => createLinkedNetns('guard', '239.77.8.8')).toThrow(/namespace of its own/);
  });

  it('splits a process CPU time by thread, the main thread named by its pid', () => {
    const before = threadCpuMs(process.pid);
    const until = Date.now() + 50;
    while (Date.now() < until) Math.sqrt(Math.random());
    const after = threadCpuMs(process.pid);
    expect(after.has(process.pid)).toBe(true);
    expect(after.get(process.pid)!).toBeGreaterThanOrEqual(before.get(process.pid)!);
    expect(describeThreads(process.pid, before, after, 1)).toMatch(/^main thread [\d.]+ µs per event, its other threads /);
    const machine = [machineCpu(), machineCpu()];
    expect(busyPercent(machine[0], machine[1])).toBeGreaterThanOrEqual(0);
    expect(busyPercent(machine[0], machine[1])).toBeLessThanOrEqual(100);
  });
});
