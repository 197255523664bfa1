import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import fc from 'fast-check';
import type { Lamp, LampSource, Registration, RegistrationSource } from '../../bridge/consumer.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import type { BoardConfig } from '../../bridge/config/types.js';
import { BoardExposedError } from '../../bridge/errors.js';
import { FsEvent } from '../../bridge/event/event.js';
import { Board, boardAssetsDir, sseFrame, type BoardSource } from '../../bridge/observability/board/board.js';
import { StatusServer } from '../../bridge/observability/http.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Pipeline } from '../../bridge/pipeline/pipeline.js';
import { PeerTracker } from '../../bridge/pipeline/peers.js';
import { LampTable } from '../../consumers/blf/lamps.js';
import { until } from '../support/wait.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

class FakeLamps implements LampSource {
  readonly table = new LampTable();
  currentLamps(): Lamp[] {
    return this.table.list();
  }
  onLampChange(listener: (lamp: Lamp) => void): () => void {
    return this.table.subscribe(listener);
  }
}

class FakeRegistrations implements RegistrationSource {
  rows: Registration[] = [];
  private readonly listeners = new Set<() => void>();
  currentRegistrations(limit: number, filter = ''): { rows: Registration[]; total: number } {
    const rows = this.rows.filter((r) => r.user.includes(filter) || r.node.includes(filter));
    return { rows: rows.slice(0, limit), total: rows.length };
  }
  onRegistrationChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  changed(): void {
    for (const listener of this.listeners) listener();
  }
}

const running: { server: StatusServer; board: Board }[] = [];

afterEach(async () => {
  for (const { server, board } of running.splice(0)) {
    board.stop();
    await server.close();
  }
});

async function serve(config: Partial<BoardConfig> = {}) {
  const metrics = new Metrics();
  const pipeline = new Pipeline({ nodeName: 'fs-a', sinks: [], dedup: { maxEntries: 100, ttlMs: 1000 }, inject: () => undefined, metrics, logger: silentLogger() });
  const peers = new PeerTracker((event, peer) => pipeline.publish({ event, origin: { transport: 'multicast', node: peer, receivedAt: Date.now() } }), { timeoutMs: 60_000 });
  const lamps = new FakeLamps();
  const registrations = new FakeRegistrations();
  const source: BoardSource = { node: { name: 'fs-a', cluster: 'test' }, role: 'bridge', status: () => ({ esl: 'connected', nats: 'off' }), peers: () => peers.list(), events: pipeline, metrics, consumers: [lamps, registrations, {}] };
  const board = new Board(source, { user: 'operator', public: false, ...config }, silentLogger());
  const server = new StatusServer(metrics, { ready: () => true, status: () => ({}), peers: () => peers.list() }, [board.route]);
  const address = await server.listen('127.0.0.1', 0);
  board.start();
  running.push({ server, board });
  return { url: `http://127.0.0.1:${address.port}`, board, metrics, peers, lamps, registrations, pipeline };
}

/** Reads server-sent events from `url` until `done` says so; returns them in order. */
async function readEvents(url: string, done: (events: { type: string; data: unknown }[]) => boolean, init: RequestInit = {}): Promise<{ type: string; data: unknown }[]> {
  const controller = new AbortController();
  const response = await fetch(url, { ...init, signal: controller.signal });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
  const events: { type: string; data: unknown }[] = [];
  const decoder = new TextDecoder();
  let buffered = '';
  const timer = setTimeout(() => controller.abort(), 15_000);
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const type = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (type !== undefined && data !== undefined) events.push({ type, data: JSON.parse(data) });
      }
      if (done(events)) break;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return events;
}

describe('cluster board server', () => {
  it('serves the page, its script and style with a strict content security policy, and 404s the rest', async () => {
    const { url } = await serve();
    const page = await fetch(`${url}/board/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await page.text();
    expect(html).toContain('<script type="module" src="board.js"></script>');
    // Nothing from outside: no absolute URLs anywhere in the page, its script or its style.
    for (const path of ['/board/', '/board/board.js', '/board/chart.js', '/board/board.css']) {
      const response = await fetch(url + path);
      expect(response.status, path).toBe(200);
      expect(await response.text(), path).not.toMatch(/https?:\/\/|@import|url\(/);
    }
    expect((await fetch(`${url}/board`, { redirect: 'manual' })).headers.get('location')).toBe('/board/');
    expect((await fetch(`${url}/board/nothing`)).status).toBe(404);
    expect((await fetch(`${url}/board/`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${url}/metrics`)).status).toBe(200);
  });

  it('streams a snapshot, then lamp changes at once, registrations filtered on the server, and peers going down', async () => {
    const { url, lamps, registrations, peers, metrics } = await serve();
    registrations.rows = [
      { user: '1000', realm: 'r', node: 'fs-b', hostname: 'host-b', address: '192.0.2.2', transport: 'UDP', expiresAt: null },
      { user: '1001', realm: 'r', node: 'fs-c', hostname: 'host-c', address: '192.0.2.3', transport: 'TLS', expiresAt: 5 },
    ];
    peers.observe({ event: FsEvent.create('HEARTBEAT'), origin: { transport: 'nats', node: 'fs-b', receivedAt: Date.now() } });
    metrics.drops.inc({ component: 'multicast-receive', cause: 'bad_psk' }, 3);
    const seen = readEvents(`${url}/board/events?filter=fs-c`, (events) => events.some((e) => e.type === 'lamp') && events.some((e) => e.type === 'drops'));
    await until(() => true);
    setTimeout(() => lamps.table.update('1000@r', 'call-1', 'ringing', 'fs-b', Date.now()), 100);
    const events = await seen;
    const types = events.map((e) => e.type);
    expect(types.slice(0, 7)).toEqual(['hello', 'status', 'peers', 'lamps', 'registrations', 'traffic', 'drops']);
    expect(events[0].data).toMatchObject({ node: 'fs-a', cluster: 'test', role: 'bridge', lamps: true, registrations: true });
    expect(events[2].data).toEqual([expect.objectContaining({ name: 'fs-b', up: true, transports: ['nats'], legacy: false, heartbeatAgeMs: expect.any(Number) })]);
    expect(events[4].data).toEqual({ rows: [registrations.rows[1]], total: 1, filter: 'fs-c' });
    expect(events.find((e) => e.type === 'lamp')!.data).toEqual([{ user: '1000@r', state: 'ringing', node: 'fs-b', since: expect.any(Number) }]);
    expect(events.find((e, i) => e.type === 'drops' && i > 6)?.data ?? events[6].data).toEqual(expect.arrayContaining([expect.objectContaining({ component: 'multicast-receive', cause: 'bad_psk', total: 3 })]));
  });

  it('sends registration changes to each page for its own filter, coalesced, and only when its rows changed', async () => {
    const { url, registrations } = await serve();
    const row = (user: string, node: string): Registration => ({ user, realm: 'r', node, hostname: node, address: '192.0.2.9', transport: null, expiresAt: null });
    const frames = readEvents(`${url}/board/events?filter=fs-b`, (events) => events.filter((e) => e.type === 'registrations').length >= 2);
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Not this page's filter: no frame for it.
    registrations.rows = [row('1', 'fs-c')];
    registrations.changed();
    await new Promise((resolve) => setTimeout(resolve, 400));
    for (let i = 0; i < 50; i++) {
      registrations.rows = [...registrations.rows, row(`2${i}`, 'fs-b')];
      registrations.changed();
    }
    const regs = (await frames).filter((e) => e.type === 'registrations').map((e) => e.data as { rows: Registration[]; total: number });
    expect(regs[0]).toEqual({ rows: [], total: 0, filter: 'fs-b' });
    expect(regs[1].total).toBe(50);
  });

  it('marks a peer down at once on peerdown', async () => {
    const { url, peers } = await serve();
    let now = Date.now();
    const tracker = peers as unknown as { now: () => number };
    tracker.now = () => now;
    peers.observe({ event: FsEvent.create('HEARTBEAT'), origin: { transport: 'multicast', node: 'fs-b', receivedAt: now } });
    const events = readEvents(`${url}/board/events`, (list) => list.some((e) => e.type === 'peers' && (e.data as { up: boolean }[])[0]?.up === false));
    await new Promise((resolve) => setTimeout(resolve, 100));
    now += 120_000;
    peers.check();
    const down = (await events).filter((e) => e.type === 'peers').at(-1)!.data as { name: string; up: boolean }[];
    expect(down).toEqual([expect.objectContaining({ name: 'fs-b', up: false })]);
  });

  it('with a token: 401 without it; Bearer works; ?token= trades it for a cookie that works; wrong ones are refused', async () => {
    const { url } = await serve({ token: 's3cret token' });
    expect((await fetch(`${url}/board/`)).status).toBe(401);
    expect((await fetch(`${url}/board/events`)).status).toBe(401);
    expect((await fetch(`${url}/board/`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(`${url}/board/`, { headers: { authorization: 'Bearer s3cret token' } })).status).toBe(200);
    const traded = await fetch(`${url}/board/?token=${encodeURIComponent('s3cret token')}&filter=x`, { redirect: 'manual' });
    expect(traded.status).toBe(303);
    expect(traded.headers.get('location')).toBe('/board/?filter=x');
    const cookie = traded.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^fsb_board=[0-9a-f]{64}; Path=\/board; HttpOnly; SameSite=Strict$/);
    expect(cookie).not.toContain('s3cret');
    const value = cookie.split(';')[0];
    expect((await fetch(`${url}/board/board.js`, { headers: { cookie: value } })).status).toBe(200);
    expect((await fetch(`${url}/board/`, { headers: { cookie: `fsb_board=${'0'.repeat(64)}` } })).status).toBe(401);
    expect((await fetch(`${url}/board/?token=nope`, { redirect: 'manual' })).status).toBe(401);
    // The rest of the status server is unaffected.
    expect((await fetch(`${url}/metrics`)).status).toBe(200);
  });

  it('with a password: basic auth, with a challenge browsers answer', async () => {
    const { url } = await serve({ user: 'noc', password: 'pa:ss' });
    const refused = await fetch(`${url}/board/`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Basic realm="fs-event-bridge board", charset="UTF-8"');
    const basic = (user: string, pass: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` });
    expect((await fetch(`${url}/board/`, { headers: basic('noc', 'pa:ss') })).status).toBe(200);
    expect((await fetch(`${url}/board/`, { headers: basic('noc', 'pa:sS') })).status).toBe(401);
    expect((await fetch(`${url}/board/`, { headers: basic('operator', 'pa:ss') })).status).toBe(401);
  });

  it('SSE frames stay one event whatever unicode the cluster sends (lone surrogates, NUL, CR/LF, U+2028)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 50 }), (user, node) => {
        const frame = sseFrame('lamp', JSON.stringify([{ user, state: 'busy', node, since: 1 }]));
        // The SSE grammar ends a line at CR, LF or CRLF: exactly the two lines plus the blank one.
        const lines = frame.split(/\r\n|\r|\n/);
        if (lines.length !== 4 || lines[0] !== 'event: lamp' || lines[2] !== '' || lines[3] !== '') return false;
        const [lamp] = JSON.parse(lines[1].slice('data: '.length)) as { user: string; node: string }[];
        return lamp.user === user && lamp.node === node;
      }),
    );
  }, 90_000);
});

describe('lamp table (what the BLF consumer exposes)', () => {
  it('busy beats ringing, a call only moves forward, a dead node puts its calls out, since is when the lamp changed', () => {
    const table = new LampTable();
    const changes: Lamp[] = [];
    table.subscribe((lamp) => changes.push(lamp));
    table.update('1000@r', 'c1', 'ringing', 'fs-b', 10);
    table.update('1000@r', 'c2', 'busy', 'fs-c', 20);
    table.update('1000@r', 'c1', 'busy', 'fs-b', 30); // still busy: no change of lamp state, but the call that set it is now c1 on fs-b
    table.update('1000@r', 'c1', 'ringing', 'fs-b', 40); // late copy: ignored
    expect(changes.map((l) => [l.state, l.node, l.since])).toEqual([
      ['ringing', 'fs-b', 10],
      ['busy', 'fs-c', 20],
      ['busy', 'fs-b', 20],
    ]);
    table.nodeDown('fs-b', 50);
    expect(table.list()).toEqual([{ user: '1000@r', state: 'busy', node: 'fs-c', since: 20 }]);
    table.update('1000@r', 'c2', 'idle', 'fs-c', 60);
    expect(table.list()).toEqual([{ user: '1000@r', state: 'idle', node: 'fs-c', since: 60 }]);
    table.update('1000@r', 'c2', 'busy', 'fs-c', 70); // an ended call never relights
    expect(table.list()[0].state).toBe('idle');
    // ...unless its node comes back with it still up (the BLF consumer relights it from the state bucket).
    table.relight('1000@r', 'c1', 'busy', 'fs-b', 80);
    expect(table.list()).toEqual([{ user: '1000@r', state: 'busy', node: 'fs-b', since: 80 }]);
  });
});

describe('board config', () => {
  const load = (metrics: Record<string, string>) => loadConfigText(defaultConfigXml({ settings: { 'node-name': 'fs-a' }, multicast: { enabled: 'no' }, metrics }), 'test.xml');

  it('is off by default; on loopback it needs no credentials and warns about nothing', () => {
    expect(load({}).config.metrics.board).toBeNull();
    const { config, warnings } = load({ board: 'yes' });
    expect(config.metrics.board).toEqual({ user: 'operator', public: false, token: undefined, password: undefined });
    expect(warnings).toEqual([]);
  });

  it('refuses a non-loopback host without credentials, warns loudly with board-public, warns about clear text with a credential', () => {
    expect(() => load({ host: '0.0.0.0', board: 'yes' })).toThrow(BoardExposedError);
    expect(() => load({ host: '0.0.0.0', board: 'yes' })).toThrow(/FSB_ERR_BOARD_EXPOSED|board-token or board-password/);
    const open = load({ host: '0.0.0.0', board: 'yes', 'board-public': 'yes' });
    expect(open.warnings.join('\n')).toMatch(/SECURITY: the cluster board is served WITHOUT authentication on 0\.0\.0\.0/);
    const guarded = load({ host: '10.0.0.5', board: 'yes', 'board-token': 'tok' });
    expect(guarded.config.metrics.board?.token).toBe('tok');
    expect(guarded.warnings.join('\n')).toMatch(/travel in clear over HTTP on 10\.0\.0\.5/);
    expect(guarded.warnings.join('\n')).not.toContain('tok');
    expect(load({ host: '0.0.0.0', board: 'no' }).config.metrics.board).toBeNull();
    expect(load({ host: '::1', board: 'yes' }).warnings).toEqual([]);
  });
});

describe('board assets', () => {
  it('are found from the sources and from dist/, and are in the npm package', () => {
    const fromSources = boardAssetsDir(pathToFileURL(`${REPO}bridge/observability/board/board.ts`).href);
    const fromDist = boardAssetsDir(pathToFileURL(`${REPO}dist/bridge/observability/board/board.js`).href);
    expect(fromSources).toBe(`${REPO}bridge/observability/board/assets`);
    expect(fromDist).toBe(fromSources);
    const files = (JSON.parse(readFileSync(`${REPO}package.json`, 'utf8')) as { files: string[] }).files;
    expect(files).toContain('bridge/observability/board/assets');
    const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as { files: { path: string }[] }[];
    const paths = packed[0].files.map((f) => f.path);
    for (const file of ['index.html', 'board.js', 'chart.js', 'board.css']) expect(paths).toContain(`bridge/observability/board/assets/${file}`);
    expect(paths).toContain('dist/bridge/observability/board/board.js');
  }, 120_000);
});
