import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Bridge } from '../../bridge/bridge.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { consumersFor } from '../../bridge/cli/commands/run.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { until } from '../support/wait.js';
import { modelNotifies } from '../support/sofia-presence-model.js';

/**
 * Three bridged nodes on one NATS (each node both publishes and subscribes, with
 * the BLF and location consumers on): a registration and a call on node A reach B
 * and C exactly once, and nothing a node injects is ever published again — the
 * ring that startup_script_1.lua turns into an endless PRESENCE_IN ping-pong.
 */
const NODES = [
  { name: 'fs-a', ipv4: '192.0.2.1' },
  { name: 'fs-b', ipv4: '192.0.2.2' },
  { name: 'fs-c', ipv4: '192.0.2.3' },
];

interface Node {
  name: string;
  sim: EslSimulator;
  bridge: Bridge;
  dbPath: string;
}

let nats: NatsServer;
let dir: string;
const nodes: Node[] = [];
const capture = EslSimulator.loadCapture('a-plain.raw').map((c) => c.event);

function captured(predicate: (e: FsEvent) => boolean): FsEvent {
  const found = capture.find(predicate);
  if (!found) throw new Error('fixture event not found');
  return found.clone();
}

const injectedOf = (node: Node, predicate: (e: FsEvent) => boolean) =>
  node.sim.received.filter((e) => e.subclass === 'multicast::event' && predicate(e));
const presenceFired = (node: Node) => node.sim.received.filter((e) => e.name === 'PRESENCE_IN');

async function counter(bridge: Bridge, name: string, labels: Record<string, string>): Promise<number> {
  const metric = bridge.metrics.registry.getSingleMetric(name);
  const values = (await metric!.get()).values;
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((n, v) => n + v.value, 0);
}

beforeAll(async () => {
  nats = await startNatsServer();
  dir = mkdtempSync(join(tmpdir(), 'fsb-ring-'));
  for (const spec of NODES) {
    const sim = await EslSimulator.start({ switchname: spec.name, hostname: `host-${spec.name}`, ipv4: spec.ipv4 });
    const dbPath = join(dir, `${spec.name}.db`);
    const xml = defaultConfigXml({
      settings: { 'node-name': spec.name, hostname: `host-${spec.name}`, ipv4: spec.ipv4, cluster: 'ring' },
      esl: { port: String(sim.port) },
      multicast: { enabled: 'no' },
      nats: { enabled: 'yes', servers: nats.url },
      bindings: { nats: 'HEARTBEAT PRESENCE_IN CUSTOM sofia::register sofia::unregister sofia::expire multicast::event' },
      metrics: { enabled: 'no' },
      'consumer:blf': { enabled: 'yes' },
      'consumer:location': { enabled: 'yes', 'db-path': dbPath, 'flush-interval': '5ms' },
    });
    const { config } = loadConfigText(xml, `${spec.name}.xml`, {});
    const bridge = new Bridge(config, { logger: silentLogger(), consumers: consumersFor(config) });
    await bridge.start();
    nodes.push({ name: spec.name, sim, bridge, dbPath });
  }
  for (const node of nodes) expect(node.bridge.ready).toBe(true);
}, 60_000);

afterAll(async () => {
  for (const node of nodes) {
    await node.bridge.stop();
    await node.sim.stop();
  }
  await nats?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('three bridged nodes on NATS', () => {
  it('a registration on A is injected once on B and C and lands in their location tables', async () => {
    const [a, b, c] = nodes;
    a.sim.fire(captured((e) => e.subclass === 'sofia::register' && e.get('from-user') === '1000'));
    for (const node of [b, c]) {
      await until(() => injectedOf(node, (e) => e.get('Orig-Event-Subclass') === 'sofia::register').length > 0);
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const node of [b, c]) {
      const injected = injectedOf(node, (e) => e.get('Orig-Event-Subclass') === 'sofia::register');
      expect(injected).toHaveLength(1);
      expect(injected[0].get('Multicast')).toBe('yes');
      expect(injected[0].get('Orig-Multicast-Sender')).toBe('fs-a');
      expect(injected[0].get('Orig-from-user')).toBe('1000');
    }
    expect(injectedOf(a, () => true)).toHaveLength(0);
    for (const node of nodes) {
      await until(() => {
        const db = new Database(node.dbPath, { readonly: true, fileMustExist: true });
        try {
          const row = db.prepare('select data from db_data where realm=? and data_key=?').get('127.0.0.1', 'LOCATION_1000') as { data: string } | undefined;
          return row?.data === '192.0.2.1';
        } finally {
          db.close();
        }
      });
    }
  });

  it('a call on A lights lamps on B and C, and the ring stays quiet afterwards (no loops)', async () => {
    const [a, b, c] = nodes;
    const states = ['CS_ROUTING', 'answered', 'CS_HANGUP'];
    for (const status of states) {
      a.sim.fire(captured((e) => e.name === 'PRESENCE_IN' && e.get('status') === status && e.get('from') === '1000@127.0.0.1'));
    }
    const shown = (node: Node) => modelNotifies(node.sim.received).filter((n) => n.uuid !== null);
    for (const node of [b, c]) await until(() => shown(node).length >= 3);
    const published = await counter(a.bridge, 'fsb_events_out_total', { transport: 'nats' });
    await new Promise((r) => setTimeout(r, 1_000));
    for (const node of [b, c]) {
      // What mod_sofia shows B's and C's phones, each state once: the caller's leg, as on A itself.
      expect(shown(node).map((n) => `${n.state}/${n.direction}`)).toEqual(['confirmed/initiator', 'confirmed/initiator', 'terminated/initiator']);
      expect(node.sim.received.every((e) => e.get('FSB-Injected-By') === node.name)).toBe(true);
      // All of it from the injected multicast::event: the BLF consumer fires nothing for a live call.
      expect(presenceFired(node)).toHaveLength(0);
    }
    expect(presenceFired(a)).toHaveLength(0);
    // Nothing more was published anywhere after the call: what B and C were given came
    // back over their ESL and was filtered by the loop guard, not republished.
    expect(await counter(a.bridge, 'fsb_events_out_total', { transport: 'nats' })).toBe(published);
    for (const node of [b, c]) {
      expect(await counter(node.bridge, 'fsb_events_out_total', { transport: 'nats' })).toBe(0);
      expect(await counter(node.bridge, 'fsb_filtered_total', { cause: 'loop_guard' })).toBeGreaterThan(0);
    }
  });
});
