import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import {
  AuthorizationError,
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type NatsConnection,
  type NodeConnectionOptions,
  type TlsOptions,
} from '@nats-io/transport-node';
import type { NatsConfig } from '../../config/types.js';
import { ConfigError, NatsAuthError, NatsPermissionError, NatsTlsError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { permissionViolation } from './permissions.js';

/** The part of NatsConfig a connection needs (the CLI builds one from flags alone). */
export type NatsConnectSettings = Pick<NatsConfig, 'servers' | 'auth' | 'tls'>;

export interface NatsConnectDeps {
  logger: Logger;
  /** Connection name shown by the server (`nats server report connections`). */
  name?: string;
  /** Try servers in the configured order instead of shuffled (a preferred local server first). */
  inOrder?: boolean;
  /** Subject prefix of this connection's inboxes (replies, acks, pulls): a bridge uses its node's (nodeInboxPrefix). */
  inboxPrefix?: string;
}

/**
 * A TLS value is either a PEM text or a path to a PEM file (what the XML config holds).
 * The file is checked here because nats.js reads it only when dialing and would retry
 * a missing one forever; it stays a path so a renewed certificate is used on reconnect.
 */
function pemOrFile(value: string, inline: 'ca' | 'cert' | 'key'): Partial<TlsOptions> {
  if (value.includes('-----BEGIN')) return { [inline]: value };
  readable(value, `tls-${inline}`, () => accessSync(value, fsConstants.R_OK));
  return { [`${inline}File`]: value };
}

/** Runs `io` on `file`; a failure becomes a ConfigError naming the file, the param and the errno code. */
function readable<T>(file: string, param: string, io: () => T): T {
  try {
    return io();
  } catch (err) {
    throw new ConfigError(file, param, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

/** nats.js parses seeds and creds only inside the handshake; running the authenticator once turns a bad one into a config error up front. */
function checkedAuthenticator(authenticator: Authenticator, file: string, param: string, problem: string): Authenticator {
  try {
    authenticator('nonce');
  } catch {
    throw new ConfigError(file, param, problem);
  }
  return authenticator;
}

export function connectionOptions(settings: NatsConnectSettings, name?: string, inOrder = false, inboxPrefix?: string): NodeConnectionOptions {
  const { auth, tls } = settings;
  const options: NodeConnectionOptions = {
    servers: settings.servers,
    name,
    noRandomize: inOrder,
    inboxPrefix,
    // A bridge must come back after any outage: never give up reconnecting.
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: true,
    pingInterval: 10_000,
    maxPingOut: 3,
    // Otherwise every request (each JetStream publish) builds two Error objects with stack
    // traces up front: about 10% of the bridge's CPU at 6k events/s (docs/benchmarks.md).
    noAsyncTraces: true,
  };
  if (auth.user !== undefined) {
    options.user = auth.user;
    options.pass = auth.pass ?? '';
  }
  if (auth.token !== undefined) options.token = auth.token;
  const authenticators: Authenticator[] = [];
  if (auth.nkeySeed !== undefined) {
    // The seed is a secret: the error names the param, never the value.
    authenticators.push(checkedAuthenticator(nkeyAuthenticator(new TextEncoder().encode(auth.nkeySeed.trim())), '<nats>', 'nkey-seed', 'not a valid NKey seed (expected SU...)'));
  }
  // Read once at connect: a creds file rotated later needs a restart, as with nats CLI.
  if (auth.credsFile !== undefined) {
    const file = auth.credsFile;
    const creds = credsAuthenticator(readable(file, 'creds-file', () => readFileSync(file)));
    authenticators.push(checkedAuthenticator(creds, auth.credsFile, 'creds-file', 'not a NATS creds file (a USER JWT block followed by a USER NKEY SEED block)'));
  }
  if (authenticators.length > 0) options.authenticator = authenticators.length === 1 ? authenticators[0] : authenticators;
  if (tls) {
    options.tls = {
      ...(tls.ca ? pemOrFile(tls.ca, 'ca') : {}),
      ...(tls.cert ? pemOrFile(tls.cert, 'cert') : {}),
      ...(tls.key ? pemOrFile(tls.key, 'key') : {}),
    };
  }
  return options;
}

// Node's certificate verification codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_HAS_EXPIRED,
// ERR_TLS_CERT_ALTNAME_INVALID, ...) and OpenSSL alerts (ERR_SSL_...).
const TLS_ERROR_CODE = /^ERR_SSL_|^ERR_TLS_|CERT|^UNABLE_TO_/;

function isTlsFailure(err: unknown): err is Error {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && TLS_ERROR_CODE.test(code)) return true;
  // nats.js's own refusal when TLS is configured but the server offers none.
  return err.message.includes("support 'tls'");
}

function mapConnectError(err: unknown, servers: readonly string[]): unknown {
  if (err instanceof AuthorizationError) return new NatsAuthError(servers, { cause: err });
  if (isTlsFailure(err)) return new NatsTlsError(servers, err.message, { cause: err });
  return err;
}

/**
 * The INFO line a NATS server sends in the clear before any TLS upgrade; null when none
 * comes within `timeoutMs` (unreachable, or a server that wants the TLS handshake first).
 */
function serverInfo(server: string, timeoutMs: number): Promise<{ tls_verify?: boolean } | null> {
  const url = new URL(server.includes('://') ? server : `nats://${server}`);
  return new Promise((resolve) => {
    let buffered = '';
    const socket = createConnection({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 4222) });
    const done = (info: { tls_verify?: boolean } | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(info);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.on('error', () => done(null));
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      const eol = buffered.indexOf('\r\n');
      if (eol < 0) {
        if (buffered.length > 64 * 1024) done(null);
        return;
      }
      const line = buffered.slice(0, eol);
      try {
        done(line.startsWith('INFO ') ? (JSON.parse(line.slice(5)) as { tls_verify?: boolean }) : null);
      } catch {
        done(null);
      }
    });
  });
}

/**
 * TLS 1.3 servers check the client certificate after the client's side of the handshake is
 * done and then just close, so nats.js sees timeouts and would retry forever. The server
 * says it verifies clients in its INFO (`tls_verify`), sent in the clear first: when that is
 * set and no tls-cert is configured, the setting is what is wrong, and retrying cannot help.
 * Only TLS without a client certificate pays for the probe (one TCP round trip).
 */
async function missingClientCertificate(settings: NatsConnectSettings): Promise<NatsTlsError | null> {
  if (!settings.tls || settings.tls.cert) return null;
  for (const server of settings.servers) {
    if ((await serverInfo(server, 1_000))?.tls_verify === true) {
      return new NatsTlsError(settings.servers, `${server} requires a client certificate (tls_verify) and nats/tls-cert is not set`);
    }
  }
  return null;
}

/** Failures that retrying cannot fix: they end the first connect instead of looping. */
function isPermanent(err: unknown): boolean {
  return err instanceof NatsAuthError || err instanceof NatsTlsError || err instanceof ConfigError;
}

/**
 * First connection: retries unreachable servers with backoff until `stopped()`, resolving
 * null then. Own loop instead of nats.js waitOnFirstConnect: that one cannot be cancelled
 * (close() during a startup outage would leave a timer running forever) and retries a
 * TLS failure forever. Bad settings reject with ConfigError, refused credentials with
 * NatsAuthError, a failed TLS handshake with NatsTlsError.
 */
async function connectFirst(settings: NatsConnectSettings, deps: NatsConnectDeps, stopped: () => boolean): Promise<NatsConnection | null> {
  const options = { ...connectionOptions(settings, deps.name, deps.inOrder, deps.inboxPrefix), waitOnFirstConnect: false };
  let delayMs = 100;
  while (!stopped()) {
    // Before each attempt: a failed one would only surface after nats.js's connect timeout.
    const uncertified = await missingClientCertificate(settings);
    if (uncertified) throw uncertified;
    try {
      return await connect(options);
    } catch (err) {
      const mapped = mapConnectError(err, settings.servers);
      if (isPermanent(mapped)) throw mapped;
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 2_000);
  }
  return null;
}

/**
 * Connect and wait until connected (retrying unreachable servers forever).
 * Rejects as connectFirst does. For the CLI and tools; the bridge uses NatsClient
 * so that a NATS outage at startup does not hold it up.
 */
export async function connectNats(settings: NatsConnectSettings, deps: NatsConnectDeps): Promise<NatsConnection> {
  const nc = (await connectFirst(settings, deps, () => false))!;
  watchStatus(nc, deps.logger);
  return nc;
}

/** Says yes for a key at most once per interval; remembers a bounded number of keys. */
class OncePerInterval {
  private readonly last = new Map<string, number>();

  constructor(private readonly intervalMs: number) {}

  due(key: string, now = Date.now()): boolean {
    const at = this.last.get(key);
    if (at !== undefined && now - at < this.intervalMs) return false;
    this.last.delete(key);
    this.last.set(key, now);
    if (this.last.size > 1_000) this.last.delete(this.last.keys().next().value!);
    return true;
  }
}

/** Logs each connected/disconnected transition once (nats.js repeats disconnect per server tried). */
function watchStatus(nc: NatsConnection, logger: Logger, onChange?: (connected: boolean) => void): void {
  let connected = true;
  const refusals = new OncePerInterval(60_000);
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' && connected) {
        connected = false;
        logger.warn({ component: 'nats', server: status.server }, 'NATS disconnected; reconnecting');
        onChange?.(false);
      } else if (status.type === 'reconnect' && !connected) {
        connected = true;
        logger.info({ component: 'nats', server: status.server }, 'NATS reconnected');
        onChange?.(true);
      } else if (status.type === 'error') {
        const violation = permissionViolation(status.error);
        if (!violation) logger.error({ component: 'nats', err: status.error }, 'NATS connection error');
        else if (refusals.due(violation.subject)) {
          // A refused publish repeats with every event on that subject: once a minute per subject is enough to act on.
          const { code, message } = new NatsPermissionError(violation.subject, `a ${violation.operation}`);
          logger.error({ component: 'nats', code, subject: violation.subject, operation: violation.operation }, message);
        }
      }
    }
  })();
  void nc.closed().then((err) => {
    if (err) logger.error({ component: 'nats', err: mapConnectError(err, []) }, 'NATS connection closed with an error');
    if (connected) onChange?.(false);
    connected = false;
  });
}

/**
 * The bridge's one NATS connection. start() waits a bounded time for the first
 * connection, so a NATS outage at startup delays nothing (the publisher buffers)
 * while bad credentials still fail startup with NatsAuthError (NatsTlsError, ConfigError).
 */
export class NatsClient {
  private nc: NatsConnection | null = null;
  private isUp = false;
  private readonly listeners = new Set<(connected: boolean) => void>();
  private readonly first: Promise<NatsConnection>;
  private resolveFirst!: (nc: NatsConnection) => void;
  private rejectFirst!: (err: unknown) => void;
  private started = false;
  private closing = false;

  constructor(
    private readonly settings: NatsConnectSettings,
    private readonly deps: NatsConnectDeps,
  ) {
    this.first = new Promise((resolve, reject) => {
      this.resolveFirst = resolve;
      this.rejectFirst = reject;
    });
    // Callers that only use start() must not see an unhandled rejection.
    this.first.catch(() => undefined);
  }

  get connection(): NatsConnection | null {
    return this.nc;
  }

  get connected(): boolean {
    return this.isUp;
  }

  /** Prefix of the connection's inboxes; a subscription for replies must sit under it. */
  get inboxPrefix(): string | undefined {
    return this.deps.inboxPrefix;
  }

  /** Called on every transition; returns the unsubscribe function. */
  onChange(listener: (connected: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the connection once it first connects. */
  ready(): Promise<NatsConnection> {
    return this.first;
  }

  async start(firstConnectWaitMs = 2_000): Promise<void> {
    if (!this.started) {
      this.started = true;
      void this.connectLoop();
    }
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        if (!this.isUp) this.deps.logger.warn({ component: 'nats', servers: this.settings.servers }, 'NATS not reachable yet; buffering and retrying in the background');
        resolve();
      }, firstConnectWaitMs);
    });
    try {
      await Promise.race([this.first.then(() => undefined), waited]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async connectLoop(): Promise<void> {
    try {
      const nc = await connectFirst(this.settings, this.deps, () => this.closing);
      if (nc) this.attach(nc);
    } catch (err) {
      this.rejectFirst(err);
    }
  }

  private attach(nc: NatsConnection): void {
    if (this.closing) {
      void nc.close();
      return;
    }
    this.nc = nc;
    this.isUp = true;
    this.deps.logger.info({ component: 'nats', server: nc.getServer() }, 'NATS connected');
    watchStatus(nc, this.deps.logger, (up) => {
      this.isUp = up;
      for (const listener of this.listeners) listener(up);
    });
    this.resolveFirst(nc);
    for (const listener of this.listeners) listener(true);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.isUp = false;
    const nc = this.nc;
    this.nc = null;
    if (nc && !nc.isClosed()) await nc.close();
  }
}
