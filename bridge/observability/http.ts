import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BindError } from '../errors.js';
import type { Metrics } from './metrics.js';

export interface HealthSource {
  /** True once the bridge has loaded its state and its ESL session is up. */
  ready(): boolean;
  /**
   * Component states for /health, e.g. { esl: 'connected', nats: 'reconnecting' }. With
   * `status: 'degraded'` (and what is wrong under `degraded`) /health says `ok: false`:
   * still 200, since the process is alive and restarting it would not help.
   */
  status(): Record<string, unknown>;
  /** What `fs-event-bridge peers` prints. */
  peers(): unknown;
}

/** More endpoints on the same server (the board); returns false when the path is not its own. */
export type RouteHandler = (req: IncomingMessage, res: ServerResponse, path: string) => boolean;

/**
 * Prometheus metrics plus the endpoints operators and orchestrators probe:
 * /health (alive, with component states), /ready (200 only when ready), /peers.
 * node:http is enough here; a framework would add nothing but weight.
 */
export class StatusServer {
  private server: Server | null = null;

  constructor(
    private readonly metrics: Metrics,
    private readonly health: HealthSource,
    private readonly routes: readonly RouteHandler[] = [],
  ) {}

  async listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const json = (code: number, body: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (path === '/metrics') {
        this.metrics.registry
          .metrics()
          .then((text) => {
            res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
            res.end(text);
          })
          .catch((err: Error) => json(500, { error: err.message }));
      } else if (path === '/health') {
        const status = this.health.status();
        json(200, { ok: status.status !== 'degraded', status: 'ok', ready: this.health.ready(), ...status });
      } else if (path === '/ready') {
        const ready = this.health.ready();
        json(ready ? 200 : 503, { ready });
      } else if (path === '/peers') {
        json(200, this.health.peers());
      } else if (this.routes.some((route) => route(req, res, path))) {
        // served by the route
      } else {
        json(404, { error: 'not found', endpoints: ['/metrics', '/health', '/ready', '/peers'] });
      }
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new BindError('the metrics server', `${host}:${port}`, ['metrics/host', 'metrics/port'], error.message, { cause: error })));
      server.listen(port, host, () => resolve());
    });
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
