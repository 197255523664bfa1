import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './logger.js';

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
  readonly latency: Histogram<'transport'>;

  /**
   * A component's own counter, created once per registry: several components (or a
   * restarted one) may ask for the same name, and prom-client refuses duplicates.
   */
  counter<L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing) return existing as Counter<L>;
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  constructor(options: { defaultMetrics?: boolean } = {}) {
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
