/**
 * What the real-FreeSWITCH suite drives: the two nodes over ESL (FsNode), a bridge
 * process on a node's network (BridgeProcess), a NATS server beside the phones, and
 * SIP phones (SipUa) on the phones' address.
 *
 * The suite itself runs where the phones live (e.g. `ip netns exec labP npm run
 * test:freeswitch`): phones and the suite's own ESL connections start from there,
 * and whatever must run on a node's network (the bridge under test) is started with
 * that node's command prefix. A NATS server runs here too, listening on the phones'
 * address, which both nodes reach.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { EslFrameParser, type EslFrame } from '../../bridge/esl/frame-parser.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { EslClient } from '../../bridge/sources/esl/client.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { cliArgs } from '../support/cli.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { SipUa, type SipUaOptions } from '../support/sip-ua.js';
import { until } from '../support/wait.js';
import { loadLabEnv, type LabEnv, type NodeEnv } from './env.js';

let cachedEnv: LabEnv | null = null;

export function labEnv(): LabEnv {
  cachedEnv ??= loadLabEnv();
  return cachedEnv;
}

/** What a node says about itself (asked over ESL, never configured twice). */
export interface NodeInfo {
  switchname: string;
  hostname: string;
  /** The address other nodes reach this node on (its SIP host). */
  ipv4: string;
  dbDir: string;
  confDir: string;
}

/** One FreeSWITCH node: an ESL connection from the suite, and every event it subscribed to, kept for waitFor. */
export class FsNode {
  readonly events: FsEvent[] = [];
  /** Date.now() when each of `events` arrived here. */
  readonly arrivals: number[] = [];
  private readonly waiters = new Set<{ match: (e: FsEvent) => boolean; resolve: (e: FsEvent) => void }>();
  private observer: net.Socket | null = null;

  private constructor(
    readonly env: NodeEnv,
    readonly esl: EslClient,
    readonly info: NodeInfo,
  ) {}

  /**
   * `subscription`: events to collect (ESL `event plain` list), e.g. 'PRESENCE_IN CUSTOM
   * multicast::event'. They come over a second, raw connection: the bridge's EslClient
   * (used here for api and sendevent) drops what carries its loop guard, which is what
   * the suite wants to see a bridge inject.
   */
  static async connect(env: NodeEnv, subscription = ''): Promise<FsNode> {
    const esl = new EslClient(
      { host: env.esl.host, port: env.esl.port, password: env.eslPassword, reconnectMaxMs: 500, queueMaxEvents: 10_000, queueMaxBytes: 64 * 1024 * 1024, maxFrameBytes: 16 * 1024 * 1024, commandTimeoutMs: 10_000 },
      { subscription: 'HEARTBEAT', logger: silentLogger(), metrics: new Metrics(), nodeName: `suite-${env.key}` },
    );
    esl.start();
    try {
      await esl.ready(10_000);
    } catch (error) {
      await esl.stop();
      throw new Error(`node ${env.key.toUpperCase()}: ESL ${env.esl.host}:${env.esl.port} not reachable from here (${(error as Error).message}). Run the suite where FSB_FS_PHONE_IP lives.`);
    }
    const api = async (command: string) => (await esl.api(command)).trim();
    const info: NodeInfo = {
      switchname: await api('switchname'),
      hostname: await api('hostname'),
      ipv4: env.sip.host,
      dbDir: await api('global_getvar db_dir'),
      confDir: await api('global_getvar conf_dir'),
    };
    const node = new FsNode(env, esl, info);
    if (subscription) node.observe(subscription);
    return node;
  }

  get name(): string {
    return this.info.switchname;
  }

  async api(command: string): Promise<string> {
    return (await this.esl.api(command)).trim();
  }

  /** `sendevent` as any ESL client would (no loop guard: the node's bridge sees it as a local event). */
  async fire(event: FsEvent): Promise<void> {
    await this.esl.sendEvent(event);
  }

  /** First collected event at or after index `from` matching `match`. */
  waitForEvent(match: (e: FsEvent) => boolean, timeoutMs = 10_000, from = 0): Promise<FsEvent> {
    const found = this.events.slice(from).find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve: (e: FsEvent) => (clearTimeout(timer), this.waiters.delete(waiter), resolve(e)) };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`node ${this.name}: no matching event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** When the first collected event matching `match` arrived, or null. */
  arrivalOf(match: (e: FsEvent) => boolean): number | null {
    const index = this.events.findIndex(match);
    return index < 0 ? null : this.arrivals[index];
  }

  /** The db_data rows of mod_db (call_limit), via the node's own `db` API. */
  async dbSelect(realm: string, key: string): Promise<string> {
    const answer = await this.api(`db select/${realm}/${key}`);
    return answer.startsWith('-ERR') ? '' : answer;
  }

  async close(): Promise<void> {
    this.observer?.destroy();
    await this.esl.stop();
  }

  /** A plain ESL listener (`event plain`), every event kept with its arrival time; it does not reconnect. */
  private observe(subscription: string): void {
    const raw = openRawEsl(this.env, `event plain ${subscription}`, (frame, at) => {
      if (isEventFrame(frame)) this.collect(eventFromFrame(frame), at);
    });
    this.observer = raw.socket;
    raw.ready.catch(() => undefined);
  }

  private collect(event: FsEvent, at: number): void {
    this.events.push(event);
    this.arrivals.push(at);
    for (const waiter of [...this.waiters]) if (waiter.match(event)) waiter.resolve(event);
    // Long files must not grow without bound: keep the recent past only.
    if (this.events.length > 50_000) {
      this.events.splice(0, 25_000);
      this.arrivals.splice(0, 25_000);
    }
  }
}

/**
 * A bare ESL connection that authenticates, sends one `command` (`event plain ...`, `log
 * warning`) and hands every later frame to `onFrame` with its arrival time. The suite
 * needs it besides EslClient, which drops what carries the bridge's loop guard: exactly
 * what the suite must see a bridge inject. `ready` resolves on the command's +OK.
 */
export function openRawEsl(node: NodeEnv, command: string, onFrame: (frame: EslFrame, at: number) => void): { socket: net.Socket; ready: Promise<void> } {
  const parser = new EslFrameParser({ maxFrameBytes: 64 * 1024 * 1024 });
  const socket = net.connect(node.esl.port, node.esl.host);
  let authenticated = false;
  let commanded = false;
  const ready = new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      const at = Date.now();
      for (const frame of parser.push(chunk)) {
        const type = frame.headers['Content-Type'];
        const reply = frame.headers['Reply-Text'] ?? '';
        if (type === 'auth/request') socket.write(`auth ${node.eslPassword}\n\n`);
        else if (type === 'command/reply' && !commanded) {
          if (!reply.startsWith('+OK')) {
            reject(new Error(`ESL ${node.esl.host}:${node.esl.port}: ${authenticated ? command : 'auth'}: ${reply}`));
          } else if (!authenticated) {
            authenticated = true;
            socket.write(`${command}\n\n`);
          } else {
            commanded = true;
            resolve();
          }
        } else onFrame(frame, at);
      }
    });
  });
  return { socket, ready };
}

/** What FreeSWITCH logs at `level` and above (ESL `log`), each line's text kept for counting. */
export class LogWatcher {
  private constructor(
    private readonly socket: net.Socket,
    readonly lines: string[],
  ) {}

  static async open(node: FsNode, level = 'warning'): Promise<LogWatcher> {
    const lines: string[] = [];
    const raw = openRawEsl(node.env, `log ${level}`, (frame) => {
      if (frame.headers['Content-Type'] === 'log/data' && frame.body) lines.push(frame.body.toString('utf8'));
    });
    await raw.ready;
    return new LogWatcher(raw.socket, lines);
  }

  count(match: RegExp): number {
    return this.lines.filter((line) => match.test(line)).length;
  }

  close(): void {
    this.socket.destroy();
  }
}

export interface BridgeOptions {
  nats?: NatsServer | null;
  multicast?: boolean;
  blf?: false | { legacyParity?: boolean };
  location?: false | { peerDownGraceMs?: number; legacyParity?: boolean; addressOverrides?: string };
  peerTimeoutMs?: number;
  /** Extra bindings for both transports (event names, put before the defaults below: after CUSTOM a name is a subclass). */
  bindings?: string;
  logLevel?: string;
}

const BASE_BINDINGS = 'HEARTBEAT PRESENCE_IN MESSAGE_WAITING CUSTOM sofia::register sofia::unregister sofia::expire';

function xmlAttr(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

/** The config a bridge on `node` gets: everything from the node itself, nothing from the operator's files. */
export function bridgeConfigXml(node: FsNode, env: LabEnv, options: BridgeOptions): string {
  const param = (name: string, value: string) => `<param name="${name}" value="${xmlAttr(value)}"/>`;
  const bindings = options.bindings ? `${options.bindings} ${BASE_BINDINGS}` : BASE_BINDINGS;
  const nats = options.nats ?? null;
  const blf = options.blf === undefined ? {} : options.blf;
  const location = options.location === undefined ? {} : options.location;
  return [
    '<configuration name="event_bridge.conf">',
    `<settings>${param('node-name', node.info.switchname)}${param('hostname', node.info.hostname)}${param('ipv4', node.info.ipv4)}${param('cluster', 'fslab')}${param('log-level', options.logLevel ?? 'info')}${param('stats-interval', '0')}</settings>`,
    `<esl>${param('host', node.env.esl.host)}${param('port', String(node.env.esl.port))}${param('password', node.env.eslPassword)}</esl>`,
    `<bindings>${param('multicast', bindings)}${param('nats', bindings)}</bindings>`,
    `<multicast>${param('enabled', String(options.multicast !== false))}${param('address', env.multicast.host)}${param('port', String(env.multicast.port))}${param('interface', node.info.ipv4)}${param('ttl', '1')}${param('loopback', 'false')}${env.psk ? param('psk', env.psk) : ''}${env.secureKey ? param('secure-key', env.secureKey) : ''}${param('peer-timeout', `${options.peerTimeoutMs ?? 60_000}ms`)}</multicast>`,
    nats
      ? `<nats>${param('enabled', 'true')}${param('servers', nats.url)}${param('stream-name', 'FSLAB')}${param('stream-storage', 'memory')}${param('stream-max-bytes', '64MB')}${param('replicas', '1')}</nats>`
      : `<nats>${param('enabled', 'false')}</nats>`,
    '<consumers>',
    blf ? `<consumer name="blf">${param('enabled', 'true')}${param('legacy-parity', String(blf.legacyParity === true))}</consumer>` : '',
    location
      ? `<consumer name="location">${param('enabled', 'true')}${param('db-path', join(node.info.dbDir, 'call_limit.db'))}${param('legacy-parity', String(location.legacyParity === true))}${location.peerDownGraceMs !== undefined ? param('peer-down-grace', `${location.peerDownGraceMs}ms`) : ''}${location.addressOverrides ? param('address-overrides', location.addressOverrides) : ''}</consumer>`
      : '',
    '</consumers>',
    `<metrics>${param('enabled', 'true')}${param('host', node.info.ipv4)}${param('port', '0')}</metrics>`,
    '</configuration>',
  ].join('\n');
}

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** `fs-event-bridge run` on a node's network (its command prefix), as an operator runs it. */
export class BridgeProcess {
  readonly log: LogLine[] = [];
  private readonly dir: string;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private buffered = '';
  private stderr = '';
  status: { address: string; port: number } | null = null;

  constructor(
    readonly node: FsNode,
    private readonly configXml: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `fsb-fs-${node.env.key}-`));
  }

  static async start(node: FsNode, options: BridgeOptions = {}): Promise<BridgeProcess> {
    const bridge = new BridgeProcess(node, bridgeConfigXml(node, labEnv(), options));
    await bridge.start();
    return bridge;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** (Re)starts with the same config; resolves once it logged "bridge started". */
  async start(timeoutMs = 30_000): Promise<void> {
    const file = join(this.dir, 'event_bridge.conf.xml');
    writeFileSync(file, this.configXml);
    // As config/systemd/fs-event-bridge.service runs it: SCHED_RR 10 (FSB_FS_BRIDGE_SCHED=default: the default policy; rrN: SCHED_RR N).
    const sched = process.env.FSB_FS_BRIDGE_SCHED ?? 'rr10';
    const scheduling = sched === 'default' ? [] : ['chrt', '-r', sched.replace(/^rr/, '')];
    const [command, ...prefix] = [...this.node.env.exec, ...scheduling, process.execPath];
    const args = [...prefix, ...cliArgs(['run', '--config', file])];
    const from = this.log.length;
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => this.onOutput(chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-10_000)));
    const started = await until(() => {
      if (!this.running) throw new Error(`bridge on ${this.node.name} exited: ${this.stderr}${this.tail()}`);
      return this.log.slice(from).find((line) => line.msg === 'bridge started');
    }, timeoutMs).catch((error: Error) => {
      throw new Error(`bridge on ${this.node.name} did not start: ${error.message}\n${this.stderr}${this.tail()}`);
    });
    this.status = (started.status as { address: string; port: number } | null) ?? null;
  }

  /** SIGTERM, graceful. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL: the node's bridge dies as with its host. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGKILL');
    await this.exited;
  }

  async cleanup(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** GET on the bridge's status server (/metrics, /ready, /peers). */
  async http(path: string): Promise<{ status: number; body: string }> {
    if (!this.status) throw new Error('bridge status server not known');
    const response = await fetch(`http://${this.status.address}:${this.status.port}${path}`);
    return { status: response.status, body: await response.text() };
  }

  /** Sum of a Prometheus counter over the series whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const { body } = await this.http('/metrics');
    const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    let total = 0;
    for (const line of body.split('\n')) {
      if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
      if (wanted.every((w) => line.includes(w))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return total;
  }

  /** Resolves once this bridge lists `peer` as up (FreeSWITCH sends its HEARTBEAT every 20 s). */
  async waitPeerUp(peer: string, timeoutMs = 45_000): Promise<void> {
    await until(async () => {
      const peers = JSON.parse((await this.http('/peers')).body) as { name: string; up: boolean }[];
      return peers.some((p) => p.name === peer && p.up);
    }, timeoutMs);
  }

  logged(match: (line: LogLine) => boolean): LogLine | undefined {
    return this.log.find(match);
  }

  tail(lines = 15): string {
    return this.log
      .slice(-lines)
      .map((l) => JSON.stringify(l))
      .join('\n');
  }

  private onOutput(chunk: string): void {
    this.buffered += chunk;
    let eol: number;
    while ((eol = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, eol);
      this.buffered = this.buffered.slice(eol + 1);
      try {
        this.log.push(JSON.parse(line) as LogLine);
      } catch {
        this.log.push({ level: 30, msg: line });
      }
      if (this.log.length > 20_000) this.log.splice(0, 10_000);
    }
  }
}

/** A NATS server beside the phones, listening on the phones' address (both nodes reach it). */
export function startLabNats(): Promise<NatsServer> {
  return startNatsServer({ address: labEnv().phoneIp });
}

/** Phones the suite opened, closed (unsubscribed, unregistered) by closePhones(). */
const openPhones = new Set<SipUa>();

export async function phone(user: string, node: FsNode, options: Partial<SipUaOptions> = {}): Promise<SipUa> {
  const env = labEnv();
  const ua = await SipUa.open({ user, password: env.password, domain: env.domain, localIp: env.phoneIp, server: node.env.sip, ...options });
  openPhones.add(ua);
  return ua;
}

export async function closePhones(): Promise<void> {
  const phones = [...openPhones];
  openPhones.clear();
  await Promise.all(phones.map((p) => p.close()));
}

/** Users handed out to tests, so two tests never share one (FreeSWITCH remembers registrations and dialogs). */
let nextUser = 0;
export function users(count: number): string[] {
  const pool = labEnv().users;
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(pool[nextUser++ % pool.length]);
  return out;
}

/** Both nodes, connected; close() in afterAll. */
export async function connectNodes(subscription?: string): Promise<{ a: FsNode; b: FsNode; close: () => Promise<void> }> {
  const env = labEnv();
  const a = await FsNode.connect(env.a, subscription);
  const b = await FsNode.connect(env.b, subscription);
  return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
}

/** Both nodes, a NATS server, a bridge on each node and the phones, as most files use them. */
export interface BridgedPair {
  a: FsNode;
  b: FsNode;
  nats: NatsServer;
  bridgeA: BridgeProcess;
  bridgeB: BridgeProcess;
}

/**
 * Registers the hooks of a file that runs against two bridged nodes: started before its
 * tests (with B seeing A up when `waitPeerUp`), phones closed after each test, all of it
 * stopped after the file. The fields are set once the file's first beforeAll has run.
 */
export function useBridgedPair(options: { subscription?: string; bridge?: Omit<BridgeOptions, 'nats'>; waitPeerUp?: boolean } = {}): BridgedPair {
  const pair = {} as BridgedPair;
  let closeNodes: (() => Promise<void>) | null = null;
  beforeAll(async () => {
    const nodes = await connectNodes(options.subscription);
    closeNodes = nodes.close;
    Object.assign(pair, { a: nodes.a, b: nodes.b, nats: await startLabNats() });
    pair.bridgeA = await BridgeProcess.start(pair.a, { ...options.bridge, nats: pair.nats });
    pair.bridgeB = await BridgeProcess.start(pair.b, { ...options.bridge, nats: pair.nats });
    // A node can only be seen dying once it was seen alive.
    if (options.waitPeerUp) await pair.bridgeB.waitPeerUp(pair.a.name);
  });
  afterEach(closePhones);
  afterAll(async () => {
    await closePhones();
    await pair.bridgeA?.cleanup();
    await pair.bridgeB?.cleanup();
    await pair.nats?.stop();
    await closeNodes?.();
  });
  return pair;
}
