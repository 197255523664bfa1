import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parser } from '@prometheus-io/lezer-promql';
import { parse as parseYaml } from 'yaml';
import { Bridge } from '../../bridge/bridge.js';
import { consumersFor } from '../../bridge/cli/commands/run.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';

/**
 * docs/grafana/fs-event-bridge.json and docs/prometheus/alerts.yml against what the
 * bridge really exports: every expression parses as PromQL (Prometheus's own grammar,
 * @prometheus-io/lezer-promql), and every metric and label it names exists on a running
 * bridge with both transports and both consumers. The alert rules also pass promtool's
 * checks and unit tests (test/fixtures/prometheus/alerts.test.yml).
 */
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(REPO, path), 'utf8');
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['instance', 'job'];

let nats: NatsServer;
let sim: EslSimulator;
let dir: string;
let bridge: Bridge;
/** Exported metric name -> its label names (histograms as their _bucket, _sum and _count series). */
const exported = new Map<string, Set<string>>();

beforeAll(async () => {
  nats = await startNatsServer();
  sim = await EslSimulator.start({ switchname: 'fs-a' });
  dir = mkdtempSync(join(tmpdir(), 'fsb-dash-'));
  const sections = {
    settings: { 'node-name': 'fs-a', 'stats-interval': '0' },
    esl: { port: String(sim.port) },
    nats: { enabled: 'yes', servers: nats.url },
    'consumer:blf': { enabled: 'yes' },
    'consumer:location': { enabled: 'yes', 'db-path': join(dir, 'db') },
    metrics: { enabled: 'yes', port: '0', board: 'yes' },
  };
  // Started with NATS and both consumers (their metrics appear as they start)...
  const { config } = loadConfigText(defaultConfigXml({ ...sections, multicast: { enabled: 'no' } }), 'a.xml');
  bridge = new Bridge(config, { logger: silentLogger(), consumers: consumersFor(config) });
  await bridge.start();
  // ...and one with multicast, built but never started: its transport registers its metrics without opening a socket.
  const multicast = new Bridge(loadConfigText(defaultConfigXml({ ...sections, multicast: { enabled: 'yes' } }), 'b.xml').config, { logger: silentLogger() });
  for (const registry of [bridge.metrics.registry, multicast.metrics.registry]) {
    for (const metric of registry.getMetricsAsArray() as unknown as { name: string; labelNames?: string[]; constructor: { name: string } }[]) {
      const labels = new Set([...(metric.labelNames ?? []), ...TARGET_LABELS]);
      if (metric.constructor.name === 'Histogram') {
        exported.set(`${metric.name}_bucket`, new Set([...labels, 'le']));
        exported.set(`${metric.name}_sum`, labels);
        exported.set(`${metric.name}_count`, labels);
      } else exported.set(metric.name, labels);
    }
  }
}, 60_000);

afterAll(async () => {
  await bridge?.stop();
  await sim?.stop();
  await nats?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Parsed {
  metrics: string[];
  /** [metric, label] for each label matcher. */
  matchers: [string, string][];
  /** Labels named in by/without/on/ignoring/group_left/group_right. */
  grouping: string[];
}

/** Metric names and labels of a PromQL expression, from Prometheus's own grammar; throws on a syntax error. */
function promql(expr: string): Parsed {
  // Grafana's interval variables are not PromQL; any duration stands in for them.
  const text = expr.replace(/\$__(rate_)?interval/g, '5m');
  const tree = parser.parse(text);
  const parsed: Parsed = { metrics: [], matchers: [], grouping: [] };
  const cursor = tree.cursor();
  let currentMetric = '';
  do {
    const slice = text.slice(cursor.from, cursor.to);
    if (cursor.type.isError) throw new Error(`PromQL syntax error at ${cursor.from} in ${JSON.stringify(text)}`);
    if (cursor.name === 'VectorSelector') currentMetric = '';
    if (cursor.name === 'Identifier' && cursor.node.parent?.name === 'VectorSelector') {
      currentMetric = slice;
      parsed.metrics.push(slice);
    }
    if (cursor.name === 'LabelName') {
      const parent = cursor.node.parent?.name;
      if (parent === 'UnquotedLabelMatcher') parsed.matchers.push([currentMetric, slice]);
      else if (parent === 'GroupingLabels') parsed.grouping.push(slice);
    }
  } while (cursor.next());
  return parsed;
}

/** Every metric and label an expression names is exported; returns the metrics it uses. */
function checkAgainstExport(expr: string, where: string): string[] {
  const { metrics, matchers, grouping } = promql(expr);
  expect(metrics.length, `${where}: ${expr}`).toBeGreaterThan(0);
  for (const metric of metrics) expect(exported.has(metric), `${where}: ${metric} is not exported by the bridge`).toBe(true);
  for (const [metric, label] of matchers) expect(exported.get(metric)?.has(label), `${where}: ${metric} has no label ${label}`).toBe(true);
  const available = new Set(metrics.flatMap((m) => [...exported.get(m)!]));
  for (const label of grouping) expect(available.has(label), `${where}: no metric of ${expr} has label ${label}`).toBe(true);
  return metrics;
}

describe('the PromQL checker itself', () => {
  it('finds metric names and labels, and refuses broken expressions', () => {
    expect(promql('sum by (a) (rate(x_total{b="1"}[$__rate_interval]) * on(instance) group_left(c) y{c=~"$node"})')).toEqual({
      metrics: ['x_total', 'y'],
      matchers: [['x_total', 'b'], ['y', 'c']],
      grouping: ['a', 'instance', 'c'],
    });
    expect(() => promql('sum by (a (rate(x[5m]))')).toThrow(/syntax error/);
    expect(() => checkAgainstExport('rate(fsb_no_such_metric_total[5m])', 'probe')).toThrow(/not exported/);
    expect(() => checkAgainstExport('fsb_drops_total{node="x"}', 'probe')).toThrow(/no label node/);
  });
});

describe('docs/grafana/fs-event-bridge.json', () => {
  const dashboard = JSON.parse(read('docs/grafana/fs-event-bridge.json')) as {
    uid: string;
    templating: { list: { name: string; type: string; query: string | { query: string } }[] };
    panels: { id: number; type: string; title: string; datasource?: { uid: string }; gridPos: { x: number; y: number; w: number; h: number }; targets?: { expr: string; refId: string }[] }[];
  };

  it('has a node variable from fsb_bridge_info, and every query of every panel is filtered by it', () => {
    const node = dashboard.templating.list.find((v) => v.name === 'node')!;
    const query = typeof node.query === 'string' ? node.query : node.query.query;
    const [, metric, label] = /^label_values\((\w+), (\w+)\)$/.exec(query)!;
    expect(exported.get(metric)?.has(label)).toBe(true);
    const panels = dashboard.panels.filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThanOrEqual(12);
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    for (const panel of panels) {
      expect(panel.datasource?.uid, panel.title).toBe('${datasource}');
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
      expect(panel.targets!.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets!) expect(target.expr, panel.title).toContain('fsb_bridge_info{bridge=~"$node"}');
    }
  });

  it('uses only metrics and labels the bridge exports, and covers what an operator watches', () => {
    const used = new Set<string>();
    for (const panel of dashboard.panels) for (const target of panel.targets ?? []) for (const m of checkAgainstExport(target.expr, panel.title)) used.add(m);
    for (const metric of [
      'fsb_events_in_total',
      'fsb_events_out_total',
      'fsb_drops_total',
      'fsb_sequence_gap_events_total',
      'fsb_peer_up',
      'fsb_esl_connected',
      'fsb_esl_reconnects_total',
      'fsb_nats_connected',
      'fsb_queue_depth',
      'fsb_remote_event_age_seconds_bucket',
      'fsb_state_writes_total',
    ]) {
      expect(used, metric).toContain(metric);
    }
  });
});

describe('docs/prometheus/alerts.yml', () => {
  const rules = (parseYaml(read('docs/prometheus/alerts.yml')) as { groups: { rules: { alert: string; expr: string; for?: string; annotations: Record<string, string> }[] }[] }).groups.flatMap((g) => g.rules);

  it('pages on drops, sequence gaps, a peer down, ESL down 30 s, NATS down, remote events older than 5 s, location rows unwritable for 2 min; each with its runbook entry', () => {
    expect(rules.map((r) => r.alert)).toEqual(['FsbEventsDropped', 'FsbSequenceGap', 'FsbPeerDown', 'FsbEslDisconnected', 'FsbNatsDisconnected', 'FsbRemoteEventsLate', 'FsbLocationWritesFailing']);
    const runbook = read('docs/runbook.md');
    const anchors = new Set([...runbook.matchAll(/^## (.+)$/gm)].map((m) => m[1].toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')));
    for (const rule of rules) {
      const [file, anchor] = rule.annotations.runbook_url.split('#');
      expect(file, rule.alert).toBe('docs/runbook.md');
      expect(anchors, rule.alert).toContain(anchor);
    }
    expect(rules.find((r) => r.alert === 'FsbEslDisconnected')!.for).toBe('30s');
    expect(rules.find((r) => r.alert === 'FsbRemoteEventsLate')!.expr).toContain('le="5"');
  });

  it('uses only metrics and labels the bridge exports', () => {
    for (const rule of rules) checkAgainstExport(rule.expr, rule.alert);
    // The histogram really has a 5 s bucket for the late-events rule to read.
    expect(bridge.metrics.latency).toHaveProperty('upperBounds', expect.arrayContaining([5]));
  });

  it('passes promtool check rules and promtool test rules (fires on loss, quiet on healthy series)', () => {
    const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
    expect(promtool.status, 'promtool is missing: bash .ci/setup installs Debian\'s prometheus package').toBe(0);
    expect(execFileSync('promtool', ['check', 'rules', join(REPO, 'docs/prometheus/alerts.yml')], { encoding: 'utf8' })).toContain('SUCCESS: 7 rules found');
    const tested = spawnSync('promtool', ['test', 'rules', join(REPO, 'test/fixtures/prometheus/alerts.test.yml')], { encoding: 'utf8' });
    expect(tested.status, tested.stdout + tested.stderr).toBe(0);
    expect(tested.stdout).toContain('SUCCESS');
  });
});
