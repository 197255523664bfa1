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
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConfig, NodeConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';

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

/**
 * A loopback port free at the time of the call, picked below the kernel's ephemeral
 * range: a port listen(0) hands out is an ephemeral one, which any outgoing connection
 * of a parallel test may take as its local port before nats-server binds it (seen as
 * "address already in use" in a full run). Below that range only listeners compete, and
 * the bind below sees those.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  for (let attempt = 0; attempt < 50 && low > 20_000; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * (low - 20_000));
    if (await bindable(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** Resolves once something on the port answers with a NATS INFO line. */
async function waitForInfo(port: number, timeoutMs: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}:\n${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: '127.0.0.1', port });
      const done = (result: boolean) => {
        socket.destroy();
        resolve(result);
      };
      socket.setTimeout(500, () => done(false));
      socket.once('error', () => done(false));
      socket.once('data', (chunk) => done(chunk.toString('latin1').startsWith('INFO ')));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server on port ${port} did not accept connections within ${timeoutMs} ms:\n${log()}`);
}

async function waitForLog(ready: RegExp, timeoutMs: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready.test(log())) {
    if (child.exitCode !== null) throw new Error(`nats-server exited with ${child.exitCode}:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`nats-server did not report ready within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class NatsServer {
  readonly url: string;
  readonly configFile: string;
  private child: ChildProcess | null = null;
  private output = '';

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
    // In a namespace readiness is read from the log: a restart must not see the previous run's line.
    if (netns) this.output = '';
    const command: [string, string[]] = netns ? ['ip', ['netns', 'exec', netns.name, NATS_SERVER_BIN, '-c', this.configFile]] : [NATS_SERVER_BIN, ['-c', this.configFile]];
    const child = spawn(command[0], command[1], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...this.options.env } });
    this.child = child;
    const append = (chunk: Buffer) => {
      // Keep the tail only: a long test must not grow memory with server logs.
      this.output = (this.output + chunk.toString('utf8')).slice(-20_000);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    // The root namespace cannot connect into another one: there the server's own log says when it listens.
    if (netns) await waitForLog(/Server is ready/, timeoutMs, child, () => this.output);
    else await waitForInfo(this.port, timeoutMs, child, () => this.output);
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

/** One started server on a free loopback port with a temp JetStream store. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const server = await NatsServer.create(options);
  try {
    await server.start();
  } catch (err) {
    await server.dispose();
    throw err;
  }
  return server;
}

export interface NatsCluster {
  readonly servers: NatsServer[];
  readonly urls: string[];
  dispose(): Promise<void>;
}

/** A JetStream cluster of `size` servers (default 3) routed on loopback (of `netns` when given), named n1..nN. */
export async function startNatsCluster(size = 3, options: { auth?: NatsServerAuth; netns?: { name: string; address: string } } = {}): Promise<NatsCluster> {
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
  try {
    await Promise.all(servers.map((s) => s.start()));
  } catch (err) {
    await cluster.dispose();
    throw err;
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
