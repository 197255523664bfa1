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
  | { cmd: 'legacy-heartbeat'; id: number; ms: number };

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
});
sim.on('sendevent', (event: FsEvent) => {
  // Injected heartbeats of the peers arrive several times a second forever; reporting
  // them would only grow the runner's memory. Everything else is reported.
  if (event.get('Orig-Event-Name') === 'HEARTBEAT') return;
  out({ type: 'sendevent', at: Date.now(), headers: event.headers, body: event.body });
});
const heartbeat = setInterval(() => sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready')), config.heartbeatMs);

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
  if (legacy.timer) clearInterval(legacy.timer);
  legacy.socket?.close();
  forwarder?.close();
  void sim.stop({ graceful: true }).then(() => process.exit(0));
});
process.once('SIGTERM', () => process.exit(0));
out({ type: 'ready', coreUuid: sim.coreUuid });
