import type { EslConfig, InjectConfig } from '../../config/types.js';
import type { EslFrame } from '../../esl/frame-parser.js';
import type { FsEvent } from '../../event/event.js';
import { CommandError, NotConnectedError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { QueueGauges, type Metrics } from '../../observability/metrics.js';
import { EslClient, EslState, type PipelinedReply } from './client.js';

/**
 * How one injection ended.
 * - `injected`: FreeSWITCH answered +OK.
 * - `unconfirmed`: written to the kernel, then we closed the connection (a broken
 *   stream) before the reply. mod_event_socket reads whatever reached its socket before
 *   it sees the close, so it was most likely fired; it is not written again, so that
 *   nothing is injected twice. When FreeSWITCH closes the connection instead, what it had
 *   not answered it never read: that is written again on the next connection, first.
 * - `refused`: FreeSWITCH answered -ERR.
 * - `stopped`: still queued when the injector stopped.
 */
export type InjectOutcome = 'injected' | 'unconfirmed' | 'refused' | 'stopped';

export interface Injection {
  /** The whole sendevent command (sendeventCommand()). */
  readonly command: string;
  /** The event the command was made from (what tests check the command against). */
  readonly event?: FsEvent;
  /** Events of one call or one user share a key and so a connection: their order is kept. Null: any connection. */
  readonly orderKey: string | null;
  /** What the journal records once the command is in the kernel (the dedup key), if anything. */
  readonly key?: string;
  readonly done?: (outcome: InjectOutcome, error?: Error) => void;
}

export interface InjectorOptions {
  logger: Logger;
  metrics: Metrics;
  nodeName: string;
  /** Keys of injections whose bytes reached the kernel (the durable dedup journal). */
  onWritten?: (keys: string[]) => void;
  /** Bytes written ahead of the replies on one connection (default 64 KB). */
  windowBytes?: number;
  /** See EslClientOptions.stableAfterMs. */
  stableAfterMs?: number;
}

/**
 * What a queued injection keeps: its command and how it ends, not the event it was made
 * from (several times the command's size on the heap; queued by the hundred thousand).
 */
interface Queued {
  readonly command: string;
  readonly key: string | undefined;
  readonly done: Injection['done'];
  readonly bytes: number;
}

const DEFAULT_WINDOW_BYTES = 64 * 1024;
/**
 * Heap an injection holds besides its command: its entry, the outcome callback and the
 * context it closes over, its key, the caller's pending-key entry. Measured at about
 * 230 bytes (50,000 queued soak-sized events, heap after a full GC); counted in the
 * budget so that queue-max-bytes bounds memory, not only command text.
 */
const QUEUED_OVERHEAD_BYTES = 256;
const STALL_CHECK_MS = 1_000;

/**
 * Injects events into the local FreeSWITCH over command-only ESL connections, as
 * fast as FreeSWITCH takes them, without losing what it cannot take at once.
 *
 * Why it is built this way (mod_event_socket.c, v1.10.12):
 * - A listener's thread reads a command with one recv() of one byte, then a
 *   sched_yield(), until the blank line; only a Content-Length body is read in bulk.
 *   A connection therefore ingests a fixed number of header bytes per second, and
 *   waiting for each reply before writing the next command adds a round trip to every
 *   event. So commands are pipelined: each connection keeps `windowBytes` written
 *   ahead of its replies, enough that FreeSWITCH never finds its socket empty.
 * - Each connection has its own thread, so several connections multiply the rate.
 *   Events that carry an order key (a call, a user) always take the same connection;
 *   the others go to the connection with the least waiting.
 * - A listener that also subscribes gets its events only between commands: a
 *   connection kept busy with sendevents would starve its own subscription, whose
 *   queue FreeSWITCH caps at 100,000 events. Injection connections subscribe to nothing.
 *
 * Memory is bounded in bytes: `queueMaxBytes` of commands (their UTF-8 size, plus
 * QUEUED_OVERHEAD_BYTES each for what is kept beside it) across connections, what is
 * queued and what is written but not yet answered. offer() refuses beyond it; the
 * caller counts the drop or, for NATS, waits on room(). Only the command and its
 * outcome callback are kept, never the event it was made from.
 *
 * A command is never timed out: behind a backlog it waits its turn, and FreeSWITCH
 * answers it late, not never. A connection whose FreeSWITCH has answered nothing for
 * `commandTimeoutMs` while commands wait is logged (once per stall), not dropped.
 */
export class EslInjector {
  private readonly lanes: Lane[];
  private queuedBytes = 0;
  private queuedCount = 0;
  private waiters: (() => void)[] = [];
  private stallTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly queueGauges;
  private readonly resentCounter;

  constructor(
    esl: EslConfig,
    private readonly config: InjectConfig,
    private readonly options: InjectorOptions,
  ) {
    const windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    this.lanes = [];
    for (let i = 0; i < config.connections; i++) {
      const client = new EslClient(esl, {
        subscription: null,
        logger: options.logger,
        metrics: options.metrics,
        nodeName: options.nodeName,
        label: `inject-${i + 1}`,
        stableAfterMs: options.stableAfterMs,
      });
      this.lanes.push(new Lane(client, windowBytes, esl.commandTimeoutMs, this, options.logger));
    }
    this.queueGauges = new QueueGauges(options.metrics, 'inject', () => this.queuedCount, () => this.queuedBytes);
    this.resentCounter = options.metrics.counter(
      'fsb_inject_resent_total',
      'Injections written again because FreeSWITCH closed the ESL connection before reading them (each is then counted once more when answered)',
    );
  }

  start(): void {
    for (const lane of this.lanes) lane.start();
    this.stallTimer = setInterval(() => {
      for (const lane of this.lanes) lane.checkStall();
    }, STALL_CHECK_MS);
    this.stallTimer.unref();
  }

  /** Resolves when every injection connection is up. */
  async ready(timeoutMs?: number): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.client.ready(timeoutMs)));
  }

  /** Every injection connection is up. */
  get connected(): boolean {
    return this.lanes.every((lane) => lane.client.state === EslState.Connected);
  }

  /** Bytes queued or written and not yet answered. */
  get bytes(): number {
    return this.queuedBytes;
  }

  /** Injections queued or written and not yet answered. */
  get length(): number {
    return this.queuedCount;
  }

  /** Whether offer() takes an injection now: while below the budget, so it is exceeded by at most one event. */
  hasRoom(): boolean {
    return this.queuedBytes < this.config.queueMaxBytes;
  }

  /** Null when there is room now, else a promise that resolves once there is (or the injector stops). */
  room(): Promise<void> | null {
    if (this.hasRoom() || this.stopping) return null;
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /**
   * Queue an injection. False when the queue is full (nothing queued; the caller counts
   * it) or the injector stopped.
   */
  offer(item: Injection): boolean {
    if (this.stopping || !this.hasRoom()) return false;
    const bytes = Buffer.byteLength(item.command);
    this.queuedBytes += bytes + QUEUED_OVERHEAD_BYTES;
    this.queuedCount++;
    this.lanes[this.laneFor(item.orderKey)].push({ command: item.command, key: item.key, done: item.done, bytes });
    this.queueGauges.changed();
    return true;
  }

  /**
   * Stop taking injections, give FreeSWITCH until `deadline` (Date.now() based) to take
   * what is queued, then close. What was still queued ends as `stopped`.
   */
  async stop(deadline: number): Promise<void> {
    this.stopping = true;
    this.releaseWaiters();
    await Promise.all(this.lanes.map((lane) => lane.drained(deadline)));
    if (this.stallTimer) clearInterval(this.stallTimer);
    this.stallTimer = null;
    for (const lane of this.lanes) lane.abandon();
    await Promise.all(this.lanes.map((lane) => lane.client.stop()));
    this.queueGauges.update();
  }

  /** A lane finished with an injection (answered, closed, abandoned). */
  settled(entry: Queued): void {
    this.queuedBytes -= entry.bytes + QUEUED_OVERHEAD_BYTES;
    this.queuedCount--;
    this.queueGauges.changed();
    if (this.waiters.length > 0 && this.hasRoom()) this.releaseWaiters();
  }

  resent(count: number): void {
    this.resentCounter.inc(count);
  }

  written(keys: string[]): void {
    if (keys.length > 0) this.options.onWritten?.(keys);
  }

  private releaseWaiters(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  private laneFor(orderKey: string | null): number {
    if (this.lanes.length === 1) return 0;
    if (orderKey !== null) return fnv1a(orderKey) % this.lanes.length;
    let best = 0;
    for (let i = 1; i < this.lanes.length; i++) if (this.lanes[i].waitingBytes < this.lanes[best].waitingBytes) best = i;
    return best;
  }
}

/** One injection connection: its FIFO, what it has written ahead, and its pump. */
class Lane {
  private queue: Queued[] = [];
  private head = 0;
  private inFlightCount = 0;
  private inFlightBytes = 0;
  /** Bytes queued or in flight here: what least-loaded placement compares. */
  waitingBytes = 0;
  private lastProgress = Date.now();
  private stallLogged = false;
  private idleWaiters: (() => void)[] = [];
  /** Injections the last connection loss left without a reply. */
  private unconfirmed = 0;
  /** Written, unanswered when FreeSWITCH closed the connection: they go first on the next one. */
  private resend: Queued[] = [];

  constructor(
    readonly client: EslClient,
    private readonly windowBytes: number,
    private readonly stallMs: number,
    private readonly injector: EslInjector,
    private readonly logger: Logger,
  ) {
    client.on('state', (state: EslState) => {
      if (state === EslState.Connected) {
        this.lastProgress = Date.now();
        this.pump();
      } else {
        if (this.resend.length > 0) this.requeueUnanswered();
        if (this.unconfirmed > 0) {
          this.logger.warn(
            { esl: client.label, unconfirmed: this.unconfirmed, queued: this.queue.length - this.head },
            'ESL connection lost with injections written but not answered: FreeSWITCH reads what reached its socket, so they are counted unconfirmed and not written again; the queued ones follow on the next connection',
          );
          this.unconfirmed = 0;
        }
      }
    });
  }

  start(): void {
    this.client.start();
  }

  push(entry: Queued): void {
    this.queue.push(entry);
    this.waitingBytes += entry.bytes;
    if (this.inFlightBytes < this.windowBytes) this.pump();
  }

  /** Write queued commands until the window is full, in one socket write. */
  private pump(): void {
    if (this.client.state !== EslState.Connected || this.head === this.queue.length) return;
    const commands: string[] = [];
    const replies: PipelinedReply[] = [];
    const keys: string[] = [];
    let bytes = 0;
    const first = this.head;
    while (this.head < this.queue.length && this.inFlightBytes + bytes < this.windowBytes) {
      const entry = this.queue[this.head++];
      commands.push(entry.command);
      replies.push((error, frame) => this.onReply(entry, error, frame));
      if (entry.key !== undefined) keys.push(entry.key);
      bytes += entry.bytes;
    }
    if (!this.client.pipeline(commands, replies, (error) => (error ? undefined : this.injector.written(keys)))) {
      // The connection went away between the state check and the write: they stay first in line.
      this.head = first;
      return;
    }
    if (this.inFlightCount === 0) this.lastProgress = Date.now();
    this.inFlightCount += commands.length;
    this.inFlightBytes += bytes;
    this.compact();
  }

  private onReply(entry: Queued, error: Error | null, frame: EslFrame | null): void {
    this.inFlightCount--;
    this.inFlightBytes -= entry.bytes;
    if (error instanceof NotConnectedError && error.closedByFreeswitch) {
      // Still waiting (bytes, budget): requeued once the connection is seen down.
      this.resend.push(entry);
      return;
    }
    this.waitingBytes -= entry.bytes;
    this.lastProgress = Date.now();
    if (this.stallLogged) {
      this.stallLogged = false;
      this.logger.info({ esl: this.client.label, queued: this.queue.length - this.head }, 'FreeSWITCH answers injections again');
    }
    this.injector.settled(entry);
    if (error === null) {
      const refused = CommandError.fromReply(entry.command, frame?.headers['Reply-Text'] ?? '');
      entry.done?.(refused ? 'refused' : 'injected', refused);
    } else if (error instanceof NotConnectedError) {
      this.unconfirmed++;
      entry.done?.('unconfirmed', error);
    } else entry.done?.('refused', error);
    // Refill at half the window: FreeSWITCH still has half of it to read, and we write in fewer, larger pieces.
    if (this.inFlightBytes <= this.windowBytes / 2) this.pump();
    if (this.waitingBytes === 0) this.wakeIdle();
  }

  /**
   * FreeSWITCH closed the connection with commands written and not answered. It answers
   * each command right after running it (mod_event_socket's listener_run), so those
   * were never read (in its socket when it closed, gone with it): they are written
   * again, before what is queued, so their order holds. Only a FreeSWITCH that died
   * between running a command and writing its reply gets that one twice.
   */
  private requeueUnanswered(): void {
    const resend = this.resend;
    this.resend = [];
    this.queue = resend.concat(this.queue.slice(this.head));
    this.head = 0;
    this.injector.resent(resend.length);
    this.logger.warn(
      { esl: this.client.label, resent: resend.length, queued: this.queue.length - resend.length },
      'FreeSWITCH closed the ESL connection before answering injections it had not read: they are written again first on the next connection',
    );
  }

  /** FreeSWITCH has answered nothing for stallMs while commands wait: say so once. */
  checkStall(): void {
    if (this.inFlightCount === 0) return;
    const silentMs = Date.now() - this.lastProgress;
    if (silentMs < this.stallMs || this.stallLogged) return;
    this.stallLogged = true;
    this.logger.warn(
      { esl: this.client.label, silentMs, written: this.inFlightCount, queued: this.queue.length - this.head },
      'FreeSWITCH has not answered an injection for a while; still waiting (nothing is dropped until the inject queue is full)',
    );
  }

  /** Resolves when nothing is queued or in flight here, or at the deadline. */
  drained(deadline: number): Promise<void> {
    if (this.waitingBytes === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
      this.idleWaiters.push(done);
    });
  }

  /** At stop: what was never written ends as `stopped` (written ones end when the connection closes). */
  abandon(): void {
    const left = this.queue.slice(this.head);
    this.queue = [];
    this.head = 0;
    for (const entry of left) {
      this.waitingBytes -= entry.bytes;
      this.injector.settled(entry);
      entry.done?.('stopped');
    }
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Drop the written prefix of the queue now and then, so the array does not grow forever. */
  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * 32-bit FNV-1a: spreads order keys over connections. Any stable hash would do; this
 * one is five lines and needs no dependency.
 */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

