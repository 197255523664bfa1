import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { Bridge, boardUrl } from '../../bridge/bridge.js';
import { consumersFor } from '../../bridge/cli/commands/run.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { FsEvent } from '../../bridge/event/event.js';
import { Board } from '../../bridge/observability/board/board.js';
import { StatusServer } from '../../bridge/observability/http.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Pipeline } from '../../bridge/pipeline/pipeline.js';
import { PeerTracker } from '../../bridge/pipeline/peers.js';
import { LocationConsumer } from '../../consumers/location/location-consumer.js';
import { fakeContext } from '../support/consumer-context.js';
import { presenceEvent, registerEvent } from '../../compose/local/events.js';
import { artifactsDir, launchBrowser, slug, type Browser } from '../support/browser.js';
import { cliArgs, loggedStatus } from '../support/cli.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { until } from '../support/wait.js';

/**
 * The cluster board in a real browser (Debian's chromium, headless): bridge fs-a serves
 * it, fed by its ESL simulator and by a second bridge, fs-b, over NATS. Every check
 * waits on the page's DOM (the machine may be loaded); nothing is timed.
 */
const SUITE = 'board';

// What the page.evaluate callbacks see in the browser (this project compiles without the DOM library).
declare const window: { fsbBoard: { lampLatencies: number[] }; pwned?: number };
declare const document: {
  documentElement: { scrollWidth: number };
  body: { append(node: unknown): void };
  activeElement: { id: string; tagName: string } | null;
  createElement(tag: string): { style: { color: string }; remove(): void };
  querySelector(selector: string): { textContent: string | null } | null;
};
declare function getComputedStyle(element: unknown): { color: string; getPropertyValue(name: string): string };
type Canvas = { toDataURL(): string };
const PEER_TIMEOUT_MS = 5_000;
const HEARTBEAT_MS = 250;
const WAIT = { timeout: 45_000 };
/** Per test: a few waits in a row on a loaded machine. */
const TEST_TIMEOUT_MS = 150_000;

interface Node {
  name: string;
  sim: EslSimulator;
  bridge: Bridge;
}

let nats: NatsServer;
let dir: string;
let browser: Browser;
const nodes: Node[] = [];
const heartbeats = new Map<string, NodeJS.Timeout>();
const children: ChildProcess[] = [];
const sims: EslSimulator[] = [];

function startHeartbeats(node: Node): void {
  stopHeartbeats(node);
  heartbeats.set(node.name, setInterval(() => node.sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready')), HEARTBEAT_MS));
}

function stopHeartbeats(node: Node): void {
  clearInterval(heartbeats.get(node.name));
  heartbeats.delete(node.name);
}

function configXml(name: string, ipv4: string, extra: Record<string, Record<string, string>> = {}): string {
  return defaultConfigXml({
    settings: { 'node-name': name, hostname: `host-${name}`, ipv4, cluster: 'board', 'stats-interval': '0' },
    esl: { port: '1' },
    multicast: { enabled: 'no', 'peer-timeout': `${PEER_TIMEOUT_MS}ms` },
    nats: { enabled: 'yes', servers: nats.url },
    'consumer:blf': { enabled: 'yes' },
    'consumer:location': { enabled: 'yes', 'db-path': join(dir, `${name}.db`), 'flush-interval': '5ms' },
    metrics: { enabled: 'yes', host: '127.0.0.1', port: '0', board: 'yes' },
    ...extra,
  });
}

async function startNode(name: string, ipv4: string): Promise<Node> {
  const sim = await EslSimulator.start({ switchname: name, hostname: `host-${name}`, ipv4 });
  const xml = configXml(name, ipv4).replace('name="port" value="1"', `name="port" value="${sim.port}"`);
  const { config } = loadConfigText(xml, `${name}.xml`);
  const bridge = new Bridge(config, { logger: silentLogger(), consumers: consumersFor(config) });
  await bridge.start();
  const node = { name, sim, bridge };
  nodes.push(node);
  startHeartbeats(node);
  return node;
}

const board = (node: Node) => boardUrl(node.bridge.statusEndpoint!);

async function openBoard(node: Node, viewport?: { width: number; height: number }): Promise<Page> {
  const page = await browser.context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  await page.goto(board(node));
  await page.locator('#link', { hasText: 'live' }).waitFor(WAIT);
  return page;
}

async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(artifactsDir(SUITE), `${slug(name)}.png`), fullPage: true });
}

beforeAll(async () => {
  nats = await startNatsServer();
  dir = mkdtempSync(join(tmpdir(), 'fsb-board-'));
  await startNode('fs-a', '192.0.2.1');
  await startNode('fs-b', '192.0.2.2');
  browser = await launchBrowser();
}, 120_000);

afterAll(async () => {
  for (const timer of heartbeats.values()) clearInterval(timer);
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await browser?.close();
  for (const sim of sims) await sim.stop();
  for (const node of nodes) {
    await node.bridge.stop();
    await node.sim.stop();
  }
  await nats?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('cluster board in chromium', () => {
  const [a, b] = [() => nodes[0], () => nodes[1]];

  it('shows a registration made on the other node, and the filter box narrows the table', async (context) => {
    const page = await openBoard(a());
    b().sim.fire(registerEvent('2001', 'board.example'));
    const row = page.locator('#registrations tr[data-user="2001"]');
    await row.waitFor(WAIT);
    await expect.poll(() => row.locator('td').allTextContents(), WAIT).toEqual(['2001@board.example', 'fs-b', '192.0.2.2', 'UDP', expect.stringMatching(/^(5 min 0 s|4 min \d+ s)$/)]);
    expect(await row.getAttribute('data-legacy')).toBe('false');

    b().sim.fire(registerEvent('2002', 'other.example'));
    await page.locator('#registrations tr[data-user="2002"]').waitFor(WAIT);
    await page.locator('#filter').fill('board.example');
    await page.locator('#registrations tr[data-user="2002"]').waitFor({ state: 'detached', ...WAIT });
    expect(await page.locator('#registrations tbody tr').count()).toBe(1);
    await expect.poll(() => page.locator('#registrations-count').textContent(), WAIT).toBe('1 matching');
    await page.locator('#filter').fill('');
    await page.locator('#registrations tr[data-user="2002"]').waitFor(WAIT);
    await screenshot(page, context.task.name);
    await page.close();
  }, TEST_TIMEOUT_MS);

  it('turns the lamp of a call on the other node to ringing, then busy, then idle', async (context) => {
    const page = await openBoard(a());
    const lamp = page.locator('#lamps li[data-user="2010@board.example"]');
    b().sim.fire(presenceEvent('ringing', '2010', 'board-call-1', 'board.example'));
    await page.locator('#lamps li[data-user="2010@board.example"][data-state="ringing"]').waitFor(WAIT);
    expect(await lamp.getAttribute('data-node')).toBe('fs-b');
    await screenshot(page, `${context.task.name} ringing`);
    b().sim.fire(presenceEvent('answered', '2010', 'board-call-1', 'board.example'));
    await page.locator('#lamps li[data-user="2010@board.example"][data-state="busy"]').waitFor(WAIT);
    await screenshot(page, `${context.task.name} busy`);
    b().sim.fire(presenceEvent('hangup', '2010', 'board-call-1', 'board.example'));
    await page.locator('#lamps li[data-user="2010@board.example"][data-state="idle"]').waitFor(WAIT);
    expect(await lamp.locator('.state-text').textContent()).toBe('idle');
    // From the event reaching fs-a's bridge to the tile drawn (same clock): reported, not asserted.
    const latencies = await page.evaluate(() => window.fsbBoard.lampLatencies);
    expect(latencies.length).toBeGreaterThanOrEqual(3);
    console.log(`board lamp latency, event at the bridge to tile drawn: ${latencies.map((ms) => `${ms} ms`).join(', ')}`);
    await screenshot(page, `${context.task.name} idle`);
    await page.close();
  }, TEST_TIMEOUT_MS);

  it('turns a peer that stops sending heartbeats down (red) without a reload, and up again', async (context) => {
    const page = await openBoard(a());
    await page.locator('#peers tr[data-peer="fs-b"][data-up="true"]').waitFor(WAIT);
    stopHeartbeats(b());
    try {
      await page.locator('#peers tr[data-peer="fs-b"][data-up="false"]').waitFor(WAIT);
      // Read in one go: the table is redrawn every second.
      const shown = await page.evaluate(() => {
        const cell = document.querySelector('#peers tr[data-peer="fs-b"] td.peer-state');
        const probe = document.createElement('span');
        probe.style.color = getComputedStyle(document.documentElement).getPropertyValue('--down').trim();
        document.body.append(probe);
        const red = getComputedStyle(probe).color;
        probe.remove();
        return { text: cell?.textContent, color: cell ? getComputedStyle(cell).color : null, red };
      });
      expect(shown.text).toBe('DOWN');
      expect(shown.color).toBe(shown.red);
      expect(shown.red).toMatch(/^rgb\(\d+, \d+, \d+\)$/);
      await screenshot(page, context.task.name);
    } finally {
      startHeartbeats(b());
    }
    await page.locator('#peers tr[data-peer="fs-b"][data-up="true"]').waitFor(WAIT);
    await page.close();
  }, TEST_TIMEOUT_MS);

  it('moves the traffic chart as events flow', async (context) => {
    const page = await openBoard(a());
    const canvas = page.locator('#traffic');
    await expect.poll(async () => Number(await canvas.getAttribute('data-samples')), WAIT).toBeGreaterThan(1);
    const before = await canvas.evaluate((c) => (c as unknown as Canvas).toDataURL());
    const samplesBefore = Number(await canvas.getAttribute('data-samples'));
    for (let i = 0; i < 200; i++) b().sim.fire(FsEvent.create('PRESENCE_IN').add('from', `30${i % 10}@board.example`).add('status', 'Available'));
    await expect.poll(async () => Number(await page.locator('#legend li[data-series="in_nats"]').textContent().then((t) => t!.match(/([\d.]+)\/s/)![1])), WAIT).toBeGreaterThan(10);
    await expect.poll(async () => Number(await canvas.getAttribute('data-samples')), WAIT).toBeGreaterThan(samplesBefore);
    expect(Number(await canvas.getAttribute('data-peak'))).toBeGreaterThan(10);
    expect(await canvas.evaluate((c) => (c as unknown as Canvas).toDataURL())).not.toBe(before);
    await screenshot(page, context.task.name);
    await page.close();
  }, TEST_TIMEOUT_MS);

  it('shows hostile names as text, fits a phone screen and is reachable by keyboard', async (context) => {
    const hostile = '<img src=x onerror="window.pwned=1">';
    b().sim.fire(registerEvent(hostile, 'board.example'));
    const page = await openBoard(a(), { width: 390, height: 844 });
    await page.locator('#registrations tbody tr td', { hasText: `${hostile}@board.example` }).waitFor(WAIT);
    expect(await page.evaluate(() => window.pwned)).toBeUndefined();
    expect(await page.locator('#registrations img').count()).toBe(0);
    // Nothing wider than the screen: tables scroll inside their own box.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    const focused: string[] = [];
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press('Tab');
      focused.push(await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName || ''));
    }
    expect(focused).toContain('filter');
    await screenshot(page, context.task.name);
    await page.close();
  }, TEST_TIMEOUT_MS);

  it('marks the registrations of a legacy mod_event_multicast node', async (context) => {
    // A board over a location consumer and a peer tracker fed the way the multicast source feeds them for a legacy sender
    // (datagrams without the bridge's sequence header); the page joins the two.
    const metrics = new Metrics();
    const pipeline = new Pipeline({ nodeName: 'fs-a', sinks: [], dedup: { maxEntries: 100, ttlMs: 60_000 }, inject: () => undefined, metrics, logger: silentLogger() });
    const peers = new PeerTracker(() => undefined, { timeoutMs: 60_000 });
    const location = new LocationConsumer({ enabled: true, sink: 'sqlite', dbPath: join(dir, 'legacy.db'), flushMs: 5, flushMaxRows: 100, busyTimeoutMs: 20, peerDownGraceMs: 1_000 });
    const consumerContext = fakeContext({ name: 'fs-a', hostname: 'host-fs-a', ipv4: '192.0.2.1', cluster: 'board' }, { withState: false });
    await location.start(consumerContext);
    const boardServer = new Board({ node: { name: 'fs-a', cluster: 'board' }, role: 'bridge', status: () => ({ esl: 'connected' }), peers: () => peers.list(), events: pipeline, metrics, consumers: [location] }, { user: 'operator', public: false }, silentLogger());
    const server = new StatusServer(metrics, { ready: () => true, status: () => ({}), peers: () => peers.list() }, [boardServer.route]);
    const { port } = await server.listen('127.0.0.1', 0);
    boardServer.start();
    try {
      for (const [sender, ipv4, user] of [['fs-legacy', '192.0.2.9', '2030'], ['fs-b', '192.0.2.2', '2031']] as const) {
        const register = registerEvent(user, 'board.example');
        register.add('Core-UUID', `uuid-${sender}`).add('Event-Sequence', '1').add('Event-Date-Timestamp', `${Date.now()}000`);
        register.add('FreeSWITCH-Switchname', sender).add('FreeSWITCH-Hostname', `host-${sender}`).add('FreeSWITCH-IPv4', ipv4);
        const item = { event: register, origin: { transport: 'multicast' as const, node: sender, receivedAt: Date.now() } };
        peers.heardFrom(sender, sender === 'fs-b');
        peers.observe(item);
        consumerContext.events.emit(item);
      }
      const page = await browser.context.newPage();
      await page.goto(`http://127.0.0.1:${port}/board/`);
      await page.locator('#registrations tr[data-user="2030"][data-legacy="true"]').waitFor(WAIT);
      expect(await page.locator('#registrations tr[data-user="2030"] .badge').textContent()).toBe('legacy multicast');
      await page.locator('#registrations tr[data-user="2031"][data-legacy="false"]').waitFor(WAIT);
      expect(await page.locator('#registrations tr[data-user="2031"] .badge').count()).toBe(0);
      expect(await page.locator('#peers tr[data-peer="fs-legacy"] .badge').textContent()).toBe('legacy');
      expect(await page.locator('#peers tr[data-peer="fs-legacy"] td').nth(5).textContent()).toBe('unknown');
      await screenshot(page, context.task.name);
      await page.close();
    } finally {
      boardServer.stop();
      await server.close();
      await location.stop();
    }
  }, TEST_TIMEOUT_MS);

  it('is served by the standalone consumer process too', async (context) => {
    const sim = await EslSimulator.start({ switchname: 'fs-c', hostname: 'host-fs-c', ipv4: '192.0.2.3' });
    sims.push(sim);
    const file = join(dir, 'consumer.xml');
    writeFileSync(file, configXml('fs-c', '192.0.2.3', { metrics: { enabled: 'yes', host: '127.0.0.1', port: '0', board: 'yes' } }).replace('name="port" value="1"', `name="port" value="${sim.port}"`));
    const child = spawn(process.execPath, cliArgs(['consumer', 'blf', '--config', file]), { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    // Port 0: its started line names the port it got and the board's address on it.
    const status = await until(() => loggedStatus(output, 'consumer started'), 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${output}`);
    });
    expect(status.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(status.board).toBe(`${status.url}/board/`);
    const page = await browser.context.newPage();
    await page.goto(status.board);
    await page.locator('#role', { hasText: 'consumer blf' }).waitFor(WAIT);
    b().sim.fire(presenceEvent('ringing', '2020', 'board-call-2', 'board.example'));
    await page.locator('#lamps li[data-user="2020@board.example"][data-state="ringing"]').waitFor(WAIT);
    expect(await page.locator('#registrations-section').isHidden()).toBe(true);
    await page.locator('#peers tr[data-peer="fs-b"][data-up="true"]').waitFor(WAIT);
    await screenshot(page, context.task.name);
    await page.close();
    child.kill('SIGTERM');
  }, TEST_TIMEOUT_MS);
});
