import { readFileSync } from 'node:fs';
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
import { NatsAuthError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';

/** The part of NatsConfig a connection needs (the CLI builds one from flags alone). */
export type NatsConnectSettings = Pick<NatsConfig, 'servers' | 'auth' | 'tls'>;

export interface NatsConnectDeps {
  logger: Logger;
  /** Connection name shown by the server (`nats server report connections`). */
  name?: string;
  /** Try servers in the configured order instead of shuffled (a preferred local server first). */
  inOrder?: boolean;
}

/** A TLS value is either a PEM text or a path to a PEM file (what the XML config holds). */
function pemOrFile(value: string, inline: 'ca' | 'cert' | 'key'): Partial<TlsOptions> {
  if (value.includes('-----BEGIN')) return { [inline]: value };
  return { [`${inline}File`]: value };
}

export function connectionOptions(settings: NatsConnectSettings, name?: string, inOrder = false): NodeConnectionOptions {
  const { auth, tls } = settings;
  const options: NodeConnectionOptions = {
    servers: settings.servers,
    name,
    noRandomize: inOrder,
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
  if (auth.nkeySeed !== undefined) authenticators.push(nkeyAuthenticator(new TextEncoder().encode(auth.nkeySeed.trim())));
  // Read once at connect: a creds file rotated later needs a restart, as with nats CLI.
  if (auth.credsFile !== undefined) authenticators.push(credsAuthenticator(readFileSync(auth.credsFile)));
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

function mapConnectError(err: unknown, servers: readonly string[]): unknown {
  if (err instanceof AuthorizationError) return new NatsAuthError(servers, { cause: err });
  return err;
}

/**
 * Connect and wait until connected (retrying unreachable servers forever).
 * Bad credentials reject with NatsAuthError. For the CLI and tools; the bridge
 * uses NatsClient so that a NATS outage at startup does not hold it up.
 */
export async function connectNats(settings: NatsConnectSettings, deps: NatsConnectDeps): Promise<NatsConnection> {
  try {
    const nc = await connect(connectionOptions(settings, deps.name, deps.inOrder));
    watchStatus(nc, deps.logger);
    return nc;
  } catch (err) {
    throw mapConnectError(err, settings.servers);
  }
}

/** Logs each connected/disconnected transition once (nats.js repeats disconnect per server tried). */
function watchStatus(nc: NatsConnection, logger: Logger, onChange?: (connected: boolean) => void): void {
  let connected = true;
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
        logger.error({ component: 'nats', err: status.error }, 'NATS connection error');
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
 * while bad credentials still fail startup with NatsAuthError.
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

  /**
   * Own retry loop instead of nats.js waitOnFirstConnect: that one cannot be
   * cancelled, so close() during a startup outage would leave a timer running forever.
   */
  private async connectLoop(): Promise<void> {
    const options = { ...connectionOptions(this.settings, this.deps.name, this.deps.inOrder), waitOnFirstConnect: false };
    let delayMs = 100;
    while (!this.closing) {
      try {
        this.attach(await connect(options));
        return;
      } catch (err) {
        if (err instanceof AuthorizationError) {
          this.rejectFirst(mapConnectError(err, this.settings.servers));
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      delayMs = Math.min(delayMs * 2, 2_000);
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
