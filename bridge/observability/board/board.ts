import { createHash, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BoardConfig } from '../../config/types.js';
import { isLampSource, isRegistrationSource, type EventStream, type Lamp, type LampSource, type Registration, type RegistrationSource } from '../../consumer.js';
import { MulticastSubclass } from '../../event/names.js';
import type { PeerInfo } from '../../pipeline/peers.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

/** What the board shows, from the process that serves it (a bridge, or a standalone consumer). */
export interface BoardSource {
  node: { name: string; cluster: string };
  /** `bridge`, `consumer blf`, ... */
  role: string;
  /** Component states (esl, nats, multicast...), as /health reports them. */
  status(): Record<string, unknown>;
  peers(): PeerInfo[];
  /** Watched for peerup/peerdown, so a peer turns red at once rather than at the next tick. */
  events: EventStream;
  metrics: Metrics;
  /** Those implementing LampSource or RegistrationSource feed the lamps and the registrations. */
  consumers: readonly unknown[];
}

/** One sample a second, ten minutes kept: what the traffic chart draws. */
export const TRAFFIC_INTERVAL_MS = 1_000;
export const TRAFFIC_SAMPLES = 600;
/** Registration rows sent to one page (the filter box narrows them on the server). */
export const REGISTRATION_ROWS = 500;
const MAX_CLIENTS = 64;
/** A page that reads slower than this much queued output is disconnected (its EventSource reconnects and gets a fresh snapshot). */
const MAX_CLIENT_BACKLOG_BYTES = 1024 * 1024;
/** Registration changes are coalesced this long: a resync of 100k rows must not become 100k frames. */
const REGISTRATION_COALESCE_MS = 200;
const MAX_FILTER_CHARS = 200;
const COOKIE = 'fsb_board';

const SERIES = ['in_esl', 'in_multicast', 'in_nats', 'out_multicast', 'out_nats', 'injected'] as const;
type Series = (typeof SERIES)[number];

interface Client {
  res: ServerResponse;
  filter: string;
  lastRegistrations: string;
}

export interface PeerRow extends Omit<PeerInfo, 'lastHeartbeat'> {
  heartbeatAgeMs: number | null;
  eventsPerSecond: number;
}

export interface DropRow {
  component: string;
  cause: string;
  total: number;
  /** Increase over the last minute (or since the board started, if sooner). */
  lastMinute: number;
}

/**
 * The directory of the board's page, script and style sheet. They are plain files
 * kept beside the sources (no build step); from dist/ they are found in the package's
 * own bridge/observability/board/assets, which package.json "files" ships.
 */
export function boardAssetsDir(moduleUrl: string = import.meta.url): string {
  const here = dirname(fileURLToPath(moduleUrl));
  const beside = join(here, 'assets');
  if (existsSync(join(beside, 'index.html'))) return beside;
  for (let dir = here; dirname(dir) !== dir; dir = dirname(dir)) {
    const candidate = join(dir, 'bridge', 'observability', 'board', 'assets');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
  }
  throw new Error(`board assets not found near ${here}`);
}

const ASSETS: Record<string, { file: string; type: string }> = {
  '/board/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/board/board.css': { file: 'board.css', type: 'text/css; charset=utf-8' },
  '/board/board.js': { file: 'board.js', type: 'text/javascript; charset=utf-8' },
  '/board/chart.js': { file: 'chart.js', type: 'text/javascript; charset=utf-8' },
};

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/**
 * One server-sent event. `json` comes from JSON.stringify, which escapes every line
 * break and control character (and lone surrogates), so `data:` stays one line
 * whatever the strings from the cluster hold.
 */
export function sseFrame(type: string, json: string): string {
  return `event: ${type}\ndata: ${json}\n\n`;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Constant-time comparison of a presented secret with the configured one. */
function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * The cluster board: one page showing the cluster as this process sees it (BLF lamps,
 * registrations, peers, traffic, drops), live over server-sent events. A page gets a
 * full snapshot when it connects, then only changes: lamps at once (batched per event
 * loop turn), registrations coalesced, peers and traffic once a second, and peers at
 * once on peerup/peerdown. Nothing on the page polls.
 *
 * Served by the status server (StatusServer routes). Reads consumers only through the
 * LampSource and RegistrationSource interfaces.
 */
export class Board {
  private readonly clients = new Set<Client>();
  private readonly assets = new Map<string, { body: Buffer; type: string }>();
  private readonly lampSources: LampSource[];
  private readonly registrationSources: RegistrationSource[];
  private readonly unsubscribes: (() => void)[] = [];
  private readonly traffic: { t: number[]; values: Record<Series, number[]> } = { t: [], values: Object.fromEntries(SERIES.map((s) => [s, []])) as unknown as Record<Series, number[]> };
  private lastTotals: Record<Series, number> | null = null;
  private lastSampleAt = 0;
  private readonly dropHistory: Map<string, number>[] = [];
  private drops: DropRow[] = [];
  private lastPeerEvents = new Map<string, { at: number; events: number; rate: number }>();
  private pendingLamps = new Map<string, Lamp>();
  private lampFlush: NodeJS.Immediate | null = null;
  private peerFlush: NodeJS.Immediate | null = null;
  private registrationTimer: NodeJS.Timeout | null = null;
  private sampleTimer: NodeJS.Timeout | null = null;
  private readonly cookieValue: string | null;
  private running = false;

  constructor(
    private readonly source: BoardSource,
    private readonly config: BoardConfig,
    private readonly logger: Logger,
    assetsDir: string = boardAssetsDir(),
  ) {
    for (const [path, { file, type }] of Object.entries(ASSETS)) this.assets.set(path, { body: readFileSync(join(assetsDir, file)), type });
    this.lampSources = source.consumers.filter(isLampSource);
    this.registrationSources = source.consumers.filter(isRegistrationSource);
    this.cookieValue = config.token !== undefined ? digest(`fs-event-bridge board ${config.token}`).toString('hex') : null;
  }

  /** Start following changes and sampling traffic (call once the consumers have started). */
  start(): void {
    this.running = true;
    for (const lamps of this.lampSources) this.unsubscribes.push(lamps.onLampChange((lamp) => this.queueLamp(lamp)));
    for (const registrations of this.registrationSources) this.unsubscribes.push(registrations.onRegistrationChange(() => this.queueRegistrations()));
    this.unsubscribes.push(
      this.source.events.subscribe((item) => {
        const subclass = item.event.name === 'CUSTOM' ? item.event.subclass : undefined;
        if (subclass === MulticastSubclass.PeerUp || subclass === MulticastSubclass.PeerDown) this.queuePeers();
      }),
    );
    void this.sample();
    this.sampleTimer = setInterval(() => void this.sample(), TRAFFIC_INTERVAL_MS);
    this.sampleTimer.unref();
  }

  stop(): void {
    this.running = false;
    for (const unsubscribe of this.unsubscribes.splice(0)) unsubscribe();
    if (this.sampleTimer) clearInterval(this.sampleTimer);
    if (this.registrationTimer) clearTimeout(this.registrationTimer);
    if (this.lampFlush) clearImmediate(this.lampFlush);
    if (this.peerFlush) clearImmediate(this.peerFlush);
    this.sampleTimer = this.registrationTimer = this.lampFlush = this.peerFlush = null;
    for (const client of this.clients) client.res.end();
    this.clients.clear();
  }

  /** StatusServer route: everything under /board. */
  readonly route = (req: IncomingMessage, res: ServerResponse, path: string): boolean => {
    if (path !== '/board' && !path.startsWith('/board/')) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', ...SECURITY_HEADERS }).end();
      return true;
    }
    const url = new URL(req.url ?? '/', 'http://board');
    if (path === '/board') {
      res.writeHead(308, { location: `/board/${url.search}`, ...SECURITY_HEADERS }).end();
      return true;
    }
    if (!this.authorized(req, res, url)) return true;
    const asset = this.assets.get(path);
    if (asset) {
      res.writeHead(200, { 'content-type': asset.type, 'content-length': asset.body.length, ...SECURITY_HEADERS });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
    } else if (path === '/board/events') {
      this.openStream(req, res, (url.searchParams.get('filter') ?? '').slice(0, MAX_FILTER_CHARS));
    } else if (path === '/board/snapshot') {
      res.writeHead(200, { 'content-type': 'application/json', ...SECURITY_HEADERS });
      res.end(JSON.stringify(this.snapshot((url.searchParams.get('filter') ?? '').slice(0, MAX_FILTER_CHARS))));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain', ...SECURITY_HEADERS }).end('not found');
    }
    return true;
  };

  /** Everything a page shows, as it is now. */
  snapshot(filter = ''): Record<string, unknown> {
    return {
      hello: this.hello(),
      status: this.statusFrame(),
      peers: this.peerRows(),
      lamps: this.lamps(),
      registrations: this.registrations(filter),
      traffic: { intervalMs: TRAFFIC_INTERVAL_MS, t: this.traffic.t, values: this.traffic.values },
      drops: this.drops,
    };
  }

  private authorized(req: IncomingMessage, res: ServerResponse, url: URL): boolean {
    const { token, password, user } = this.config;
    if (token === undefined && password === undefined) return true;
    const header = req.headers.authorization ?? '';
    if (token !== undefined) {
      if (header.startsWith('Bearer ') && sameSecret(header.slice(7), token)) return true;
      const cookie = /(?:^|;\s*)fsb_board=([0-9a-f]{64})(?:;|$)/.exec(req.headers.cookie ?? '')?.[1];
      if (cookie !== undefined && sameSecret(cookie, this.cookieValue!)) return true;
      const query = url.searchParams.get('token');
      if (query !== null && sameSecret(query, token)) {
        // Trade the token in the address bar (history, screenshots) for a cookie scoped to the board.
        url.searchParams.delete('token');
        res.writeHead(303, {
          location: `${url.pathname}${url.search}`,
          'set-cookie': `${COOKIE}=${this.cookieValue}; Path=/board; HttpOnly; SameSite=Strict`,
          ...SECURITY_HEADERS,
        });
        res.end();
        return false;
      }
    }
    if (password !== undefined && header.startsWith('Basic ')) {
      const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon >= 0 && sameSecret(decoded.slice(0, colon), user) && sameSecret(decoded.slice(colon + 1), password)) return true;
    }
    const challenge: Record<string, string> = password !== undefined ? { 'www-authenticate': 'Basic realm="fs-event-bridge board", charset="UTF-8"' } : {};
    res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8', ...challenge, ...SECURITY_HEADERS });
    res.end(token !== undefined ? 'board: credentials required (Authorization: Bearer <board-token>, or open /board/?token=<board-token>)\n' : 'board: credentials required\n');
    return false;
  }

  private openStream(req: IncomingMessage, res: ServerResponse, filter: string): void {
    if (this.clients.size >= MAX_CLIENTS) {
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '5', ...SECURITY_HEADERS }).end(`board: at most ${MAX_CLIENTS} pages at once\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive', ...SECURITY_HEADERS });
    req.socket.setNoDelay(true);
    const client: Client = { res, filter, lastRegistrations: '' };
    this.clients.add(client);
    const forget = () => this.clients.delete(client);
    res.once('close', forget);
    // An EventSource that reconnects waits this long (the default is 3 s: too slow for a board).
    res.write('retry: 1000\n\n');
    const snapshot = this.snapshot(filter);
    for (const [type, data] of Object.entries(snapshot)) {
      const frame = JSON.stringify(data);
      if (type === 'registrations') client.lastRegistrations = frame;
      this.write(client, type, frame);
    }
  }

  private write(client: Client, type: string, json: string): void {
    if (client.res.writableLength > MAX_CLIENT_BACKLOG_BYTES) {
      this.logger.info({ component: 'board', backlog: client.res.writableLength }, 'board page too slow to follow; disconnected (it reconnects with a fresh snapshot)');
      this.clients.delete(client);
      client.res.destroy();
      return;
    }
    client.res.write(sseFrame(type, json));
  }

  private broadcast(type: string, data: unknown): void {
    if (this.clients.size === 0) return;
    const json = JSON.stringify(data);
    for (const client of this.clients) this.write(client, type, json);
  }

  private hello(): Record<string, unknown> {
    return { node: this.source.node.name, cluster: this.source.node.cluster, role: this.source.role, lamps: this.lampSources.length > 0, registrations: this.registrationSources.length > 0, rowLimit: REGISTRATION_ROWS };
  }

  private statusFrame(): Record<string, unknown> {
    return { now: Date.now(), ...this.source.status() };
  }

  private lamps(): Lamp[] {
    return this.lampSources.flatMap((source) => source.currentLamps());
  }

  private queueLamp(lamp: Lamp): void {
    this.pendingLamps.set(lamp.user, lamp);
    // One frame per event loop turn: a burst of calls becomes one write per page, and a lamp still leaves within the turn of its event.
    this.lampFlush ??= setImmediate(() => {
      this.lampFlush = null;
      const changed = [...this.pendingLamps.values()];
      this.pendingLamps.clear();
      this.broadcast('lamp', changed);
    });
  }

  private registrations(filter: string): { rows: Registration[]; total: number; filter: string } {
    const rows: Registration[] = [];
    let total = 0;
    for (const source of this.registrationSources) {
      const part = source.currentRegistrations(REGISTRATION_ROWS, filter);
      rows.push(...part.rows);
      total += part.total;
    }
    return { rows: rows.slice(0, REGISTRATION_ROWS), total, filter };
  }

  private queueRegistrations(): void {
    this.registrationTimer ??= setTimeout(() => {
      this.registrationTimer = null;
      const byFilter = new Map<string, string>();
      for (const client of this.clients) {
        let frame = byFilter.get(client.filter);
        if (frame === undefined) {
          frame = JSON.stringify(this.registrations(client.filter));
          byFilter.set(client.filter, frame);
        }
        if (frame === client.lastRegistrations) continue;
        client.lastRegistrations = frame;
        this.write(client, 'registrations', frame);
      }
    }, REGISTRATION_COALESCE_MS);
    this.registrationTimer.unref();
  }

  private queuePeers(): void {
    this.peerFlush ??= setImmediate(() => {
      this.peerFlush = null;
      this.broadcast('peers', this.peerRows());
      this.broadcast('status', this.statusFrame());
    });
  }

  private peerRows(): PeerRow[] {
    const now = Date.now();
    return this.source.peers().map(({ lastHeartbeat, ...peer }) => ({
      ...peer,
      heartbeatAgeMs: lastHeartbeat === null ? null : Math.max(0, now - lastHeartbeat),
      eventsPerSecond: this.lastPeerEvents.get(peer.name)?.rate ?? 0,
    }));
  }

  /** Once a second: traffic rates, per-peer event rates, drops by cause; then peers and status go to every page. */
  private async sample(): Promise<void> {
    const now = Date.now();
    const totals = Object.fromEntries(SERIES.map((s) => [s, 0])) as Record<Series, number>;
    const metrics = this.source.metrics;
    for (const v of (await metrics.eventsIn.get()).values) {
      const key = `in_${String(v.labels.transport)}` as Series;
      if (key in totals) totals[key] += v.value;
    }
    for (const v of (await metrics.eventsOut.get()).values) {
      const key = `out_${String(v.labels.transport)}` as Series;
      if (key in totals) totals[key] += v.value;
    }
    for (const v of (await metrics.injected.get()).values) totals.injected += v.value;
    const dropTotals = new Map<string, number>();
    for (const v of (await metrics.drops.get()).values) dropTotals.set(`${String(v.labels.component)}\u0000${String(v.labels.cause)}`, v.value);
    if (!this.running) return;

    const previous = this.lastTotals;
    const seconds = (now - this.lastSampleAt) / 1000;
    this.lastTotals = totals;
    this.lastSampleAt = now;
    if (previous && seconds > 0) {
      this.traffic.t.push(now);
      for (const s of SERIES) this.traffic.values[s].push(Math.max(0, Math.round(((totals[s] - previous[s]) / seconds) * 10) / 10));
      if (this.traffic.t.length > TRAFFIC_SAMPLES) {
        this.traffic.t.shift();
        for (const s of SERIES) this.traffic.values[s].shift();
      }
      this.broadcast('sample', { t: now, values: Object.fromEntries(SERIES.map((s) => [s, this.traffic.values[s].at(-1)])) });
    }

    const minuteAgo = this.dropHistory[0] ?? new Map<string, number>();
    this.dropHistory.push(dropTotals);
    if (this.dropHistory.length > 60) this.dropHistory.shift();
    this.drops = [...dropTotals]
      .map(([key, total]) => {
        const [component, cause] = key.split('\u0000');
        return { component, cause, total, lastMinute: total - (minuteAgo.get(key) ?? 0) };
      })
      .sort((a, b) => b.total - a.total || a.component.localeCompare(b.component) || a.cause.localeCompare(b.cause));
    this.broadcast('drops', this.drops);

    const rates = new Map<string, { at: number; events: number; rate: number }>();
    for (const peer of this.source.peers()) {
      const last = this.lastPeerEvents.get(peer.name);
      const dt = last ? (now - last.at) / 1000 : 0;
      rates.set(peer.name, { at: now, events: peer.eventsReceived, rate: last && dt > 0 ? Math.round(((peer.eventsReceived - last.events) / dt) * 10) / 10 : 0 });
    }
    this.lastPeerEvents = rates;
    this.broadcast('peers', this.peerRows());
    this.broadcast('status', this.statusFrame());
  }
}
