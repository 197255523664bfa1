/**
 * Real nats-server processes for tests and the demo runner: one server or a
 * 3-server JetStream cluster on loopback, each with its own temp store dir, free
 * ports, optional auth, and stop/kill/restart on the same port and store so
 * outage and failover tests can take a server away and bring it back.
 *
 * Plain functions (no vitest import) so the end-to-end runner can reuse them; a
 * process 'exit' hook kills every child and removes the temp dirs even when a test
 * fails before its cleanup runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConfig, NodeConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { freePort } from './ports.js';

export { freePort } from './ports.js';

export const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';

export type NatsServerAuth =
  | { user: string; pass: string }
  | { token: string }
  /** Users allowed by NKey public key (U...). */
  | { nkeys: string[] }
  /** Operator (JWT) mode: account JWTs preloaded into a memory resolver, keyed by public key; JetStream needs the system account. */
  | { operatorJwt: string; systemAccount: string; accounts: Record<string, string> };

/** Server TLS from PEM files; `verify` requires and checks client certificates against `caFile`. */
export interface NatsServerTls {
  certFile: string;
  keyFile: string;
  caFile?: string;
  verify?: boolean;
}

export interface NatsServerOptions {
  auth?: NatsServerAuth;
  tls?: NatsServerTls;
  /** JetStream on by default. */
  jetstream?: boolean;
  serverName?: string;
  /** Set by startNatsCluster. */
  cluster?: { name: string; port: number; routes: number[] };
  /** Run inside this network namespace, serving clients on every address of it (`address` is the one clients use). */
  netns?: { name: string; address: string };
  /** Serve clients on every address of this namespace; clients use this one (a server other namespaces reach). */
  address?: string;
  /** A config file included as is (an `authorization` block such as config/nats/authorization.conf), instead of `auth`. */
  include?: string;
  /** Extra environment of the server process: the variables an included file reads (`$NAME`). */
  env?: Record<string, string>;
}

const live = new Set<NatsServer>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const server of live) server.destroySync();
  });
}

/** The server could not bind a port of its config: another listener took it after freePort() probed it. */
export class PortInUseError extends Error {}

/** `closed`: the child exited and its output is all read (its last line says why it exited). */
async function waitForLog(ready: RegExp, timeoutMs: number, child: ChildProcess, closed: () => boolean, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready.test(log())) {
    if (closed()) {
      const message = `nats-server exited with ${child.exitCode ?? child.signalCode}:\n${log()}`;
      throw /\[FTL\] Error listening on .*address already in use/.test(log()) ? new PortInUseError(message) : new Error(message);
    }
    if (Date.now() > deadline) throw new Error(`nats-server did not report ready within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class NatsServer {
  readonly url: string;
  readonly configFile: string;
  private child: ChildProcess | null = null;
  private output = '';
  /** This run's log only: a restart must not take the previous run's ready line for its own. */
  private runOutput = '';

  private constructor(
    readonly port: number,
    readonly dir: string,
    readonly options: NatsServerOptions,
  ) {
    this.url = `nats://${options.netns?.address ?? options.address ?? '127.0.0.1'}:${port}`;
    this.configFile = join(dir, 'nats-server.conf');
    writeFileSync(this.configFile, this.renderConfig());
  }

  static async create(options: NatsServerOptions = {}, port?: number): Promise<NatsServer> {
    const dir = mkdtempSync(join(tmpdir(), 'fsb-nats-'));
    return new NatsServer(port ?? (await freePort()), dir, options);
  }

  get storeDir(): string {
    return join(this.dir, 'jetstream');
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Server log so far (stderr and stdout), for failure messages. */
  get log(): string {
    return this.output;
  }

  private renderConfig(): string {
    const o = this.options;
    const lines = [`listen: "${o.netns || o.address ? '0.0.0.0' : '127.0.0.1'}:${this.port}"`];
    if (o.serverName) lines.push(`server_name: "${o.serverName}"`);
    if (o.jetstream !== false) lines.push(`jetstream { store_dir: "${this.storeDir}", max_memory_store: 268435456, max_file_store: 4294967296 }`);
    if (o.auth && 'token' in o.auth) lines.push(`authorization { token: "${o.auth.token}" }`);
    else if (o.auth && 'nkeys' in o.auth) lines.push(`authorization { users: [${o.auth.nkeys.map((key) => `{ nkey: "${key}" }`).join(', ')}] }`);
    else if (o.auth && 'operatorJwt' in o.auth) {
      const preload = Object.entries(o.auth.accounts).map(([key, jwt]) => `${key}: "${jwt}"`);
      lines.push(`operator: "${o.auth.operatorJwt}"`, `system_account: "${o.auth.systemAccount}"`, 'resolver: MEMORY', `resolver_preload: { ${preload.join(', ')} }`);
    } else if (o.auth) lines.push(`authorization { user: "${o.auth.user}", password: "${o.auth.pass}" }`);
    // nats-server resolves an include against the including file's directory: copy it beside.
    if (o.include) {
      copyFileSync(o.include, join(this.dir, 'included.conf'));
      lines.push('include "included.conf"');
    }
    if (o.tls) {
      const ca = o.tls.caFile ? `, ca_file: "${o.tls.caFile}"` : '';
      lines.push(`tls { cert_file: "${o.tls.certFile}", key_file: "${o.tls.keyFile}"${ca}, verify: ${o.tls.verify === true}, timeout: 2 }`);
    }
    if (o.cluster) {
      const routes = o.cluster.routes.map((p) => `"nats-route://127.0.0.1:${p}"`).join(', ');
      lines.push(`cluster { name: "${o.cluster.name}", listen: "127.0.0.1:${o.cluster.port}", routes: [${routes}] }`);
    }
    return lines.join('\n') + '\n';
  }

  async start(timeoutMs = 10_000): Promise<void> {
    if (this.running) return;
    installExitHook();
    live.add(this);
    const netns = this.options.netns;
    this.runOutput = '';
    const command: [string, string[]] = netns ? ['ip', ['netns', 'exec', netns.name, NATS_SERVER_BIN, '-c', this.configFile]] : [NATS_SERVER_BIN, ['-c', this.configFile]];
    const child = spawn(command[0], command[1], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...this.options.env } });
    this.child = child;
    const append = (chunk: Buffer) => {
      // Keep the tail only: a long test must not grow memory with server logs.
      this.output = (this.output + chunk.toString('utf8')).slice(-20_000);
      this.runOutput = (this.runOutput + chunk.toString('utf8')).slice(-20_000);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    let closed = false;
    child.once('close', () => (closed = true));
    // Its own log, not a probe of the port: a server of another test that took the port would answer the probe.
    await waitForLog(/Server is ready/, timeoutMs, child, () => closed, () => this.runOutput);
  }

  /** Graceful stop (SIGTERM), waits for exit. */
  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  /** Abrupt death (SIGKILL), as a crashed host. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** Start again on the same port with the same store. */
  async restart(timeoutMs?: number): Promise<void> {
    await this.stop();
    await this.start(timeoutMs);
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(sig);
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }

  /** Stop and remove the temp dir. */
  async dispose(): Promise<void> {
    await this.kill();
    live.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous cleanup for the process exit hook. */
  destroySync(): void {
    if (this.running) this.child?.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Tries of a first start on fresh ports: a port freePort() probed can be another listener's before the server binds it. */
const START_TRIES = 5;

/** `start` again, on the fresh ports it picks itself, while a port it was given turns out to be taken. */
async function onFreshPorts<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (!(err instanceof PortInUseError) || attempt >= START_TRIES) throw err;
    }
  }
}

/** One started server on a free loopback port with a temp JetStream store. */
export function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  return onFreshPorts(async () => {
    const server = await NatsServer.create(options);
    try {
      await server.start();
      return server;
    } catch (err) {
      await server.dispose();
      throw err;
    }
  });
}

export interface NatsCluster {
  readonly servers: NatsServer[];
  readonly urls: string[];
  dispose(): Promise<void>;
}

/** A JetStream cluster of `size` servers (default 3) routed on loopback (of `netns` when given), named n1..nN. */
export function startNatsCluster(size = 3, options: { auth?: NatsServerAuth; netns?: { name: string; address: string } } = {}): Promise<NatsCluster> {
  return onFreshPorts(() => startClusterOnce(size, options));
}

async function startClusterOnce(size: number, options: { auth?: NatsServerAuth; netns?: { name: string; address: string } }): Promise<NatsCluster> {
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    routePorts.push(await freePort());
  }
  const name = `fsb${process.pid}`;
  const servers: NatsServer[] = [];
  for (let i = 0; i < size; i++) {
    servers.push(
      await NatsServer.create(
        {
          ...options,
          serverName: `n${i + 1}`,
          cluster: { name, port: routePorts[i], routes: routePorts.filter((_, j) => j !== i) },
        },
        clientPorts[i],
      ),
    );
  }
  const cluster: NatsCluster = {
    servers,
    urls: servers.map((s) => s.url),
    dispose: async () => {
      await Promise.all(servers.map((s) => s.dispose()));
    },
  };
  const started = await Promise.allSettled(servers.map((s) => s.start()));
  const failures = started.flatMap((result) => (result.status === 'rejected' ? [result.reason as Error] : []));
  if (failures.length > 0) {
    await cluster.dispose();
    // A taken port is retried on fresh ports; any other failure of any server is the answer.
    throw failures.find((err) => !(err instanceof PortInUseError)) ?? failures[0];
  }
  return cluster;
}

/** A complete NatsConfig for tests: bindings ALL, small limits, unique stream name per call. */
export function natsTestConfig(servers: string[], overrides: Partial<NatsConfig> = {}): NatsConfig {
  return {
    enabled: true,
    servers,
    subjectPrefix: 'fs',
    bindings: Bindings.parse('ALL'),
    stream: { name: 'FS_EVENTS', maxAgeMs: 3_600_000, maxBytes: 256 * 1024 * 1024, duplicateWindowMs: 120_000, replicas: 1, storage: 'file' },
    payloadFormat: 'plain',
    durablePrefix: 'fsb_',
    peers: [],
    ackWaitMs: 30_000,
    buffer: { maxEvents: 100_000, maxBytes: 64 * 1024 * 1024 },
    maxInFlight: 256,
    auth: {},
    tls: null,
    kv: { locationBucket: 'fsb_location', blfBucket: 'fsb_blf' },
    ...overrides,
  };
}

export function testNode(name: string, cluster = 'test'): NodeConfig {
  return { name, hostname: name, ipv4: '127.0.0.1', cluster };
}

/** A FreeSWITCH-like event with identity headers (Core-UUID per node, increasing Event-Sequence). */
export function testEvent(coreUuid: string, sequence: number, name = 'PRESENCE_IN', subclass?: string, extra: [string, string][] = []): FsEvent {
  const event = FsEvent.create(name, subclass);
  event.add('Core-UUID', coreUuid).add('Event-Sequence', String(sequence)).add('Event-Date-Timestamp', String(Date.now() * 1000));
  for (const [h, v] of extra) event.add(h, v);
  return event;
}
