/**
 * EslSimulator: a FreeSWITCH stand-in that speaks the inbound event-socket protocol
 * as mod_event_socket 1.10.12 does, byte for byte where the captures in
 * test/fixtures/esl/*.raw show it. Every test that needs "a FreeSWITCH" uses it.
 *
 *   const sim = await EslSimulator.start({ password: 'ClueCon', switchname: 'fs-a' });
 *   sim.port                        // listening on 127.0.0.1:<port>
 *   sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready'));
 *   sim.skipSequence(5);            // the next fired event jumps 5 sequence numbers
 *   await sim.replay(EslSimulator.loadCapture('a-plain.raw'), { rate: 1000, count: 5000, loop: true });
 *   sim.setApi('status', 'UP 0 years...');   // or a handler (arg) => string
 *   sim.received                    // FsEvents received by `sendevent`, headers as written
 *   sim.setChunking({ mode: 'byte' });       // how our writes are cut: whole | fixed | random | byte
 *   sim.setIngestRate(1_000_000);   // read commands at most this many bytes/s per connection, like read_packet
 *   sim.ignore(/^auth /);           // matching commands get no reply at all (a hung FreeSWITCH)
 *   sim.holdReplies(true);          // sendevents are fired as usual, their replies withheld (the bridge dies before it reads them)
 *   sim.sendRaw('Content-Length: x\n\n');   // bytes to every authenticated client, as is
 *   await sim.dropClients();        // abrupt close (RST-like destroy)
 *   await sim.disconnectClients();  // text/disconnect-notice, then close
 *   await sim.stop(); await sim.restart({ newCoreUuid: true });   // same port, as a restarted FreeSWITCH
 *
 * Protocol facts it reproduces (mod_event_socket.c, switch_event.c v1.10.12):
 * - On connect `Content-Type: auth/request`; `auth <pw>` answers `+OK accepted`, or
 *   `-ERR invalid` followed by the goodbye disconnect-notice and a close. Commands
 *   other than auth before authentication answer `-ERR command not found`.
 * - `event plain|json [names...]`: the first token may set the format; names are
 *   additive across commands; after CUSTOM every token is a subclass; ALL means every
 *   event. Unknown names are ignored; no known name answers `-ERR no keywords supplied`.
 * - `api cmd [arg]` answers `api/response` (`-ERR <cmd> Command not found!\n` when
 *   unknown, `-ERR no reply\n` when empty). `bgapi` answers `+OK Job-UUID: X` plus a
 *   `Job-UUID` header and later fires BACKGROUND_JOB (delivered only to subscribers,
 *   as in FreeSWITCH). A `Job-UUID` header on the bgapi command is honoured.
 * - `sendevent NAME` reads header lines raw (split at the first ':', leading spaces
 *   dropped, an empty value removes the header), answers `+OK <Event-UUID>` and fires
 *   the event with FreeSWITCH's additions: `Command`, `Event-UUID`, then the
 *   prep_for_delivery headers; CUSTOM moves Event-Subclass first, as ESL's event_dup does.
 * - `exit` answers `+OK bye`, then the goodbye disconnect-notice, then closes.
 * - Events go out as `Content-Length: N\nContent-Type: text/event-plain|json\n\n` + body.
 * - Pipelined commands (written back to back without waiting) are read and answered
 *   one at a time, in order, by one reader per connection (listener_run's thread).
 *   read_packet takes a command one byte per recv() followed by a sched_yield(), so
 *   a connection ingests headers at a fixed byte rate and the body in bulk:
 *   `setIngestRate(bytesPerSecond)` models that per connection (unlimited by default).
 *   While a reader is behind, unread bytes stay in its socket (the client sees TCP
 *   backpressure once about a socket buffer is waiting), and the connection's own
 *   subscribed events wait in its queue: read_packet only delivers them when it finds
 *   no command bytes pending. That queue holds 100,000 events (MAX_QUEUE_LEN); past
 *   it events are lost, and after 500 losses the listener is killed (closed).
 *
 * Fired events get the simulator's Core-UUID, host names, dates and the next
 * Event-Sequence (one counter for the whole process, like EVENT_SEQUENCE_NR); pass
 * `verbatim` to send a captured event's own headers unchanged.
 *
 * Speed: an event is serialized once per format into a template split around its
 * sequence number, so replay writes a few string concatenations per event and
 * batches them into ~64 KB writes (well over 100k events/s to one client). Replay
 * waits for 'drain' on a client that does not read, so memory stays bounded on both ends.
 *
 * Standalone (demo): `node dist/test/support/esl-simulator.js --port 8021 --switchname fs-a
 * [--password ClueCon] [--hostname h] [--ipv4 a.b.c.d] [--replay file.raw --rate 50 --loop]
 * [--heartbeat-ms 20000]`.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { readFileSync, realpathSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { serializeJson } from '../../bridge/event/json.js';
import { isEventName } from '../../bridge/event/names.js';
import { serializePlain } from '../../bridge/event/plain.js';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { fixturePath } from './fixtures.js';
import { listenLow } from './ports.js';
import { seededRandom } from './seeded-random.js';

export type EventFormat = 'plain' | 'json';

export type Chunking =
  | { mode: 'whole' }
  | { mode: 'fixed'; size: number }
  /** Sizes uniformly in [min, max]; `seed` makes the cuts reproducible. */
  | { mode: 'random'; min?: number; max?: number; seed?: number }
  | { mode: 'byte' };

export type ApiAnswer = string | ((arg: string | undefined) => string);

export interface SimulatorOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  host?: string;
  password?: string;
  hostname?: string;
  switchname?: string;
  ipv4?: string;
  ipv6?: string;
  coreUuid?: string;
  /** First Event-Sequence handed out (default 1). */
  firstSequence?: number;
  chunking?: Chunking;
  api?: Record<string, ApiAnswer>;
  /**
   * Keep every `sendevent` in `received` (default true). Benchmarks turn it off: thousands
   * of retained events would make the simulator's own garbage collector a part of what they time.
   */
  keepReceived?: boolean;
}

/** An event from a capture, with the exact bytes FreeSWITCH sent for it. */
export interface CapturedEvent {
  readonly event: FsEvent;
  readonly raw: Buffer;
  readonly format: EventFormat;
}

export interface FireOptions {
  /** Send the event's own headers (Core-UUID, Event-Sequence, dates...) untouched. */
  verbatim?: boolean;
}

export interface ReplayOptions extends FireOptions {
  /** Events per second; omitted or 0 = as fast as the clients read. */
  rate?: number;
  /** How many events to send (default: the list once, or forever with loop and no count). */
  count?: number;
  /** Start again at the first event when the list ends. */
  loop?: boolean;
  signal?: AbortSignal;
}

const DISCONNECT_GOODBYE = 'Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n';
const DEFAULT_DISCONNECT = 'Disconnected.\n';
/** Line numbers of the fire sites in mod_event_socket.c v1.10.12 (Event-Calling-Line-Number). */
const SENDEVENT_LINE = '2275';
const BGAPI_LINE = '1572';
/** Digits that stand in for the sequence number while a template is serialized. */
const SEQ_PLACEHOLDER = '918273645546372819';
const BATCH_BYTES = 64 * 1024;
/** mod_event_socket's per-listener event queue (MAX_QUEUE_LEN) and the losses after which it kills the listener. */
const LISTENER_QUEUE_MAX = 100_000;
const LISTENER_MAX_LOST = 500;
/** Unread command bytes a connection holds before it stops reading its socket (about a loopback socket buffer). */
const UNREAD_BYTES_MAX = 256 * 1024;
/**
 * Event bytes written and not yet taken by a listener that reads slowly, beyond which its
 * events wait in its queue (about a loopback socket buffer): FreeSWITCH's listener thread
 * blocks on the write, and the event thread queues meanwhile, up to MAX_QUEUE_LEN.
 */
const UNSENT_BYTES_MAX = 4 * 1024 * 1024;

/** Headers switch_event_prep_for_delivery owns, in the order it appends them. */
const PREP_HEADERS = [
  'Event-Name', 'Core-UUID', 'FreeSWITCH-Hostname', 'FreeSWITCH-Switchname', 'FreeSWITCH-IPv4', 'FreeSWITCH-IPv6',
  'Event-Date-Local', 'Event-Date-GMT', 'Event-Date-Timestamp', 'Event-Calling-File', 'Event-Calling-Function',
  'Event-Calling-Line-Number', 'Event-Sequence',
] as const;
const PREP_SET = new Set<string>(PREP_HEADERS.map((h) => h.toLowerCase()));

/**
 * An event ready to send: per format the serialized text cut around Event-Sequence,
 * so each delivery only formats the number. Verbatim events have a fixed text.
 */
class Template {
  private readonly cache: Partial<Record<EventFormat, [string, string] | string>> = {};
  readonly name: string;
  readonly subclass: string | undefined;

  constructor(
    private readonly event: FsEvent,
    private readonly withSequence: boolean,
    private readonly raw?: { format: EventFormat; text: string },
  ) {
    this.name = event.name.toUpperCase();
    this.subclass = event.subclass;
  }

  /** The frame for one delivery, ESL framing included. */
  frame(format: EventFormat, seq: number): string {
    let parts = this.cache[format];
    if (parts === undefined) {
      parts = this.build(format);
      this.cache[format] = parts;
    }
    const body = typeof parts === 'string' ? parts : parts[0] + seq + parts[1];
    return `Content-Length: ${Buffer.byteLength(body)}\nContent-Type: text/event-${format}\n\n${body}`;
  }

  private build(format: EventFormat): [string, string] | string {
    if (this.raw?.format === format) return this.raw.text;
    const serialize = format === 'plain' ? serializePlain : serializeJson;
    if (!this.withSequence) return serialize(this.event);
    const text = serialize(this.event);
    const at = text.indexOf(SEQ_PLACEHOLDER);
    if (at < 0 || text.indexOf(SEQ_PLACEHOLDER, at + 1) >= 0) throw new Error('sequence placeholder not unique');
    return [text.slice(0, at), text.slice(at + SEQ_PLACEHOLDER.length)];
  }
}

interface Connection {
  socket: net.Socket;
  reader: CommandReader;
  /** Command bytes received but not read yet (ingest rate set). */
  backlog: Buffer[];
  backlogBytes: number;
  /** performance.now() until which the reader is busy with what it already took (ingest rate set). */
  busyUntil: number;
  readTimer: NodeJS.Timeout | null;
  /** Events for this listener waiting until its reader finds no command bytes pending. */
  eventQueue: string[];
  lostEvents: number;
  readPaused: boolean;
  sendevents: number;
  authed: boolean;
  events: boolean;
  format: EventFormat;
  all: boolean;
  names: Set<string>;
  subclasses: Set<string>;
}

/** One command from the client: `Command` line, header lines (raw, FreeSWITCH's split rule, Content-Length included) and optional body. */
export interface ReceivedCommand {
  command: string;
  headers: Header[];
  body: string | null;
}

export class EslSimulator extends EventEmitter {
  /** Events received by `sendevent`: the headers exactly as written (Content-Length becomes the body). */
  readonly received: FsEvent[] = [];
  /** Every command line received, in order (auth lines included). */
  readonly commands: string[] = [];
  private server: net.Server | null = null;
  private readonly connections = new Set<Connection>();
  private readonly api = new Map<string, ApiAnswer>();
  private chunking: Chunking;
  private ingestBytesPerSecond = 0;
  private readonly ignored: RegExp[] = [];
  private withholdSendeventReplies = false;
  /** Events lost because a listener's queue was full, and listeners killed for it (mod_event_socket's "Lost [N] events!"). */
  lostEvents = 0;
  killedListeners = 0;
  private rng: () => number;
  private nextSeq: number;
  private options: Required<Omit<SimulatorOptions, 'api' | 'chunking' | 'firstSequence'>>;

  private constructor(options: SimulatorOptions) {
    super();
    this.options = {
      port: options.port ?? 0,
      host: options.host ?? '127.0.0.1',
      password: options.password ?? 'ClueCon',
      hostname: options.hostname ?? 'sim-host',
      switchname: options.switchname ?? 'sim',
      ipv4: options.ipv4 ?? '127.0.0.1',
      ipv6: options.ipv6 ?? '::1',
      coreUuid: options.coreUuid ?? randomUUID(),
      keepReceived: options.keepReceived ?? true,
    };
    this.nextSeq = options.firstSequence ?? 1;
    this.chunking = options.chunking ?? { mode: 'whole' };
    this.rng = seededRandom(1);
    for (const [name, answer] of Object.entries(options.api ?? {})) this.api.set(name, answer);
  }

  static async start(options: SimulatorOptions = {}): Promise<EslSimulator> {
    const sim = new EslSimulator(options);
    await sim.listen();
    return sim;
  }

  /** The event frames of a capture in test/fixtures/esl (or an absolute path), in order. */
  static loadCapture(nameOrPath: string): CapturedEvent[] {
    const path = nameOrPath.includes('/') ? nameOrPath : fixturePath('esl', nameOrPath);
    const frames = new EslFrameParser().push(readFileSync(path));
    return frames.filter(isEventFrame).map((frame) => ({
      event: eventFromFrame(frame),
      raw: frame.body!,
      format: frame.headers['Content-Type'] === 'text/event-json' ? 'json' : 'plain',
    }));
  }

  get port(): number {
    return this.options.port;
  }

  get coreUuid(): string {
    return this.options.coreUuid;
  }

  get switchname(): string {
    return this.options.switchname;
  }

  /** The Event-Sequence the next fired event gets. */
  get sequence(): number {
    return this.nextSeq;
  }

  get running(): boolean {
    return this.server !== null;
  }

  /** Connected clients, authenticated or not. */
  get clientCount(): number {
    return this.connections.size;
  }

  /** Clients that have authenticated and subscribed to at least one event. */
  get subscriberCount(): number {
    let n = 0;
    for (const c of this.connections) if (c.authed && c.events) n++;
    return n;
  }

  setChunking(chunking: Chunking): void {
    this.chunking = chunking;
    if (chunking.mode === 'random') this.rng = seededRandom(chunking.seed ?? 1);
  }

  /**
   * How fast each connection reads commands, in bytes/s (0: at once). Header bytes
   * count one by one, as read_packet takes them; a Content-Length body is taken in bulk.
   */
  setIngestRate(bytesPerSecond: number): void {
    this.ingestBytesPerSecond = bytesPerSecond;
    for (const conn of this.connections) this.readBacklog(conn);
  }

  /** Commands matching a pattern are read but never answered (as a FreeSWITCH stuck in one would). */
  ignore(pattern: RegExp): void {
    this.ignored.push(pattern);
  }

  /** Fire sendevents as usual but keep their replies to ourselves (from now on, on every connection). */
  holdReplies(hold: boolean): void {
    this.withholdSendeventReplies = hold;
  }

  /** `sendevent`s taken per open connection, in connection order. */
  get sendeventsPerConnection(): number[] {
    return [...this.connections].map((c) => c.sendevents);
  }

  /** Write bytes as they are to every authenticated client (a broken frame, say). */
  sendRaw(text: string): void {
    for (const conn of this.connections) if (conn.authed) this.write(conn, text);
  }

  /** Unread command bytes per connection (ingest rate set). */
  get unreadBytes(): number[] {
    return [...this.connections].map((c) => c.backlogBytes);
  }

  setApi(command: string, answer: ApiAnswer): void {
    this.api.set(command, answer);
  }

  /** Let the next fired event jump `n` sequence numbers, as a filtered or lossy stream would. */
  skipSequence(n: number): void {
    this.nextSeq += n;
  }

  /** Resolves once `n` clients are authenticated and subscribed. */
  async waitForSubscribers(n = 1, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.subscriberCount < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} ESL subscriber(s), have ${this.subscriberCount}`);
      await once(this, 'subscribed', { signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())) }).catch(() => undefined);
    }
  }

  /** Emit an event to every matching subscriber. Returns the Event-Sequence used (or the event's own when verbatim). */
  fire(event: FsEvent, options: FireOptions = {}): number {
    const { template, seq } = this.prepare(event, options.verbatim ?? false);
    this.deliver(template, seq, null);
    return seq;
  }

  /**
   * Send events to subscribers at `rate` events/s (or as fast as they read), `count`
   * events or the list once, looping if asked. Resolves with the number sent.
   */
  async replay(events: readonly (FsEvent | CapturedEvent)[], options: ReplayOptions = {}): Promise<number> {
    if (events.length === 0) return 0;
    const verbatim = options.verbatim ?? false;
    const total = options.count ?? (options.loop ? Infinity : events.length);
    const templates = events.map((e) => {
      const captured = e instanceof FsEvent ? null : e;
      const event = captured ? captured.event : (e as FsEvent);
      return verbatim
        ? new Template(event, false, captured ? { format: captured.format, text: captured.raw.toString('utf8') } : undefined)
        : this.restamp(event, 'esl-simulator.ts', 'replay', '0');
    });
    const verbatimSeq = verbatim ? events.map((e) => (e instanceof FsEvent ? e : e.event).sequence ?? 0) : [];
    const batch = new Map<Connection, string[]>();
    let sent = 0;
    let index = 0;
    const started = Date.now();
    while (sent < total && this.running && !options.signal?.aborted) {
      let allowed = total - sent;
      if (options.rate) {
        const due = Math.floor(((Date.now() - started) / 1000) * options.rate) + 1;
        allowed = Math.min(allowed, due - sent);
        if (allowed <= 0) {
          await sleep(Math.max(1, Math.min(20, 1000 / options.rate)));
          continue;
        }
      }
      let bytes = 0;
      while (allowed > 0 && bytes < BATCH_BYTES) {
        if (index === templates.length) {
          if (!options.loop) break;
          index = 0;
        }
        const template = templates[index];
        const seq = verbatim ? verbatimSeq[index] : this.nextSeq++;
        index++;
        bytes += this.deliver(template, seq, batch);
        sent++;
        allowed--;
      }
      const slow = this.flush(batch);
      if (index === templates.length && !options.loop) break;
      if (slow.length > 0) await Promise.race(slow.map((s) => waitDrain(s)));
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return sent;
  }

  /** Close every client at once without a notice, as a crashed FreeSWITCH would. */
  async dropClients(): Promise<void> {
    const closed = [...this.connections].map((c) => closedPromise(c.socket));
    for (const c of this.connections) c.socket.destroy();
    await Promise.all(closed);
  }

  /** Send `text/disconnect-notice` (FreeSWITCH's kill_listener) to every client, then close. */
  async disconnectClients(message = DEFAULT_DISCONNECT): Promise<void> {
    const closed = [...this.connections].map((c) => closedPromise(c.socket));
    for (const c of this.connections) this.sendDisconnect(c, message);
    await Promise.all(closed);
  }

  /** Stop listening and drop every client (abruptly unless `graceful`). */
  async stop(options: { graceful?: boolean } = {}): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    if (options.graceful) await this.disconnectClients(DISCONNECT_GOODBYE);
    else await this.dropClients();
    await closed;
  }

  /** Listen again on the same port; a new Core-UUID and sequence restart mean "FreeSWITCH restarted". */
  async restart(options: { newCoreUuid?: boolean; coreUuid?: string; firstSequence?: number } = {}): Promise<void> {
    await this.stop();
    if (options.coreUuid) this.options.coreUuid = options.coreUuid;
    else if (options.newCoreUuid) this.options.coreUuid = randomUUID();
    if (options.firstSequence !== undefined) this.nextSeq = options.firstSequence;
    else if (options.newCoreUuid || options.coreUuid) this.nextSeq = 1;
    await this.listen();
  }

  private async listen(): Promise<void> {
    const server = net.createServer((socket) => this.accept(socket));
    if (this.options.port === 0) {
      // Below the ephemeral range: restart() listens on this port again, and an ephemeral one can be
      // taken meanwhile by an outgoing connection, even by the bridge reconnecting to it (test/support/ports.ts).
      this.options.port = await listenLow(server, this.options.host);
    } else {
      // A port just given up can still be held for a moment after a restart.
      for (let attempt = 0; ; attempt++) {
        try {
          await new Promise<void>((resolve, reject) => {
            server.once('error', reject);
            server.listen({ port: this.options.port, host: this.options.host, exclusive: true }, () => {
              server.off('error', reject);
              resolve();
            });
          });
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 50) throw err;
          await sleep(20);
        }
      }
    }
    // Only once listening: a failed listen must reach the retry above, not the 'error' event of a simulator nobody
    // listens to, which throws (uncaught) before the retry sees it.
    server.on('error', (err) => this.emit('error', err));
    this.server = server;
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const conn: Connection = {
      socket,
      reader: new CommandReader(),
      backlog: [],
      backlogBytes: 0,
      busyUntil: 0,
      readTimer: null,
      eventQueue: [],
      lostEvents: 0,
      readPaused: false,
      sendevents: 0,
      authed: false,
      events: false,
      format: 'plain',
      all: false,
      names: new Set(),
      subclasses: new Set(),
    };
    this.connections.add(conn);
    socket.on('close', () => {
      this.connections.delete(conn);
      if (conn.readTimer) clearTimeout(conn.readTimer);
    });
    socket.on('error', () => undefined);
    socket.on('drain', () => {
      if (conn.backlogBytes === 0) this.flushEventQueue(conn);
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.ingestBytesPerSecond === 0 && conn.backlogBytes === 0) {
        this.readCommands(conn, chunk);
        return;
      }
      conn.backlog.push(chunk);
      conn.backlogBytes += chunk.length;
      if (conn.backlogBytes >= UNREAD_BYTES_MAX && !conn.readPaused) {
        conn.readPaused = true;
        socket.pause();
      }
      this.readBacklog(conn);
    });
    this.write(conn, 'Content-Type: auth/request\n\n');
  }

  private readCommands(conn: Connection, bytes: Buffer): void {
    for (const command of conn.reader.push(bytes)) {
      if (conn.socket.destroyed || conn.socket.writableEnded) return;
      this.handle(conn, command);
    }
    if (conn.backlogBytes === 0) this.flushEventQueue(conn);
  }

  /**
   * Read whole commands from the backlog as read_packet would: a reader that was idle
   * takes the next command at once, then stays busy for its header bytes / rate (a
   * body costs nothing: it is read in bulk) before the one after it.
   */
  private readBacklog(conn: Connection): void {
    const rate = this.ingestBytesPerSecond;
    const now = performance.now();
    // An idle reader does not bank time.
    if (conn.busyUntil < now) conn.busyUntil = now;
    while (conn.backlogBytes > 0 && !conn.socket.destroyed && (rate === 0 || conn.busyUntil <= now)) {
      const buffer = conn.backlog.length === 1 ? conn.backlog[0] : Buffer.concat(conn.backlog);
      const cost = commandCost(buffer);
      if (cost === null) {
        // An incomplete command: the rest comes later.
        conn.backlog = [buffer];
        break;
      }
      if (rate > 0) conn.busyUntil += (cost.headerBytes / rate) * 1000;
      conn.backlog = cost.totalBytes === buffer.length ? [] : [buffer.subarray(cost.totalBytes)];
      conn.backlogBytes -= cost.totalBytes;
      this.readCommands(conn, buffer.subarray(0, cost.totalBytes));
    }
    if (conn.readPaused && conn.backlogBytes < UNREAD_BYTES_MAX / 2) {
      conn.readPaused = false;
      conn.socket.resume();
    }
    if (conn.backlogBytes > 0 && rate > 0 && conn.readTimer === null && commandCost(Buffer.concat(conn.backlog)) !== null) {
      conn.readTimer = setTimeout(() => {
        conn.readTimer = null;
        this.readBacklog(conn);
      }, Math.max(1, conn.busyUntil - performance.now()));
    }
  }

  /** mod_event_socket sends a listener's queued events when its reader finds no command bytes waiting. */
  private flushEventQueue(conn: Connection): void {
    if (conn.eventQueue.length === 0 || conn.socket.writableLength >= UNSENT_BYTES_MAX) return;
    // What a socket buffer takes now; the rest waits for 'drain'.
    let bytes = 0;
    let count = 0;
    while (count < conn.eventQueue.length && bytes < UNSENT_BYTES_MAX) bytes += conn.eventQueue[count++].length;
    const frames = conn.eventQueue.splice(0, count);
    this.write(conn, frames.join(''));
  }

  /** Queue (reader busy, or the client not reading) or write one event frame to a listener, as the event thread does. */
  private deliverTo(conn: Connection, frame: string): boolean {
    if (conn.backlogBytes === 0 && conn.eventQueue.length === 0 && conn.socket.writableLength < UNSENT_BYTES_MAX) return this.write(conn, frame);
    if (conn.eventQueue.length < LISTENER_QUEUE_MAX) {
      conn.eventQueue.push(frame);
      return true;
    }
    this.lostEvents++;
    if (++conn.lostEvents > LISTENER_MAX_LOST) {
      this.killedListeners++;
      conn.socket.destroy();
    }
    return true;
  }

  private reply(conn: Connection, text: string, extraHeaders = ''): void {
    this.write(conn, `Content-Type: command/reply\nReply-Text: ${text}\n${extraHeaders}\n`);
  }

  private handle(conn: Connection, received: ReceivedCommand): void {
    const cmd = received.command;
    this.commands.push(cmd);
    this.emit('command', cmd, received);
    if (this.ignored.some((pattern) => pattern.test(cmd))) return;
    const lower = cmd.toLowerCase();
    if (lower.startsWith('exit') || lower.startsWith('...')) {
      this.reply(conn, '+OK bye');
      this.sendDisconnect(conn, DISCONNECT_GOODBYE);
      return;
    }
    if (!conn.authed) {
      if (lower.startsWith('auth ')) {
        if (cmd.slice(5) === this.options.password) {
          conn.authed = true;
          this.reply(conn, '+OK accepted');
        } else {
          this.reply(conn, '-ERR invalid');
          this.sendDisconnect(conn, DISCONNECT_GOODBYE);
        }
      } else {
        this.reply(conn, '-ERR command not found');
      }
      return;
    }
    if (lower.startsWith('sendevent')) return this.sendevent(conn, received);
    if (lower.startsWith('api ')) return this.runApi(conn, cmd.slice(4));
    if (lower.startsWith('bgapi ')) return this.runBgapi(conn, received);
    if (lower.startsWith('event')) return this.subscribe(conn, cmd);
    if (lower.startsWith('noevents')) {
      const was = conn.events;
      Object.assign(conn, { events: false, all: false, names: new Set(), subclasses: new Set() });
      return this.reply(conn, was ? '+OK no longer listening for events' : '-ERR not listening for events');
    }
    this.reply(conn, '-ERR command not found');
  }

  private subscribe(conn: Connection, cmd: string): void {
    const space = cmd.indexOf(' ', 5);
    const tokens = space < 0 ? [] : cmd.slice(space + 1).split(' ');
    let keys = 0;
    let custom = false;
    tokens.forEach((token, i) => {
      if (i === 0) {
        const format = token.toLowerCase();
        if (format === 'plain' || format === 'json' || format === 'xml') {
          // XML framing is not simulated; plain keeps the stream parseable.
          conn.format = format === 'json' ? 'json' : 'plain';
          return;
        }
      }
      if (custom) {
        conn.subclasses.add(token);
        return;
      }
      if (!isEventName(token)) return;
      keys++;
      const name = token.toUpperCase();
      if (name === 'ALL') conn.all = true;
      conn.names.add(name);
      if (name === 'CUSTOM') custom = true;
    });
    if (keys === 0) return this.reply(conn, '-ERR no keywords supplied');
    conn.events = true;
    this.reply(conn, `+OK event listener enabled ${conn.format}`);
    this.emit('subscribed', conn.format);
  }

  private apiAnswer(command: string, arg: string | undefined): string {
    const answer = this.api.get(command);
    if (answer === undefined) return `-ERR ${command} Command not found!\n`;
    const text = typeof answer === 'string' ? answer : answer(arg);
    return text === '' ? '-ERR no reply\n' : text;
  }

  private runApi(conn: Connection, line: string): void {
    const space = line.indexOf(' ');
    const command = space < 0 ? line : line.slice(0, space);
    const arg = space < 0 ? undefined : line.slice(space + 1);
    const reply = this.apiAnswer(command, arg);
    this.write(conn, `Content-Type: api/response\nContent-Length: ${Buffer.byteLength(reply)}\n\n${reply}`);
  }

  private runBgapi(conn: Connection, received: ReceivedCommand): void {
    const line = received.command.slice(6);
    const space = line.indexOf(' ');
    const command = space < 0 ? line : line.slice(0, space);
    const arg = space < 0 ? undefined : line.slice(space + 1);
    const jobUuid = headerValue(received.headers, 'job-uuid') ?? randomUUID();
    this.write(conn, `Content-Type: command/reply\nReply-Text: +OK Job-UUID: ${jobUuid}\nJob-UUID: ${jobUuid}\n\n`);
    const reply = this.apiAnswer(command, arg);
    const event = new FsEvent([['Job-UUID', jobUuid], ['Job-Command', command]], reply);
    if (arg !== undefined) event.add('Job-Command-Arg', arg);
    event.headers.unshift(['Event-Name', 'BACKGROUND_JOB']);
    // The job runs on its own thread in FreeSWITCH: the event follows the reply.
    setImmediate(() => {
      const { template, seq } = this.prepareWith(event, 'mod_event_socket.c', 'api_exec', BGAPI_LINE);
      this.deliver(template, seq, null);
    });
  }

  private sendevent(conn: Connection, received: ReceivedCommand): void {
    conn.sendevents++;
    const eventUuid = randomUUID();
    const recorded = new FsEvent(
      received.headers.filter(([n]) => n.toLowerCase() !== 'content-length').map(([n, v]) => [n, v] as Header),
      received.body,
    );
    recorded.headers.unshift(['Event-Name', received.command.slice(9).trim()]);
    if (this.options.keepReceived) this.received.push(recorded);
    this.emit('sendevent', recorded);
    if (!this.withholdSendeventReplies) this.reply(conn, `+OK ${eventUuid}`);

    // What switch_event_t FreeSWITCH builds from it (read_packet + the sendevent branch).
    let name = received.command.slice(9).replace(/^[ \t]+/, '');
    if (!isEventName(name)) name = 'CLONE';
    name = name.toUpperCase();
    const headers: Header[] = [['Command', received.command]];
    for (const [n, v] of received.headers) {
      if (v === '') {
        removeHeader(headers, n);
        continue;
      }
      headers.push([n, v]);
    }
    headers.push(['Event-UUID', eventUuid]);
    let subclass: string | undefined;
    if (name === 'CUSTOM' && (subclass = headerValue(headers, 'Event-Subclass')) !== undefined) {
      removeHeader(headers, 'Event-Subclass');
      headers.unshift(['Event-Subclass', subclass]);
    }
    headers.push(['Event-Name', name], ...this.prepHeaders('mod_event_socket.c', 'parse_command', SENDEVENT_LINE));
    const template = new Template(new FsEvent(headers, received.body === '' ? null : received.body), true);
    this.deliver(template, this.nextSeq++, null);
  }

  private prepare(event: FsEvent, verbatim: boolean): { template: Template; seq: number } {
    if (verbatim) return { template: new Template(event, false), seq: event.sequence ?? 0 };
    return this.prepareWith(event, event.get('Event-Calling-File') ?? 'esl-simulator.ts', event.get('Event-Calling-Function') ?? 'fire', event.get('Event-Calling-Line-Number') ?? '0');
  }

  private prepareWith(event: FsEvent, file: string, func: string, line: string): { template: Template; seq: number } {
    return { template: this.restamp(event, file, func, line), seq: this.nextSeq++ };
  }

  /**
   * The event as a node's switch_event_create + ESL event_dup lays it out:
   * Event-Subclass first (when present), the prep_for_delivery headers, then the
   * event's own headers.
   */
  private restamp(event: FsEvent, file: string, func: string, line: string): Template {
    const subclass = event.subclass;
    const headers: Header[] = subclass !== undefined ? [['Event-Subclass', subclass]] : [];
    headers.push(['Event-Name', event.name || 'CUSTOM'], ...this.prepHeaders(file, func, line));
    for (const header of event.headers) {
      const lower = header[0].toLowerCase();
      if (!PREP_SET.has(lower) && lower !== 'event-subclass') headers.push([header[0], header[1]]);
    }
    return new Template(new FsEvent(headers, event.body), true);
  }

  /** What switch_event_prep_for_delivery appends after Event-Name; the sequence is a placeholder for the template. */
  private prepHeaders(file: string, func: string, line: string): Header[] {
    const now = new Date();
    return [
      ['Core-UUID', this.options.coreUuid],
      ['FreeSWITCH-Hostname', this.options.hostname],
      ['FreeSWITCH-Switchname', this.options.switchname],
      ['FreeSWITCH-IPv4', this.options.ipv4],
      ['FreeSWITCH-IPv6', this.options.ipv6],
      ['Event-Date-Local', localDate(now)],
      ['Event-Date-GMT', now.toUTCString()],
      ['Event-Date-Timestamp', `${now.getTime()}000`],
      ['Event-Calling-File', file],
      ['Event-Calling-Function', func],
      ['Event-Calling-Line-Number', line],
      ['Event-Sequence', SEQ_PLACEHOLDER],
    ];
  }

  /** Write (or batch) one event to every matching subscriber; returns the bytes queued. */
  private deliver(template: Template, seq: number, batch: Map<Connection, string[]> | null): number {
    let bytes = 0;
    for (const conn of this.connections) {
      if (!conn.authed || !conn.events || !matches(conn, template)) continue;
      const frame = template.frame(conn.format, seq);
      bytes += frame.length;
      if (batch && conn.backlogBytes === 0 && conn.eventQueue.length === 0) {
        const list = batch.get(conn);
        if (list) list.push(frame);
        else batch.set(conn, [frame]);
      } else this.deliverTo(conn, frame);
    }
    return bytes;
  }

  /** Write batched frames; returns the sockets whose buffers are full. */
  private flush(batch: Map<Connection, string[]>): net.Socket[] {
    const slow: net.Socket[] = [];
    for (const [conn, frames] of batch) {
      if (frames.length > 0 && !this.write(conn, frames.join(''))) slow.push(conn.socket);
    }
    batch.clear();
    return slow;
  }

  private write(conn: Connection, data: string): boolean {
    const socket = conn.socket;
    if (socket.destroyed || socket.writableEnded) return true;
    const c = this.chunking;
    if (c.mode === 'whole') return socket.write(data);
    const buf = Buffer.from(data, 'utf8');
    let ok = true;
    for (let at = 0; at < buf.length; ) {
      let size: number;
      if (c.mode === 'byte') size = 1;
      else if (c.mode === 'fixed') size = c.size;
      else {
        const min = c.min ?? 1;
        const max = c.max ?? 2048;
        size = min + Math.floor(this.rng() * (max - min + 1));
      }
      ok = socket.write(buf.subarray(at, at + size));
      at += size;
    }
    return ok;
  }

  private sendDisconnect(conn: Connection, message: string): void {
    this.write(conn, `Content-Type: text/disconnect-notice\nContent-Length: ${Buffer.byteLength(message)}\n\n${message}`);
    conn.socket.end();
  }
}

/**
 * What reading the first command of `buffer` costs read_packet: its header block byte
 * by byte, then a Content-Length body in one go. Null when the command is not complete.
 */
function commandCost(buffer: Buffer): { headerBytes: number; totalBytes: number } | null {
  let newlines = 0;
  let end = -1;
  let start = 0;
  while (start < buffer.length && (buffer[start] === 10 || buffer[start] === 13)) start++;
  for (let i = start; i < buffer.length; i++) {
    const b = buffer[i];
    if (b === 10) {
      if (++newlines === 2) {
        end = i + 1;
        break;
      }
    } else if (b !== 13) newlines = 0;
  }
  if (end < 0) return null;
  const match = /\ncontent-length: *(\d+)/i.exec(buffer.toString('latin1', start, end));
  const body = match ? Number(match[1]) : 0;
  if (buffer.length < end + body) return null;
  return { headerBytes: end, totalBytes: end + body };
}

function matches(conn: Connection, template: Template): boolean {
  if (conn.all) return true;
  if (!conn.names.has(template.name)) return false;
  return template.name !== 'CUSTOM' || template.subclass === undefined || conn.subclasses.has(template.subclass);
}

function headerValue(headers: Header[], name: string): string | undefined {
  const lower = name.toLowerCase();
  return headers.find(([n]) => n.toLowerCase() === lower)?.[1];
}

function removeHeader(headers: Header[], name: string): void {
  for (let i = headers.length - 1; i >= 0; i--) if (headers[i][0].toLowerCase() === name.toLowerCase()) headers.splice(i, 1);
}

/**
 * Reads client commands the way mod_event_socket's read_packet does: leading blank
 * lines skipped, a block ends at two LFs (CRs ignored), `Name: value` split at the
 * first ':' with leading spaces dropped, a Content-Length header pulls in a body.
 */
class CommandReader {
  private buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): ReceivedCommand[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const out: ReceivedCommand[] = [];
    for (;;) {
      let start = 0;
      while (start < this.buffer.length && (this.buffer[start] === 10 || this.buffer[start] === 13)) start++;
      let end = -1;
      let newlines = 0;
      for (let i = start; i < this.buffer.length; i++) {
        const b = this.buffer[i];
        if (b === 10) {
          if (++newlines === 2) {
            end = i + 1;
            break;
          }
        } else if (b !== 13) newlines = 0;
      }
      if (end < 0) {
        this.buffer = this.buffer.subarray(start);
        return out;
      }
      const lines = this.buffer.toString('utf8', start, end).split(/\r?\n/).filter((l) => l !== '');
      const headers: Header[] = [];
      let length = 0;
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon < 0) continue;
        const name = line.slice(0, colon);
        const value = line.slice(colon + 1).replace(/^ +/, '');
        if (name.toLowerCase() === 'content-length') length = Number.parseInt(value, 10) || 0;
        headers.push([name, value]);
      }
      if (this.buffer.length - end < length) return out;
      const body = length > 0 ? this.buffer.toString('utf8', end, end + length) : null;
      this.buffer = this.buffer.subarray(end + length);
      out.push({ command: lines[0] ?? '', headers, body });
    }
  }
}

function localDate(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitDrain(socket: net.Socket): Promise<void> {
  if (socket.destroyed || !socket.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

function closedPromise(socket: net.Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** Parse `--name value` flags and start a simulator; used by the demo as a separate process. */
export async function startSimulatorFromArgs(argv: string[]): Promise<EslSimulator> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) flags.set(arg.slice(2), 'true');
    else {
      flags.set(arg.slice(2), next);
      i++;
    }
  }
  const sim = await EslSimulator.start({
    port: Number(flags.get('port') ?? 8021),
    host: flags.get('host'),
    password: flags.get('password'),
    hostname: flags.get('hostname'),
    switchname: flags.get('switchname'),
    ipv4: flags.get('ipv4'),
    coreUuid: flags.get('core-uuid'),
  });
  const heartbeatMs = Number(flags.get('heartbeat-ms') ?? 0);
  if (heartbeatMs > 0) {
    const timer = setInterval(() => sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready')), heartbeatMs);
    timer.unref();
  }
  const replayFile = flags.get('replay');
  if (replayFile) {
    const events = EslSimulator.loadCapture(replayFile);
    const rate = Number(flags.get('rate') ?? 50);
    const loop = flags.get('loop') === 'true';
    void (async () => {
      for (;;) {
        await sim.waitForSubscribers(1, 24 * 3600_000).catch(() => undefined);
        await sim.replay(events, { rate, loop });
        if (!loop) break;
      }
    })();
  }
  return sim;
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  startSimulatorFromArgs(process.argv.slice(2)).then(
    (sim) => {
      process.stdout.write(`esl-simulator listening on 127.0.0.1:${sim.port} switchname=${sim.switchname} core-uuid=${sim.coreUuid}\n`);
      const shutdown = () => void sim.stop({ graceful: true }).then(() => process.exit(0));
      process.once('SIGINT', shutdown);
      process.once('SIGTERM', shutdown);
    },
    (err: unknown) => {
      process.stderr.write(`esl-simulator: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
