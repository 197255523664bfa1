import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './logger.js';

/** The node label of every node past the cap (Metrics.nodeLabel). */
export const OTHER_NODE = '_other';
export const DEFAULT_MAX_NODE_LABELS = 256;

/**
 * One registry per bridge instance (tests run several in a process), with the
 * counters every component shares. Components add their own metrics to `registry`.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly eventsIn: Counter<'transport' | 'node'>;
  readonly eventsOut: Counter<'transport'>;
  readonly drops: Counter<'component' | 'cause'>;
  readonly filtered: Counter<'component' | 'cause'>;
  readonly gapsLost: Counter<'transport' | 'node'>;
  readonly injected: Counter<'transport'>;
  readonly queueDepth: Gauge<'component'>;
  readonly queueBytes: Gauge<'component'>;
  readonly latency: Histogram<'transport'>;
  /** Node label values handed out so far (nodeLabel). */
  private readonly nodeLabels = new Set<string>();
  private readonly maxNodeLabels: number;

  /**
   * A component's own counter, created once per registry: several components (or a
   * restarted one) may ask for the same name, and prom-client refuses duplicates.
   */
  counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing) return existing as Counter<L>;
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /**
   * A gauge whose values are read when Prometheus scrapes (states that live elsewhere:
   * connections, peers). A second one of the same name replaces the first, so a
   * restarted component's gauge reads the new component.
   */
  gauge<L extends string = never>(name: string, help: string, labelNames: readonly L[], read: (gauge: Gauge<L>) => void): Gauge<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing) this.registry.removeSingleMetric(name);
    return new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        read(this);
      },
    });
  }

  /**
   * The `node` label for a node name: the name itself for the first `maxNodeLabels`
   * nodes, OTHER_NODE for any after. Senders come from the wire and anyone can invent
   * them; every label value is a series Prometheus keeps forever.
   */
  nodeLabel(node: string): string {
    if (this.nodeLabels.has(node)) return node;
    if (this.nodeLabels.size >= this.maxNodeLabels) return OTHER_NODE;
    this.nodeLabels.add(node);
    return node;
  }

  /** `maxNodeLabels`: distinct node label values before the rest count as OTHER_NODE (default DEFAULT_MAX_NODE_LABELS). */
  constructor(options: { defaultMetrics?: boolean; maxNodeLabels?: number } = {}) {
    this.maxNodeLabels = options.maxNodeLabels ?? DEFAULT_MAX_NODE_LABELS;
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'fsb_' });
    const registers = [this.registry];
    this.eventsIn = new Counter({ name: 'fsb_events_in_total', help: 'Events received, by transport and origin node', labelNames: ['transport', 'node'], registers });
    this.eventsOut = new Counter({ name: 'fsb_events_out_total', help: 'Events sent, by transport', labelNames: ['transport'], registers });
    this.drops = new Counter({ name: 'fsb_drops_total', help: 'Events or datagrams dropped, by component and cause', labelNames: ['component', 'cause'], registers });
    this.filtered = new Counter({
      name: 'fsb_filtered_total',
      help: 'Events discarded by design, not lost: our own events coming back, a second copy from another transport, anything carrying the loop guard; by component and cause',
      labelNames: ['component', 'cause'],
      registers,
    });
    this.gapsLost = new Counter({ name: 'fsb_sequence_gap_events_total', help: 'Events missing according to Event-Sequence gaps, by transport and origin node', labelNames: ['transport', 'node'], registers });
    this.injected = new Counter({ name: 'fsb_injected_total', help: 'Remote events injected into the local node, by the transport that delivered them', labelNames: ['transport'], registers });
    this.queueDepth = new Gauge({ name: 'fsb_queue_depth', help: 'Items waiting in a bounded queue', labelNames: ['component'], registers });
    this.queueBytes = new Gauge({ name: 'fsb_queue_bytes', help: 'Bytes waiting in a bounded queue (their size on the wire)', labelNames: ['component'], registers });
    this.latency = new Histogram({
      name: 'fsb_remote_event_age_seconds',
      help: 'Age of remote events on arrival (origin Event-Date-Timestamp to receive)',
      labelNames: ['transport'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
  }
}

/**
 * fsb_queue_depth and fsb_queue_bytes of one bounded queue, written at most once per
 * event-loop turn: a queue changes on every offer and every answer, and two labelled
 * prom-client sets each time cost 1.7% of the bridge's CPU at saturation (the NATS
 * publisher) and 4.4% of bridge B's main-thread work in a quick latency run (41 of 921 ms,
 * the injector). A scrape sees the queue as it was at the end of a turn.
 */
export class QueueGauges {
  private scheduled = false;
  private readonly depthGauge;
  private readonly bytesGauge;

  constructor(
    metrics: Metrics,
    component: string,
    private readonly depth: () => number,
    private readonly bytes: () => number,
  ) {
    this.depthGauge = metrics.queueDepth.labels({ component });
    this.bytesGauge = metrics.queueBytes.labels({ component });
  }

  changed(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.update);
  }

  /** Now, not at the end of the turn (a stopped queue's last values). */
  readonly update = (): void => {
    this.scheduled = false;
    this.depthGauge.set(this.depth());
    this.bytesGauge.set(this.bytes());
  };
}

/**
 * Counts every drop and logs it at most once per cause per interval, with how many
 * happened since the last line: nothing is lost silently, and a flood of bad
 * packets does not become a flood of log lines.
 *
 * `filtered` is for what the design discards on purpose (loop guard, duplicates, our
 * own events): counted apart, in fsb_filtered_total, and logged at info, so that an
 * alert on fsb_drops_total means loss and does not fire on every healthy second.
 */
export class DropReporter {
  private readonly pending = new Map<string, { count: number; lastLog: number }>();

  constructor(
    private readonly component: string,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  drop(cause: string, detail?: unknown, count = 1): void {
    this.metrics.drops.inc({ component: this.component, cause }, count);
    const total = this.due(`drop:${cause}`, count);
    if (total > 0) this.logger.warn({ component: this.component, cause, dropped: total, detail }, `${this.component}: dropped ${total} (${cause})`);
  }

  /** A warning about something that is not a drop (rows waiting for a failing database, say), rate-limited the same way. */
  warn(cause: string, message: string, detail?: unknown, count = 1): void {
    const total = this.due(`warn:${cause}`, count);
    if (total > 0) this.logger.warn({ component: this.component, cause, count: total, detail }, `${this.component}: ${message}`);
  }

  filtered(cause: string, count = 1): void {
    this.metrics.filtered.inc({ component: this.component, cause }, count);
    const total = this.due(`filtered:${cause}`, count);
    if (total > 0) this.logger.info({ component: this.component, cause, filtered: total }, `${this.component}: filtered ${total} (${cause}), by design`);
  }

  /** Adds `count` to the cause's tally; returns the tally when a log line is due (and resets it), else 0. */
  private due(key: string, count: number): number {
    const now = Date.now();
    let entry = this.pending.get(key);
    if (!entry) {
      entry = { count: 0, lastLog: 0 };
      this.pending.set(key, entry);
    }
    entry.count += count;
    if (now - entry.lastLog < this.intervalMs) return 0;
    const total = entry.count;
    entry.count = 0;
    entry.lastLog = now;
    return total;
  }
}

/**
 * What an operator pages on besides drops: who this bridge is (the dashboard's node
 * variable), whether its connections are up, and each peer's liveness as the bridge
 * judges it (up means a HEARTBEAT within the peer timeout).
 */
export function registerStateGauges(
  metrics: Metrics,
  state: {
    node: { name: string; cluster: string };
    eslConnected: () => boolean;
    /** Absent when NATS is not configured. */
    natsConnected?: () => boolean;
    peers: () => readonly { name: string; up: boolean; lastHeartbeat: number | null }[];
  },
): void {
  metrics.gauge('fsb_bridge_info', 'Always 1; labels name this bridge (node = its switchname) so dashboards can select a node', ['bridge', 'cluster'], (g) => {
    g.set({ bridge: state.node.name, cluster: state.node.cluster }, 1);
  });
  metrics.gauge('fsb_esl_connected', '1 while the ESL session with the local FreeSWITCH is up, else 0', [], (g) => g.set(state.eslConnected() ? 1 : 0));
  const nats = state.natsConnected;
  if (nats) metrics.gauge('fsb_nats_connected', '1 while connected to a NATS server, else 0', [], (g) => g.set(nats() ? 1 : 0));
  metrics.gauge('fsb_peer_up', '1 while a peer is up (HEARTBEAT heard within the peer timeout), 0 once it is down', ['peer'], (g) => {
    g.reset();
    for (const peer of state.peers()) g.set({ peer: peer.name }, peer.up ? 1 : 0);
  });
  metrics.gauge('fsb_peer_heartbeat_age_seconds', "Seconds since a peer's last HEARTBEAT", ['peer'], (g) => {
    g.reset();
    const now = Date.now();
    for (const peer of state.peers()) if (peer.lastHeartbeat !== null) g.set({ peer: peer.name }, (now - peer.lastHeartbeat) / 1000);
  });
}

/**
 * At most `limit` admissions per `intervalMs` window, for things that are fine one at a
 * time and harmful in a flood (a log line per peer change, a peer event injected into
 * FreeSWITCH). `admit()` returns -1 when refused, else how many were refused since the
 * previous admission, so the admitted line can say what it stands for.
 */
export class Budget {
  private windowStart = -Infinity;
  private used = 0;
  private refused = 0;

  constructor(
    readonly limit: number,
    readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  admit(): number {
    const now = this.now();
    if (now - this.windowStart >= this.intervalMs) {
      this.windowStart = now;
      this.used = 0;
    }
    if (this.used >= this.limit) {
      this.refused++;
      return -1;
    }
    this.used++;
    const refused = this.refused;
    this.refused = 0;
    return refused;
  }
}
