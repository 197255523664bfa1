/**
 * The hub-and-satellites cluster on one machine, without Docker: what the end-to-end
 * tests and `npm run demo` run on.
 *
 * netns layout (root): hub, sat1 and sat2 each in their own network namespace with an
 * address on one LAN (veth pairs on a Linux bridge, test/support/netns.ts createLan),
 * so multicast really crosses hosts with TTL 1; a fourth namespace on the same LAN
 * holds the 3-server NATS JetStream cluster. In each node namespace: a node agent
 * (node-agent.ts: the ESL simulator standing in for FreeSWITCH) and the bridge
 * (`fs-event-bridge run`) with the blf and location consumers, writing that node's own
 * sqlite call_limit.db.
 *
 * single layout (no namespaces, e.g. not root): everything on the root namespace's
 * loopback, NATS only (multicast on a shared loopback would deliver every node's
 * datagrams to itself and is not what a real deployment does).
 *
 * Without nats-server the cluster runs multicast only (netns layout). Timeouts are
 * short so peerdown is seen within seconds.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { defaultConfigXml } from '../../bridge/config/load.js';
import { FsEvent } from '../../bridge/event/event.js';
import type { PeerInfo } from '../../bridge/pipeline/peers.js';
import { createModDbSchema } from '../../consumers/index.js';
import { NATS_SERVER_BIN, freePort, startNatsCluster, type NatsCluster } from '../../test/support/nats-server.js';
import { createLan, type Lan } from '../../test/support/netns.js';
import { launch, stopChild, sweepLeftovers, NETNS_TAG, WORKDIR_PREFIX } from './launcher.js';
import type { AgentCommand, AgentConfig, AgentReport, LoadStats } from './node-agent.js';

export type NodeId = 'hub' | 'sat1' | 'sat2';
export const NODE_IDS: readonly NodeId[] = ['hub', 'sat1', 'sat2'];

export interface ClusterOptions {
  /** auto: namespaces when they can be created, else single. */
  layout?: 'auto' | 'netns' | 'single';
  /** auto: a NATS cluster when nats-server is installed. */
  nats?: 'auto' | 'off';
  peerTimeoutMs?: number;
  heartbeatMs?: number;
  peerDownGraceMs?: number;
  logLevel?: string;
  /** Events both transports carry (mod_event_multicast grammar); default BINDINGS. */
  bindings?: string;
  /** Stream storage of the NATS stream (file by default). */
  streamStorage?: 'file' | 'memory';
  /** Give each bridge a dedup journal (dedup/journal in its directory), as deployed with NATS: redeliveries after a kill -9 are not injected twice. */
  dedupJournal?: boolean;
  /** Bridge log lines (JSON), prefixed with the node id. */
  onBridgeLog?: (node: NodeId, line: string) => void;
  /** Set by the caller to say why a layout was chosen (printed by the demo). */
  onNotice?: (message: string) => void;
}

const MULTICAST_GROUP = '225.1.1.1';
const MULTICAST_PORT = 4242;
export const BINDINGS = 'HEARTBEAT PRESENCE_IN CUSTOM sofia::register sofia::unregister sofia::expire';
const REALM = '127.0.0.1';
/** mod_db key prefix of the location rows (db_data.data_key = LOCATION_<user>). */
const PREFIX = 'LOCATION_';

/** The agent process of one node: requests by id, sendevents kept in order. */
class AgentClient {
  /** What the bridge injected or fired into this node (heartbeat injections excepted), oldest first. */
  readonly sendevents: { at: number; event: FsEvent }[] = [];
  readonly ready: Promise<void>;
  private readonly pending = new Map<number, { resolve: (r: AgentReport & { type: 'done' }) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private buffered = '';
  private stderr = '';

  constructor(readonly child: ChildProcess) {
    let markReady: () => void = () => undefined;
    let failReady: (e: Error) => void = () => undefined;
    this.ready = new Promise((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-4_000)));
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.buffered += chunk;
      let eol: number;
      while ((eol = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, eol);
        this.buffered = this.buffered.slice(eol + 1);
        if (line.trim() === '') continue;
        const report = JSON.parse(line) as AgentReport;
        if (report.type === 'ready') markReady();
        else if (report.type === 'sendevent') this.sendevents.push({ at: report.at, event: new FsEvent(report.headers, report.body) });
        else {
          const waiter = this.pending.get(report.id);
          this.pending.delete(report.id);
          if (report.type === 'done') waiter?.resolve(report);
          else waiter?.reject(new Error(report.message));
        }
      }
    });
    child.once('exit', (code) => {
      const error = new Error(`node agent exited with ${code}: ${this.stderr}`);
      failReady(error);
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    });
  }

  request(command: DistributiveOmit<AgentCommand, 'id'>, timeoutMs = 10_000): Promise<AgentReport & { type: 'done' }> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`agent did not answer ${command.cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.child.stdin!.write(JSON.stringify({ ...command, id }) + '\n');
    });
  }

  async stop(): Promise<void> {
    const exited = this.child.exitCode === null ? new Promise((resolve) => this.child.once('exit', resolve)) : null;
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(timer);
  }
}

type DistributiveOmit<T, K extends keyof never> = T extends unknown ? Omit<T, K> : never;

export interface NodeSpec {
  id: NodeId;
  switchname: string;
  hostname: string;
  /** The node's address on the LAN: its SIP address, db_data.data of its registrations. */
  ip: string;
  netns: string | null;
  eslPort: number;
  statusPort: number;
  configFile: string;
  dbPath: string;
  /** The agent's Unix socket to the status server (netns layout), null when the status server is on this host's loopback. */
  boardSocket: string | null;
}

export class ClusterNode {
  bridge: ChildProcess | null = null;
  /** Where a browser on this host opens the node's cluster board. */
  boardUrl = '';
  /** Last bridge log lines, for failure messages. */
  bridgeLog = '';
  private db: Database.Database | null = null;

  constructor(
    readonly spec: NodeSpec,
    readonly agent: AgentClient,
    private readonly onLog: ((line: string) => void) | undefined,
  ) {}

  get id(): NodeId {
    return this.spec.id;
  }

  get bridgeRunning(): boolean {
    return this.bridge !== null && this.bridge.exitCode === null && this.bridge.signalCode === null;
  }

  startBridge(): void {
    if (this.bridgeRunning) return;
    const child = launch(this.spec.netns, 'bridge/cli/main', ['run', '--config', this.spec.configFile]);
    const append = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      this.bridgeLog = (this.bridgeLog + text).slice(-8_000);
      if (this.onLog) for (const line of text.split('\n')) if (line.trim() !== '') this.onLog(line);
    };
    child.stdout!.on('data', append);
    child.stderr!.on('data', append);
    child.stdin!.end();
    this.bridge = child;
  }

  /** Graceful stop (SIGTERM, as systemd or docker stop would); resolves with the exit code. */
  async stopBridge(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const child = this.bridge;
    if (!child) return null;
    const code = await stopChild(child, signal);
    this.bridge = null;
    return code;
  }

  /** Fire an event from this node's simulated FreeSWITCH; resolves with its Event-Sequence. */
  async fire(event: FsEvent): Promise<number> {
    const done = await this.agent.request({ cmd: 'fire', headers: event.headers, body: event.body });
    return done.seq!;
  }

  /** Send one raw mod_event_multicast datagram from this node, as a legacy node would. */
  async legacyDatagram(event: FsEvent): Promise<void> {
    await this.agent.request({ cmd: 'datagram', headers: event.headers, body: event.body });
  }

  /** Legacy HEARTBEAT datagrams every `ms` (0 stops). */
  async legacyHeartbeat(ms: number): Promise<void> {
    await this.agent.request({ cmd: 'legacy-heartbeat', ms });
  }

  /** Fire `CUSTOM <subclass>` events from this node's FreeSWITCH at `rate` per second (0 stops). */
  async load(rate: number, subclass: string): Promise<void> {
    await this.agent.request({ cmd: 'load', rate, subclass });
  }

  /** What this node fired under load, and the load of the others its bridge injected here. */
  async loadStats(): Promise<LoadStats> {
    return JSON.parse((await this.agent.request({ cmd: 'load-stats' }, 30_000)).body!) as LoadStats;
  }

  /** Cut the bridge's ESL connection (the bridge reconnects). */
  async dropEsl(): Promise<void> {
    await this.agent.request({ cmd: 'drop-esl' });
  }

  /** GET a path of the bridge's status server; status 0 when nothing answers. */
  async status(path: string): Promise<{ status: number; body: string }> {
    try {
      const done = await this.agent.request({ cmd: 'http', path }, 5_000);
      return { status: done.status!, body: done.body! };
    } catch {
      return { status: 0, body: '' };
    }
  }

  async ready(): Promise<boolean> {
    return (await this.status('/ready')).status === 200;
  }

  async peers(): Promise<PeerInfo[]> {
    const { status, body } = await this.status('/peers');
    return status === 200 ? (JSON.parse(body) as PeerInfo[]) : [];
  }

  async metricsText(): Promise<string> {
    return (await this.status('/metrics')).body;
  }

  /** What mod_db's `db select/realm/LOCATION_user` reads: every matching row's data (no hostname filter, as mod_db). */
  location(user: string, realm = REALM): string[] {
    const rows = this.database().prepare('select data from db_data where realm=? and data_key=?').all(realm, PREFIX + user) as { data: string }[];
    return rows.map((r) => r.data);
  }

  /** Every LOCATION_ row of this node's call_limit.db. */
  locationRows(): { hostname: string; realm: string; user: string; data: string }[] {
    const rows = this.database()
      .prepare('select hostname, realm, data_key, data from db_data where substr(data_key, 1, ?) = ? order by data_key')
      .all(PREFIX.length, PREFIX) as { hostname: string; realm: string; data_key: string; data: string }[];
    return rows.map((r) => ({ hostname: r.hostname, realm: r.realm, user: r.data_key.slice(PREFIX.length), data: r.data }));
  }

  /** Remove every db_data row (as if FreeSWITCH started with an empty database). */
  clearDatabase(): void {
    this.database().prepare('delete from db_data').run();
  }

  /** sendevents recorded by this node's simulator, optionally only those matching. */
  sendevents(match: (event: FsEvent) => boolean = () => true, since = 0): FsEvent[] {
    return this.agent.sendevents.filter((s) => s.at >= since && match(s.event)).map((s) => s.event);
  }

  close(): void {
    this.db?.close();
    this.db = null;
  }

  private database(): Database.Database {
    // Read-write but never writing outside clearDatabase: a read-only handle cannot open a WAL file the bridge created.
    this.db ??= new Database(this.spec.dbPath, { timeout: 2_000 });
    return this.db;
  }
}

export class LocalCluster {
  private constructor(
    readonly layout: 'netns' | 'single',
    readonly multicast: boolean,
    readonly nats: NatsCluster | null,
    readonly nodes: ReadonlyMap<NodeId, ClusterNode>,
    readonly notices: readonly string[],
    private readonly lan: Lan | null,
    private readonly workdir: string,
    private readonly forwarders: readonly Server[],
  ) {}

  node(id: NodeId): ClusterNode {
    return this.nodes.get(id)!;
  }

  static async start(options: ClusterOptions = {}): Promise<LocalCluster> {
    const notices: string[] = [];
    const notice = (message: string) => {
      notices.push(message);
      options.onNotice?.(message);
    };
    sweepLeftovers();
    const workdir = mkdtempSync(join(tmpdir(), `${WORKDIR_PREFIX}${process.pid}-`));
    let lan: Lan | null = null;
    let nats: NatsCluster | null = null;
    const nodes = new Map<NodeId, ClusterNode>();
    const forwarders: Server[] = [];
    const cleanup = async () => {
      for (const server of forwarders) server.close();
      await Promise.allSettled([...nodes.values()].map((n) => n.stopBridge('SIGKILL')));
      await Promise.allSettled([...nodes.values()].map((n) => n.agent.stop()));
      await nats?.dispose();
      lan?.cleanup();
      rmSync(workdir, { recursive: true, force: true });
    };
    try {
      const layoutWanted = options.layout ?? 'auto';
      if (layoutWanted !== 'single') {
        const problem = namespaceProblem();
        if (problem === null) lan = createLan(NETNS_TAG, 4);
        else if (layoutWanted === 'netns') throw new Error(`cannot create network namespaces: ${problem}`);
        else notice(`Cannot create network namespaces (${problem}): running every node in this namespace on loopback, NATS only, no multicast.`);
      }
      const natsWanted = (options.nats ?? 'auto') === 'auto';
      if (natsWanted && !existsSync(NATS_SERVER_BIN)) notice(`nats-server not found at ${NATS_SERVER_BIN} (set NATS_SERVER_BIN): running multicast only, no NATS and no KV state.`);
      if (natsWanted && existsSync(NATS_SERVER_BIN)) {
        const host = lan?.hosts[3];
        nats = await startNatsCluster(3, host ? { netns: { name: host.netns, address: host.ip } } : {});
      }
      const multicast = lan !== null;
      if (!multicast && !nats) throw new Error('neither network namespaces (for multicast) nor nats-server (for NATS) are available: nothing can carry events between nodes');

      const specs: NodeSpec[] = [];
      for (const [index, id] of NODE_IDS.entries()) {
        const host = lan?.hosts[index];
        const dir = join(workdir, id);
        mkdirSync(dir);
        const spec: NodeSpec = {
          id,
          switchname: `fs-${id}`,
          hostname: `node-${id}`,
          ip: host?.ip ?? `10.99.0.${index + 1}`,
          netns: host?.netns ?? null,
          eslPort: host ? 8021 : await freePort(),
          statusPort: host ? 9464 : await freePort(),
          configFile: join(dir, 'event_bridge.conf.xml'),
          dbPath: join(dir, 'call_limit.db'),
          boardSocket: host ? join(dir, 'board.sock') : null,
        };
        // FreeSWITCH's mod_db creates call_limit.db; the simulator does not, so the runner does.
        const db = new Database(spec.dbPath);
        createModDbSchema(db);
        db.close();
        writeFileSync(spec.configFile, bridgeConfigXml(spec, { ...options, multicast, nats: nats?.urls ?? null }));
        specs.push(spec);
      }
      for (const spec of specs) {
        const agentConfig: AgentConfig = {
          switchname: spec.switchname,
          hostname: spec.hostname,
          ipv4: spec.ip,
          eslPort: spec.eslPort,
          heartbeatMs: options.heartbeatMs ?? 500,
          statusUrl: `http://127.0.0.1:${spec.statusPort}`,
          multicast: multicast ? { group: MULTICAST_GROUP, port: MULTICAST_PORT, interface: spec.ip } : null,
          boardSocket: spec.boardSocket,
        };
        const agent = new AgentClient(launch(spec.netns, 'compose/local/node-agent', [JSON.stringify(agentConfig)]));
        const onLog = options.onBridgeLog;
        nodes.set(spec.id, new ClusterNode(spec, agent, onLog ? (line) => onLog(spec.id, line) : undefined));
      }
      await Promise.all([...nodes.values()].map((n) => n.agent.ready));
      for (const node of nodes.values()) node.boardUrl = await boardUrlFor(node.spec, forwarders);
      const cluster = new LocalCluster(lan ? 'netns' : 'single', multicast, nats, nodes, notices, lan, workdir, forwarders);
      for (const node of nodes.values()) node.startBridge();
      await cluster.waitAllReady(45_000);
      return cluster;
    } catch (error) {
      await cleanup();
      throw error;
    }
  }

  /** Resolves when every running bridge answers /ready with 200. */
  async waitAllReady(timeoutMs = 30_000): Promise<void> {
    await Promise.all([...this.nodes.values()].filter((n) => n.bridgeRunning).map((n) => waitReady(n, timeoutMs)));
  }

  async dispose(): Promise<void> {
    for (const server of this.forwarders) server.close();
    await Promise.allSettled([...this.nodes.values()].map((n) => n.stopBridge()));
    await Promise.allSettled([...this.nodes.values()].map((n) => n.agent.stop()));
    for (const node of this.nodes.values()) node.close();
    await this.nats?.dispose();
    this.lan?.cleanup();
    rmSync(this.workdir, { recursive: true, force: true });
  }
}

/** The board's URL on this host: the status port itself, or a loopback port forwarded to the agent's socket in the namespace. */
async function boardUrlFor(spec: NodeSpec, forwarders: Server[]): Promise<string> {
  const socket = spec.boardSocket;
  if (socket === null) return `http://127.0.0.1:${spec.statusPort}/board/`;
  const server = createServer((client) => {
    const upstream = connect(socket);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  forwarders.push(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
  return `http://127.0.0.1:${port}/board/`;
}

export async function waitReady(node: ClusterNode, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await node.ready())) {
    if (!node.bridgeRunning) throw new Error(`bridge of ${node.id} exited (${node.bridge?.exitCode ?? 'stopped'}):\n${node.bridgeLog}`);
    if (Date.now() > deadline) throw new Error(`bridge of ${node.id} not ready within ${timeoutMs} ms:\n${node.bridgeLog}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Why namespaces cannot be used here, or null when they can. */
function namespaceProblem(): string | null {
  if (process.platform !== 'linux') return `${process.platform} has no network namespaces`;
  if (process.getuid?.() !== 0) return 'not root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'the ip command (iproute2) is missing';
  }
  return null;
}

/** The bridge config of one node (defaults from the loader, short timeouts for a local cluster). */
export function bridgeConfigXml(
  spec: NodeSpec,
  options: { multicast: boolean; nats: string[] | null; peerTimeoutMs?: number; peerDownGraceMs?: number; logLevel?: string; bindings?: string; streamStorage?: 'file' | 'memory'; dedupJournal?: boolean },
): string {
  const bindings = options.bindings ?? BINDINGS;
  return defaultConfigXml({
    settings: { 'node-name': spec.switchname, hostname: spec.hostname, ipv4: spec.ip, cluster: 'local', 'log-level': options.logLevel ?? 'info' },
    esl: { host: '127.0.0.1', port: String(spec.eslPort), password: 'ClueCon', 'reconnect-max': '200ms' },
    bindings: { multicast: bindings, nats: bindings },
    multicast: {
      enabled: options.multicast ? 'true' : 'false',
      address: MULTICAST_GROUP,
      port: String(MULTICAST_PORT),
      interface: options.multicast ? spec.ip : '',
      ttl: '1',
      loopback: 'no',
      'peer-timeout': `${options.peerTimeoutMs ?? 2_000}ms`,
    },
    nats: options.nats
      ? { enabled: 'true', servers: options.nats.join(','), peers: NODE_IDS.map((id) => `fs-${id}`).join(','), replicas: '3', 'stream-max-age': '1h', 'stream-storage': options.streamStorage ?? 'file' }
      : { enabled: 'false' },
    ...(options.dedupJournal && { dedup: { journal: join(dirname(spec.configFile), 'dedup.journal') } }),
    'consumer:blf': { enabled: 'true' },
    'consumer:location': { enabled: 'true', 'db-path': spec.dbPath, 'peer-down-grace': `${options.peerDownGraceMs ?? 500}ms` },
    metrics: { enabled: 'true', host: '127.0.0.1', port: String(spec.statusPort), board: 'true' },
  });
}
