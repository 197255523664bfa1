/**
 * One "host" of the local cluster, run inside that host's network namespace: the
 * FreeSWITCH stand-in (EslSimulator) the bridge connects to, plus what the runner in
 * the root namespace cannot do from outside (the namespace's loopback is private):
 * probe the bridge's status server, and send raw mod_event_multicast datagrams as a
 * legacy node would.
 *
 * Config as JSON in argv[2] (AgentConfig). Commands as JSON lines on stdin, reports as
 * JSON lines on stdout (AgentCommand / AgentReport). Closing stdin stops it.
 */
import { randomUUID } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { encodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { EslSimulator } from '../../test/support/esl-simulator.js';

export interface AgentConfig {
  switchname: string;
  hostname: string;
  ipv4: string;
  eslPort: number;
  /** HEARTBEAT period of the simulated FreeSWITCH (FreeSWITCH: 20 s). */
  heartbeatMs: number;
  /** Where the bridge's status server listens, seen from inside the namespace. */
  statusUrl: string;
  /** Group, port and interface address for legacy datagrams (null: no multicast in this layout). */
  multicast: { group: string; port: number; interface: string } | null;
  /**
   * A Unix socket the agent forwards to the status server (its board). The namespace's
   * loopback is private, but a socket file is reachable from the runner, which serves
   * it on the host's own loopback for a browser.
   */
  boardSocket: string | null;
}

export type AgentCommand =
  /** Fire an event from the simulated FreeSWITCH (it gets the node's identity headers, date and next sequence). */
  | { cmd: 'fire'; id: number; headers: Header[]; body?: string | null }
  /** GET a path of the bridge's status server. */
  | { cmd: 'http'; id: number; path: string }
  /** Send one event as a legacy mod_event_multicast node would (plain datagram, TTL 1). */
  | { cmd: 'datagram'; id: number; headers: Header[]; body?: string | null }
  /** Legacy HEARTBEAT datagrams every `ms` (0 stops them). */
  | { cmd: 'legacy-heartbeat'; id: number; ms: number }
  /** Fire `CUSTOM <subclass>` events at `rate` per second, numbered by a Load-Seq header (rate 0 stops). */
  | { cmd: 'load'; id: number; rate: number; subclass: string }
  /** The load's bookkeeping as JSON in `body` (LoadStats). */
  | { cmd: 'load-stats'; id: number }
  /** Close the bridge's ESL connections abruptly, as a FreeSWITCH restart or a network cut would. */
  | { cmd: 'drop-esl'; id: number };

/** Inclusive ranges of sequence numbers, e.g. [[1, 5], [9, 9]]. */
export type Ranges = [number, number][];

/** What `load-stats` reports: what this node fired, and the load of other nodes its bridge injected here. */
export interface LoadStats {
  fired: number;
  /** [Load-Seq, Date.now()] about every 100 ms while firing: when each number was fired. */
  firedAt: [number, number][];
  /** Events the load should have fired by now at its rate (fired lags it when this process cannot keep up). */
  due: number;
  /** Events this FreeSWITCH stand-in lost because its bridge read too slowly (a listener's queue full), and listeners it killed for it. */
  lostInFreeswitch: number;
  killedListeners: number;
  /** Fired while no bridge was subscribed: FreeSWITCH gives such events to nobody. */
  unheard: Ranges;
  received: Record<string, { unique: number; duplicates: number; highest: number; missing: Ranges }>;
}

export type AgentReport =
  | { type: 'ready'; coreUuid: string }
  | { type: 'done'; id: number; seq?: number; status?: number; body?: string }
  | { type: 'error'; id: number; message: string }
  /** An event the bridge wrote with `sendevent`, headers as written. */
  | { type: 'sendevent'; at: number; headers: Header[]; body: string | null };

const config = JSON.parse(process.argv[2]) as AgentConfig;
const out = (report: AgentReport) => process.stdout.write(JSON.stringify(report) + '\n');

const sim = await EslSimulator.start({
  port: config.eslPort,
  switchname: config.switchname,
  hostname: config.hostname,
  ipv4: config.ipv4,
  // Every injection is reported or counted below; keeping them too would grow without bound under load.
  keepReceived: false,
});
sim.on('sendevent', (event: FsEvent) => {
  // Injected heartbeats of the peers arrive several times a second forever, and a load
  // thousands a second; reporting them would only grow the runner's memory. They are
  // counted here instead (load); everything else is reported.
  if (event.get('Orig-Event-Name') === 'HEARTBEAT') return;
  if (load.subclass !== null && event.get('Orig-Event-Subclass') === load.subclass) {
    load.receive(event.get('Orig-Load-Origin') ?? '?', Number(event.get('Orig-Load-Seq')));
    return;
  }
  out({ type: 'sendevent', at: Date.now(), headers: event.headers, body: event.body });
});
const heartbeat = setInterval(() => sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready')), config.heartbeatMs);

/** Seen sequence numbers as a growable bitmap: a million events take 128 KB. */
class SeenSet {
  private bits = new Uint8Array(1024);
  highest = 0;
  unique = 0;
  duplicates = 0;

  add(seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 1 || seq > 100_000_000) return;
    while (seq >> 3 >= this.bits.length) {
      const grown = new Uint8Array(this.bits.length * 2);
      grown.set(this.bits);
      this.bits = grown;
    }
    const mask = 1 << (seq & 7);
    if (this.bits[seq >> 3] & mask) {
      this.duplicates++;
      return;
    }
    this.bits[seq >> 3] |= mask;
    this.unique++;
    if (seq > this.highest) this.highest = seq;
  }

  /** Ranges of 1..upTo not seen. */
  missing(upTo: number): Ranges {
    const out: Ranges = [];
    for (let seq = 1; seq <= upTo; seq++) {
      if (this.bits[seq >> 3] & (1 << (seq & 7))) continue;
      const last = out.at(-1);
      if (last && last[1] === seq - 1) last[1] = seq;
      else out.push([seq, seq]);
    }
    return out;
  }
}

/** A late timer tick catches up at most this much of the rate: a stalled process does not fire its backlog in one burst. */
const CATCH_UP_MS = 1_000;

const load = {
  subclass: null as string | null,
  timer: null as NodeJS.Timeout | null,
  fired: 0,
  /** What the rate asked for so far (fractional), across start/stop. */
  due: 0,
  firedAt: [] as [number, number][],
  unheard: [] as Ranges,
  received: new Map<string, SeenSet>(),
  start(rate: number, subclass: string): void {
    this.stop();
    if (rate <= 0) return;
    this.subclass = subclass;
    // Fired in batches every 10 ms, as many as the time since the last tick asks for
    // (timers run late on a busy machine): a steady rate without a timer per event.
    let last = performance.now();
    let owed = 0;
    this.timer = setInterval(() => {
      const now = performance.now();
      const asked = (rate * (now - last)) / 1000;
      this.due += asked;
      owed = Math.min(owed + asked, (rate * CATCH_UP_MS) / 1000);
      last = now;
      const checkpoint = this.firedAt.at(-1);
      if (owed >= 1 && (!checkpoint || Date.now() - checkpoint[1] >= 100)) this.firedAt.push([this.fired + 1, Date.now()]);
      for (; owed >= 1; owed--) {
        const seq = ++this.fired;
        if (sim.subscriberCount === 0) {
          const range = this.unheard.at(-1);
          if (range && range[1] === seq - 1) range[1] = seq;
          else this.unheard.push([seq, seq]);
        }
        sim.fire(FsEvent.create('CUSTOM', subclass).add('Load-Origin', config.switchname).add('Load-Seq', String(seq)));
      }
    }, 10);
  },
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  },
  receive(origin: string, seq: number): void {
    let seen = this.received.get(origin);
    if (!seen) this.received.set(origin, (seen = new SeenSet()));
    seen.add(seq);
  },
  stats(): LoadStats {
    const received: LoadStats['received'] = {};
    for (const [origin, seen] of this.received) received[origin] = { unique: seen.unique, duplicates: seen.duplicates, highest: seen.highest, missing: seen.missing(seen.highest) };
    return { fired: this.fired, firedAt: this.firedAt, due: Math.floor(this.due), lostInFreeswitch: sim.lostEvents, killedListeners: sim.killedListeners, unheard: this.unheard, received };
  },
};

const legacy = {
  coreUuid: randomUUID(),
  sequence: 1,
  socket: null as ReturnType<typeof createSocket> | null,
  timer: null as NodeJS.Timeout | null,
};

/** The event as a legacy node's switch_event_prep_for_delivery would stamp it. */
function legacyEvent(headers: Header[], body: string | null): FsEvent {
  const own = new FsEvent(headers, body);
  const now = Date.now();
  const event = new FsEvent([['Event-Name', own.name]], body);
  if (own.subclass !== undefined) event.add('Event-Subclass', own.subclass);
  event
    .add('Core-UUID', legacy.coreUuid)
    .add('FreeSWITCH-Hostname', config.hostname)
    .add('FreeSWITCH-Switchname', config.switchname)
    .add('FreeSWITCH-IPv4', config.ipv4)
    .add('Event-Date-Timestamp', `${now}000`)
    .add('Event-Sequence', String(legacy.sequence++));
  for (const [name, value] of own.headers) if (!event.has(name)) event.add(name, value);
  return event;
}

async function sendDatagram(headers: Header[], body: string | null): Promise<void> {
  const mc = config.multicast;
  if (!mc) throw new Error('this layout has no multicast');
  if (!legacy.socket) {
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve) => socket.bind(0, mc.interface, () => resolve()));
    socket.setMulticastInterface(mc.interface);
    socket.setMulticastTTL(1);
    socket.setMulticastLoopback(false);
    legacy.socket = socket;
  }
  const datagram = encodeDatagram(legacyEvent(headers, body), config.switchname, null);
  await new Promise<void>((resolve, reject) => legacy.socket!.send(datagram, mc.port, mc.group, (err) => (err ? reject(err) : resolve())));
}

async function run(command: AgentCommand): Promise<AgentReport> {
  switch (command.cmd) {
    case 'fire':
      return { type: 'done', id: command.id, seq: sim.fire(new FsEvent(command.headers, command.body ?? null)) };
    case 'http': {
      const response = await fetch(config.statusUrl + command.path, { signal: AbortSignal.timeout(2_000) });
      return { type: 'done', id: command.id, status: response.status, body: await response.text() };
    }
    case 'datagram':
      await sendDatagram(command.headers, command.body ?? null);
      return { type: 'done', id: command.id };
    case 'legacy-heartbeat': {
      if (legacy.timer) clearInterval(legacy.timer);
      legacy.timer = null;
      const beat = () => sendDatagram([['Event-Name', 'HEARTBEAT'], ['Event-Info', 'System Ready']], null).catch(() => undefined);
      if (command.ms > 0) {
        void beat();
        legacy.timer = setInterval(beat, command.ms);
      }
      return { type: 'done', id: command.id };
    }
    case 'load':
      load.start(command.rate, command.subclass);
      return { type: 'done', id: command.id };
    case 'load-stats':
      return { type: 'done', id: command.id, body: JSON.stringify(load.stats()) };
    case 'drop-esl':
      await sim.dropClients();
      return { type: 'done', id: command.id };
  }
}

const forwarder = config.boardSocket
  ? createServer((client) => {
      const status = new URL(config.statusUrl);
      const upstream = connect(Number(status.port), status.hostname);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.pipe(upstream).pipe(client);
    }).listen(config.boardSocket)
  : null;

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === '') return;
  const command = JSON.parse(line) as AgentCommand;
  run(command).then(out, (err: Error) => out({ type: 'error', id: command.id, message: err.message }));
});
lines.on('close', () => {
  clearInterval(heartbeat);
  load.stop();
  if (legacy.timer) clearInterval(legacy.timer);
  legacy.socket?.close();
  forwarder?.close();
  void sim.stop({ graceful: true }).then(() => process.exit(0));
});
process.once('SIGTERM', () => process.exit(0));
out({ type: 'ready', coreUuid: sim.coreUuid });
