import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { Counter } from 'prom-client';
import type { EslConfig } from '../../config/types.js';
import { eventFromFrame, isEventFrame } from '../../esl/event-frame.js';
import { ContentType, EslFrameParser, type EslFrame } from '../../esl/frame-parser.js';
import type { FsEvent } from '../../event/event.js';
import {
  AuthError,
  CommandError,
  CommandTimeoutError,
  FrameTooLargeError,
  HeaderInjectionError,
  InvalidEslHeaderError,
  NotConnectedError,
} from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { DropReporter, type Metrics } from '../../observability/metrics.js';
import { LOOP_GUARD_HEADER } from '../../pipeline/types.js';

export const EslState = {
  /** start() not called yet. */
  Idle: 'idle',
  /** Authenticated and subscribed: events flow. */
  Connected: 'connected',
  /** Not connected (never yet, or lost); retrying with backoff. */
  Disconnected: 'disconnected',
  Stopped: 'stopped',
} as const;
export type EslState = (typeof EslState)[keyof typeof EslState];

export interface EslClientOptions {
  /**
   * Event list for `event <format> ...`, e.g. Bindings.toEslSubscription(); null for a
   * connection that only sends commands (the injector's: mod_event_socket delivers a
   * listener's events only between its commands, so a connection busy with pipelined
   * sendevents would starve its own subscription).
   */
  subscription: string | null;
  logger: Logger;
  metrics: Metrics;
  /** The local node's name, the `node` label of the ingest counters. */
  nodeName?: string;
  /** Event format to subscribe in (default plain: it is the faster to parse). */
  format?: 'plain' | 'json';
  /** Shown in logs to tell several connections apart (default `esl`). */
  label?: string;
  /**
   * A connection counts as healthy once it has stayed up this long; only then does
   * the reconnect backoff start again from 100 ms (default 5 s).
   */
  stableAfterMs?: number;
}

interface PendingReply {
  command: string;
  resolve: (frame: EslFrame) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | null;
}

/** How a pipelined command ended: its reply, or the error that ended the wait. */
export type PipelinedReply = (error: Error | null, frame: EslFrame | null) => void;

interface PendingJob {
  resolve: (body: string) => void;
  reject: (err: Error) => void;
}

const FIRST_RETRY_MS = 100;
const DEFAULT_STABLE_AFTER_MS = 5_000;
/** More Core-UUIDs than a node ever has in one lifetime of the bridge; older ones are forgotten. */
const MAX_TRACKED_CORES = 16;

/**
 * Inbound ESL connection to the local FreeSWITCH: authenticates, subscribes, and
 * hands parsed events to one consumer through a bounded queue, reconnecting forever.
 *
 * A thin adapter: framing is EslFrameParser's, event parsing parsePlain/parseJson's;
 * this class owns the socket, the command FIFO, backpressure and sequence-gap checks.
 *
 * Events come out of `events()` in batches (one array per wake-up) because a batch
 * costs one promise round trip for many events. Memory is bounded in events and in
 * bytes: the queue holds at most `queueMaxEvents` events and `queueMaxBytes` bytes of
 * frames (their size on the wire); when either is reached the socket is paused and
 * the frames of the read in progress wait, unparsed into events, until the consumer
 * takes the queue. The consumer may hold one batch while the next queue fills, so at
 * most twice the limits are alive (plus one socket read and the parser's one frame,
 * itself capped by `maxFrameBytes`).
 *
 * Replies come back in command order (mod_event_socket answers one command at a
 * time), so a FIFO matches them. A command that times out keeps its slot so its
 * late reply cannot be taken for the next command's.
 *
 * Reconnects back off on repeated failures of any kind (refused, auth, a broken
 * frame right after a good handshake): the delay doubles from 100 ms to
 * `reconnectMaxMs` and starts over only once a connection has stayed up for
 * `stableAfterMs`. A failing series logs its cause once, not once per attempt.
 */
export class EslClient extends EventEmitter {
  private stateValue: EslState = EslState.Idle;
  private lastErrorValue: Error | null = null;
  private socket: net.Socket | null = null;
  private parser: EslFrameParser;
  private pending: PendingReply[] = [];
  private readonly jobs = new Map<string, PendingJob>();
  private retryTimer: NodeJS.Timeout | null = null;
  /** Connections that failed or did not stay up for stableAfterMs, since the last stable one. */
  private failures = 0;
  private stableTimer: NodeJS.Timeout | null = null;
  private connectedAt = 0;
  /** The causes already logged in the current failing series. */
  private readonly loggedCauses = new Set<string>();
  private stopping = false;
  private disconnectNotice: string | null = null;
  /** We closed the current connection ourselves (a broken stream): FreeSWITCH still reads what reached its socket. */
  private resetByUs = false;
  private everConnected = false;

  private queue: FsEvent[] = [];
  private queueBytes = 0;
  /** Frames read while the queue was full; at most one socket read's worth. */
  private held: EslFrame[] = [];
  private paused = false;
  private wake: (() => void) | null = null;

  private readonly lastSequence = new Map<string, number>();
  private lastCore: string | null = null;
  /** Set on reconnect: the first event tells whether anything was lost meanwhile. */
  private checkGap = false;

  private readonly format: 'plain' | 'json';
  private readonly node: string;
  /** Tells connections apart in logs. */
  readonly label: string;
  private readonly stableAfterMs: number;
  private readonly deliverBackgroundJobs: boolean;
  private readonly drops: DropReporter;
  private readonly eventsIn: ReturnType<Metrics['eventsIn']['labels']>;
  private readonly reconnectSkipped: Counter;
  /** The queue gauges; only a connection that subscribes has a queue to show. */
  private readonly queueDepth: { set(value: number): void };
  private readonly queueBytesGauge: { set(value: number): void };
  private readonly reconnects: Counter;
  private readonly streamErrors: Counter<'cause'>;

  constructor(
    private readonly config: EslConfig,
    private readonly options: EslClientOptions,
  ) {
    super();
    this.format = options.format ?? 'plain';
    this.node = options.nodeName ?? 'local';
    this.label = options.label ?? 'esl';
    this.stableAfterMs = options.stableAfterMs ?? DEFAULT_STABLE_AFTER_MS;
    this.parser = new EslFrameParser({ maxFrameBytes: config.maxFrameBytes });
    this.deliverBackgroundJobs = options.subscription !== null && subscribesTo(options.subscription, 'BACKGROUND_JOB');
    const { metrics } = options;
    this.drops = new DropReporter('esl', metrics, options.logger);
    this.eventsIn = metrics.eventsIn.labels({ transport: 'esl', node: this.node });
    this.reconnectSkipped = metrics.counter(
      'fsb_esl_reconnect_sequence_skipped_total',
      'Event-Sequence numbers skipped across ESL reconnects: an upper bound of the events missed while disconnected (it includes every event outside the subscription), not a loss count',
    );
    const subscribed = options.subscription !== null;
    this.queueDepth = subscribed ? metrics.queueDepth.labels({ component: 'esl' }) : { set: () => undefined };
    this.queueBytesGauge = subscribed ? metrics.queueBytes.labels({ component: 'esl' }) : { set: () => undefined };
    this.reconnects = metrics.counter('fsb_esl_reconnects_total', 'ESL connections re-established after a loss');
    this.streamErrors = metrics.counter('fsb_esl_stream_errors_total', 'ESL streams closed because the framing broke, by cause', ['cause']);
  }

  get state(): EslState {
    return this.stateValue;
  }

  /** Why the last connection attempt failed (AuthError for a refused password), null once connected. */
  get lastError(): Error | null {
    return this.lastErrorValue;
  }

  /** Events parsed and waiting for the consumer. */
  get queueLength(): number {
    return this.queue.length;
  }

  /** Wire bytes of the events waiting for the consumer. */
  get queuedBytes(): number {
    return this.queueBytes;
  }

  /** Failed or short-lived connections since the last stable one (what the backoff grows with). */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Commands written and still waiting for their reply. */
  get pendingReplies(): number {
    return this.pending.length;
  }

  /** Whether reading from FreeSWITCH is paused for backpressure. */
  get readPaused(): boolean {
    return this.paused;
  }

  /** Begin connecting; connection state is reported through the 'state' event. */
  start(): void {
    if (this.stateValue !== EslState.Idle) return;
    this.setState(EslState.Disconnected, false);
    this.connect();
  }

  /** Resolves when connected and subscribed (immediately if already). */
  async ready(timeoutMs?: number): Promise<void> {
    if (this.stateValue === EslState.Connected) return;
    await new Promise<void>((resolve, reject) => {
      const timer = timeoutMs === undefined ? null : setTimeout(() => {
        this.off('state', onState);
        reject(this.lastErrorValue ?? new NotConnectedError(`ESL not connected after ${timeoutMs} ms`));
      }, timeoutMs);
      const onState = (state: EslState) => {
        if (state !== EslState.Connected && state !== EslState.Stopped) return;
        this.off('state', onState);
        if (timer) clearTimeout(timer);
        if (state === EslState.Connected) resolve();
        else reject(new NotConnectedError('ESL client stopped'));
      };
      this.on('state', onState);
    });
  }

  /**
   * The event stream, in batches. One consumer; `break` leaves the client running.
   * Ends after stop() once the queue is empty.
   */
  async *events(): AsyncGenerator<FsEvent[], void, undefined> {
    for (;;) {
      if (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        this.queueBytes = 0;
        this.refill();
        yield batch;
        continue;
      }
      if (this.stateValue === EslState.Stopped) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** `api <cmd>`: the api/response body. FreeSWITCH's `-ERR ...` answers come back as text, as FreeSWITCH sends them. */
  async api(command: string): Promise<string> {
    checkCommandLine('api', command);
    const frame = await this.command(`api ${command}\n\n`);
    return frame.body?.toString('utf8') ?? '';
  }

  /**
   * `bgapi <cmd>` with a Job-UUID of our own, so the BACKGROUND_JOB event can be
   * matched without racing the reply. BACKGROUND_JOB is part of every subscription
   * this client makes; it reaches the event stream only when the subscription asked for it.
   */
  async bgapi(command: string): Promise<{ jobUuid: string; result: Promise<string> }> {
    checkCommandLine('bgapi', command);
    const jobUuid = randomUUID();
    const result = new Promise<string>((resolve, reject) => this.jobs.set(jobUuid, { resolve, reject }));
    // Callers that only want the Job-UUID must not see an unhandled rejection on disconnect.
    result.catch(() => undefined);
    try {
      await this.command(`bgapi ${command}\nJob-UUID: ${jobUuid}\n\n`);
    } catch (err) {
      this.jobs.delete(jobUuid);
      throw err;
    }
    return { jobUuid, result };
  }

  /**
   * `sendevent <Event-Name>` with every other header and the body. Resolves with the
   * Event-UUID FreeSWITCH gave it.
   *
   * mod_event_socket reads each line raw: no URL decoding, the name ends at the
   * first ':' and leading spaces of the value are dropped (so a value that starts
   * with spaces loses them), and an empty value removes the header. A CR, LF or NUL
   * would cut the line and let a value add headers of its own, so they are refused,
   * as are names that are empty or contain ':'.
   */
  async sendEvent(event: FsEvent): Promise<string> {
    const frame = await this.command(sendeventCommand(event));
    const reply = frame.headers['Reply-Text'] ?? '';
    return reply.startsWith('+OK ') ? reply.slice(4) : reply;
  }

  /**
   * Write commands back to back in one socket write, without waiting for replies:
   * mod_event_socket reads and answers them one at a time, in order. Each command's
   * reply (or the error that ended its wait: a -ERR, the connection closing) goes to
   * its callback; there is no per-command timeout, because a command queued behind
   * others waits for them and that is not a failure. `onWritten` runs once the bytes
   * are in the kernel, so what the caller records then has left the process.
   * Returns false, calling nothing, when not connected.
   */
  pipeline(commands: readonly string[], replies: readonly PipelinedReply[], onWritten?: (error: Error | null) => void): boolean {
    const socket = this.socket;
    if (!socket || socket.destroyed || !socket.writable || this.stateValue !== EslState.Connected) return false;
    for (let i = 0; i < commands.length; i++) {
      const reply = replies[i];
      this.pending.push({ command: commands[i], resolve: (frame) => reply(null, frame), reject: (err) => reply(err, null), timer: null });
    }
    socket.write(commands.length === 1 ? commands[0] : commands.join(''), onWritten && ((err) => onWritten(err ?? null)));
    return true;
  }

  /** Graceful stop: `exit`, wait for FreeSWITCH to close (bounded by commandTimeoutMs). */
  async stop(): Promise<void> {
    if (this.stateValue === EslState.Stopped) return;
    this.stopping = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = null;
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      if (this.stateValue === EslState.Connected) {
        this.command('exit\n\n').catch(() => undefined);
      } else socket.destroy();
      const timer = setTimeout(() => socket.destroy(), this.config.commandTimeoutMs);
      await closed;
      clearTimeout(timer);
    }
    this.failPending(new NotConnectedError('ESL client stopped'));
    this.setState(EslState.Stopped, false);
    this.wakeConsumer();
  }

  /** Send a command; `text` is the whole command including its terminating blank line. */
  private command(text: string): Promise<EslFrame> {
    const socket = this.socket;
    if (!socket || socket.destroyed || !socket.writable || this.stateValue !== EslState.Connected) {
      return Promise.reject(new NotConnectedError());
    }
    return this.send(socket, text);
  }

  private send(socket: net.Socket, text: string): Promise<EslFrame> {
    return new Promise<EslFrame>((resolve, reject) => {
      const entry: PendingReply = { command: text, resolve, reject, timer: null };
      entry.timer = setTimeout(() => {
        // Keep the slot: the late reply must not be matched to the next command.
        entry.resolve = () => undefined;
        entry.reject = () => undefined;
        reject(new CommandTimeoutError(text, this.config.commandTimeoutMs));
      }, this.config.commandTimeoutMs);
      this.pending.push(entry);
      socket.write(text);
    });
  }

  private connect(): void {
    if (this.stopping) return;
    const socket = net.connect({ host: this.config.host, port: this.config.port });
    socket.setNoDelay(true);
    this.socket = socket;
    this.parser = new EslFrameParser({ maxFrameBytes: this.config.maxFrameBytes });
    this.disconnectNotice = null;
    this.resetByUs = false;
    socket.on('data', (chunk: Buffer) => this.onData(socket, chunk));
    socket.on('error', (err) => {
      if (this.stateValue !== EslState.Connected) this.lastErrorValue = err;
      this.options.logger.debug({ esl: this.label, err: err.message }, 'ESL socket error');
    });
    socket.on('close', () => this.onClose(socket));
  }

  private onData(socket: net.Socket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    let frames: EslFrame[];
    try {
      frames = this.parser.push(chunk);
    } catch (err) {
      // The byte stream is out of step: nothing after this point can be trusted.
      const cause = err instanceof FrameTooLargeError ? 'frame_too_large' : 'frame_parse';
      this.streamErrors.inc({ cause });
      this.lastErrorValue = err as Error;
      if (this.firstOfSeries(`stream:${cause}`)) {
        this.options.logger.error({ esl: this.label, err: (err as Error).message, cause }, 'ESL stream desynchronised, reconnecting');
      }
      this.resetByUs = true;
      socket.destroy();
      return;
    }
    if (this.held.length > 0 || this.paused) this.hold(socket, frames, 0);
    else this.process(socket, frames, 0);
  }

  /** Handle frames from index `from`; stops and holds the rest when the queue fills. */
  private process(socket: net.Socket, frames: EslFrame[], from: number): void {
    let received = 0;
    let i = from;
    for (; i < frames.length; i++) {
      const frame = frames[i];
      if (isEventFrame(frame)) {
        if (this.queueFull()) break;
        received++;
        this.ingest(frame);
      } else this.onControlFrame(socket, frame);
    }
    if (received > 0) {
      this.eventsIn.inc(received);
      if (this.queue.length > 0) this.wakeConsumer();
    }
    if (i < frames.length) this.hold(socket, frames, i);
    this.setQueueGauges();
  }

  /** Keep event frames for later and stop reading; replies among them are still answered now. */
  private hold(socket: net.Socket, frames: EslFrame[], from: number): void {
    for (let i = from; i < frames.length; i++) {
      if (isEventFrame(frames[i])) this.held.push(frames[i]);
      else this.onControlFrame(socket, frames[i]);
    }
    if (!this.paused) {
      this.paused = true;
      socket.pause();
    }
  }

  /** After the consumer took the queue: parse what was held, then read again. */
  private refill(): void {
    const socket = this.socket;
    if (this.held.length > 0) {
      const held = this.held;
      this.held = [];
      if (socket) this.process(socket, held, 0);
      else this.setQueueGauges();
    } else this.setQueueGauges();
    if (this.paused && this.held.length === 0 && this.queue.length < this.config.queueMaxEvents / 2 && this.queueBytes < this.config.queueMaxBytes / 2) {
      this.paused = false;
      socket?.resume();
    }
  }

  /** Parse one event frame into the queue, unless it is dropped or answers a bgapi job. */
  private ingest(frame: EslFrame): void {
    let event: FsEvent;
    try {
      event = eventFromFrame(frame);
    } catch (err) {
      this.drops.drop('parse_error', (err as Error).message);
      return;
    }
    this.trackSequence(event);
    if (event.name === 'BACKGROUND_JOB') {
      const jobUuid = event.get('Job-UUID');
      const job = jobUuid === undefined ? undefined : this.jobs.get(jobUuid);
      if (job) {
        this.jobs.delete(jobUuid!);
        job.resolve(event.body ?? '');
      }
      if (!this.deliverBackgroundJobs) return;
    }
    if (event.get(LOOP_GUARD_HEADER) !== undefined) {
      this.drops.filtered('loop_guard');
      return;
    }
    this.queue.push(event);
    this.queueBytes += frame.body?.length ?? 0;
  }

  private setQueueGauges(): void {
    this.queueDepth.set(this.queue.length);
    this.queueBytesGauge.set(this.queueBytes);
  }

  private queueFull(): boolean {
    return this.queue.length >= this.config.queueMaxEvents || this.queueBytes >= this.config.queueMaxBytes;
  }

  /**
   * While connected a filtered subscription skips sequence numbers by design, so
   * only the first event after a reconnect is compared with the last one seen: a
   * jump there is what happened while we were away. It is an upper bound, since
   * some of those events would not have matched the subscription.
   */
  private trackSequence(event: FsEvent): void {
    const core = event.coreUuid;
    const seq = event.sequence;
    if (core === undefined || seq === undefined) return;
    if (this.checkGap) {
      this.checkGap = false;
      const last = this.lastSequence.get(core);
      if (last !== undefined && seq > last + 1) {
        const lost = seq - last - 1;
        this.reconnectSkipped.inc(lost);
        this.options.logger.warn({ core, from: last + 1, to: seq - 1, lost }, `ESL reconnect: up to ${lost} events lost (Event-Sequence ${last + 1}..${seq - 1})`);
      } else if (last === undefined && this.lastCore !== null && this.lastCore !== core) {
        this.options.logger.warn({ previous: this.lastCore, core }, 'FreeSWITCH restarted (new Core-UUID): sequence starts over, not a gap');
      }
    }
    if (core !== this.lastCore) {
      this.lastCore = core;
      if (!this.lastSequence.has(core) && this.lastSequence.size >= MAX_TRACKED_CORES) {
        this.lastSequence.delete(this.lastSequence.keys().next().value!);
      }
    }
    this.lastSequence.set(core, seq);
  }

  private onControlFrame(socket: net.Socket, frame: EslFrame): void {
    switch (frame.headers['Content-Type']) {
      case ContentType.AuthRequest:
        void this.handshake(socket);
        return;
      case ContentType.CommandReply:
      case ContentType.ApiResponse: {
        const entry = this.pending.shift();
        if (!entry) {
          this.options.logger.warn({ esl: this.label, type: frame.headers['Content-Type'], reply: frame.headers['Reply-Text'] }, 'ESL reply without a pending command');
          return;
        }
        if (entry.timer) clearTimeout(entry.timer);
        const reply = frame.headers['Reply-Text'];
        const error = reply === undefined ? undefined : CommandError.fromReply(entry.command, reply);
        if (error) entry.reject(error);
        else entry.resolve(frame);
        return;
      }
      case ContentType.DisconnectNotice:
        this.disconnectNotice = frame.body?.toString('utf8').trim() ?? '';
        return;
      case ContentType.RudeRejection:
        this.lastErrorValue = new AuthError(`ESL refused the connection: ${frame.body?.toString('utf8').trim() ?? ''} (check apply-inbound-acl)`);
        return;
      default:
        this.options.logger.debug({ type: frame.headers['Content-Type'] }, 'ESL frame ignored');
    }
  }

  private async handshake(socket: net.Socket): Promise<void> {
    try {
      await this.send(socket, `auth ${this.config.password}\n\n`).catch((err: unknown) => {
        throw err instanceof CommandError ? new AuthError(`ESL authentication refused by ${this.config.host}:${this.config.port}: ${err.reply}`) : err;
      });
      if (this.options.subscription !== null) {
        const subscription = (this.deliverBackgroundJobs ? '' : 'BACKGROUND_JOB ') + this.options.subscription;
        await this.send(socket, `event ${this.format} ${subscription}\n\n`);
      }
    } catch (err) {
      this.lastErrorValue = err as Error;
      socket.destroy();
      return;
    }
    if (socket !== this.socket) return;
    this.lastErrorValue = null;
    if (this.everConnected) this.reconnects.inc();
    this.everConnected = true;
    this.connectedAt = Date.now();
    // The backoff starts over only once this connection has proved itself.
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      if (this.failures > 0) this.options.logger.info({ esl: this.label, failures: this.failures }, `ESL connection stable again after ${this.failures} failed attempts`);
      this.failures = 0;
      this.loggedCauses.clear();
    }, this.stableAfterMs);
    this.stableTimer.unref();
    this.checkGap = this.lastSequence.size > 0;
    this.setState(EslState.Connected, this.failures === 0 || this.firstOfSeries('connected'));
  }

  /** True the first time `cause` is seen in the current failing series: what is worth a log line. */
  private firstOfSeries(cause: string): boolean {
    if (this.loggedCauses.has(cause)) return false;
    this.loggedCauses.add(cause);
    return true;
  }

  private onClose(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = null;
    const byFreeswitch = !this.stopping && !this.resetByUs;
    this.failPending(new NotConnectedError(byFreeswitch ? 'ESL connection closed by FreeSWITCH' : 'ESL connection closed', byFreeswitch));
    // Frames held for the consumer were complete events: they stay deliverable.
    this.paused = false;
    if (this.stableTimer) {
      // Up, but not long enough to count as a success: the series goes on.
      clearTimeout(this.stableTimer);
      this.stableTimer = null;
      this.failures++;
    } else if (this.stateValue !== EslState.Connected) this.failures++;
    if (this.stopping) return;
    // Refused credentials need an operator, so they are logged on their own (once
    // per series); a refused or reset connection is what the state log says, once.
    const err = this.lastErrorValue;
    if (err instanceof AuthError && this.firstOfSeries(`auth:${err.message}`)) {
      this.options.logger.error({ esl: this.label, err: err.message, code: err.code }, 'ESL authentication failed; retrying (fix the password or the ACL)');
    }
    // The first failure of a series says what happened; the attempts after it are the
    // backoff at work (their causes, when they matter, are logged above, once).
    const previous = this.stateValue;
    this.setState(EslState.Disconnected, false);
    if (this.firstOfSeries('down')) this.logDown(previous);
    const delay = Math.min(FIRST_RETRY_MS * 2 ** Math.min(this.failures, 16), Math.max(FIRST_RETRY_MS, this.config.reconnectMaxMs));
    this.emit('retry', delay, this.failures);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private failPending(err: Error): void {
    const pending = this.pending;
    this.pending = [];
    for (const entry of pending) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.reject(err);
    }
    for (const job of this.jobs.values()) job.reject(err);
    this.jobs.clear();
  }

  private setState(state: EslState, log: boolean): void {
    if (state === this.stateValue) return;
    const previous = this.stateValue;
    this.stateValue = state;
    if (log) {
      if (state === EslState.Connected) this.options.logger.info({ esl: this.label, at: `${this.config.host}:${this.config.port}`, subscription: this.options.subscription ?? undefined }, 'ESL connected');
      else if (state === EslState.Disconnected) this.logDown(previous);
    }
    this.emit('state', state);
  }

  private logDown(previous: EslState): void {
    const message = previous === EslState.Connected ? 'ESL disconnected, retrying' : 'ESL not reachable, retrying';
    const upMs = previous === EslState.Connected ? Date.now() - this.connectedAt : undefined;
    this.options.logger.warn(
      { esl: this.label, at: `${this.config.host}:${this.config.port}`, notice: this.disconnectNotice ?? undefined, err: this.lastErrorValue?.message, upMs, failures: this.failures || undefined },
      message,
    );
  }

  private wakeConsumer(): void {
    const wake = this.wake;
    if (wake) {
      this.wake = null;
      wake();
    }
  }
}

/** Whether an `event` subscription list delivers `name` (ALL, or the name before any CUSTOM). */
function subscribesTo(subscription: string, name: string): boolean {
  for (const token of subscription.split(/\s+/)) {
    const upper = token.toUpperCase();
    if (upper === 'ALL' || upper === name) return true;
    if (upper === 'CUSTOM') return false;
  }
  return false;
}

function checkCommandLine(what: string, command: string): void {
  if (/[\r\n]/.test(command)) throw new HeaderInjectionError(what);
  if (command.includes('\0')) throw new InvalidEslHeaderError(what, 'contains a NUL byte');
}

function checkHeader(name: string, value: string): void {
  if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw new HeaderInjectionError(name);
  if (name === '') throw new InvalidEslHeaderError(name, 'empty name');
  if (name.includes(':')) throw new InvalidEslHeaderError(name, "':' in a name (FreeSWITCH splits the line at the first ':')");
  if (name.includes('\0') || value.includes('\0')) throw new InvalidEslHeaderError(name, 'contains a NUL byte');
}

/** The whole `sendevent` command as written to the socket, validated. */
export function sendeventCommand(event: FsEvent): string {
  const name = event.name;
  checkHeader('Event-Name', name);
  if (name === '' || name.includes(' ')) throw new InvalidEslHeaderError('Event-Name', `${JSON.stringify(name)} is not an event name`);
  let text = `sendevent ${name}`;
  for (const [header, value] of event.headers) {
    checkHeader(header, value);
    const lower = header.toLowerCase();
    // The name is on the command line; the length is ours to compute.
    if (lower === 'event-name' || lower === 'content-length') continue;
    text += `\n${header}: ${value}`;
  }
  if (event.body !== null && event.body !== '') return `${text}\nContent-Length: ${Buffer.byteLength(event.body, 'utf8')}\n\n${event.body}`;
  return text + '\n\n';
}
