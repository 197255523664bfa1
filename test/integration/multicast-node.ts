/**
 * A multicast transport in its own process, for tests that need it inside a network
 * namespace (started with nodeInNetns). Config as JSON in argv[2]; commands as JSON
 * lines on stdin; reports as JSON lines on stdout. Not a test file itself.
 */
import { createInterface } from 'node:readline';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { PeerTracker } from '../../bridge/pipeline/peers.js';
import { namespaceUdpRcvbufErrors } from '../../bridge/transports/multicast/kernel-drops.js';
import { MulticastTransport } from '../../bridge/transports/multicast/transport.js';
import { SecureOpener } from '../../bridge/transports/multicast/secure.js';
import { parseMulticastKey } from '../../bridge/config/multicast-key.js';
import type { SecureMulticastConfig } from '../../bridge/config/types.js';
import { listen } from '../../bridge/cli/commands/listen.js';

export interface NodeProcessConfig {
  nodeName: string;
  group: string;
  port: number;
  interface: string;
  psk: string | null;
  bindings: string;
  ttl?: number;
  loopback?: boolean;
  receiveBufferBytes?: number;
  /** Bound of the receiver's hand-off to the main thread (datagrams). */
  receiveQueueDatagrams?: number;
  peerTimeoutMs?: number;
  peerCheckMs?: number;
  /** Secure mode: keys as in the config (`<id>:<hex>`). */
  secure?: SecureNodeConfig | null;
  /**
   * events: print every received event; count: only count them (benchmarks); listen: run the
   * `listen` command's code instead of a transport; capture: print every datagram as it came (base64), decode nothing.
   */
  report: 'events' | 'count' | 'listen' | 'capture';
}

export interface SecureNodeConfig {
  key: string;
  acceptKey?: string;
  maxAgeMs?: number;
  replayWindow?: number;
}

function secureConfig(secure: SecureNodeConfig | null | undefined): SecureMulticastConfig | null {
  if (!secure) return null;
  return {
    key: parseMulticastKey(secure.key),
    acceptKey: secure.acceptKey ? parseMulticastKey(secure.acceptKey) : null,
    maxAgeMs: secure.maxAgeMs ?? 10_000,
    replayWindow: secure.replayWindow ?? 1024,
  };
}

export type NodeCommand =
  | { cmd: 'send'; name: string; count?: number; headers?: Header[]; body?: string | null }
  | { cmd: 'reload'; bindings: string; psk: string | null; ttl: number; secure?: SecureNodeConfig | null }
  | { cmd: 'raw'; base64: string[] }
  /** Block the main thread (no CPU used) for `ms`, as a long GC pause or a stuck consumer would; reports 'blocking' first. */
  | { cmd: 'block'; ms: number }
  | { cmd: 'stats' };

const config = JSON.parse(process.argv[2]) as NodeProcessConfig;
if (config.report === 'listen') {
  const secure = secureConfig(config.secure);
  const opener = secure ? new SecureOpener(secure.acceptKey ? [secure.key, secure.acceptKey] : [secure.key], secure) : null;
  await listen({ address: config.group, port: config.port, psk: config.psk === null ? null : Buffer.from(config.psk), secure: opener, interface: config.interface }, (line) => process.stdout.write(line), silentLogger());
  process.stdout.write(JSON.stringify({ type: 'ready' }) + '\n');
  process.stdin.resume().on('end', () => process.exit(0));
}
const metrics = new Metrics();
const out = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');
const peers = new PeerTracker((event) => out({ type: 'peer', headers: event.headers }), {
  timeoutMs: config.peerTimeoutMs ?? 60_000,
  checkIntervalMs: config.peerCheckMs ?? 5_000,
});
const transport = new MulticastTransport(
  {
    enabled: true,
    address: config.group,
    port: config.port,
    bindAddress: '0.0.0.0',
    interface: config.interface,
    ttl: config.ttl ?? 1,
    loopback: config.loopback ?? false,
    psk: config.psk,
    secure: secureConfig(config.secure),
    bindings: Bindings.parse(config.bindings),
    receiveBufferBytes: config.receiveBufferBytes ?? 8 * 1024 * 1024,
    peerTimeoutMs: config.peerTimeoutMs ?? 60_000,
    maxDatagramBytes: 65_507,
  },
  { nodeName: config.nodeName, metrics, logger: silentLogger(), gaps: peers, receiveQueue: { datagrams: config.receiveQueueDatagrams } },
);

let received = 0;
/** Event-Sequence bookkeeping per sender: the loss and order a benchmark can count independently of the transport's own counters. */
const lastSequence = new Map<string, number>();
let sequenceGaps = 0;
let outOfOrder = 0;

function observeSequence(sender: string, value: string | undefined): void {
  const seq = Number(value);
  const last = lastSequence.get(sender) ?? 0;
  if (seq <= last) outOfOrder++;
  else {
    sequenceGaps += seq - last - 1;
    lastSequence.set(sender, seq);
  }
}
let sequence = 0;
const coreUuid = `core-${config.nodeName}-${process.pid}`;

async function sum(name: string, filter: (labels: Partial<Record<string, string | number>>) => boolean = () => true): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) return 0;
  return (await metric.get()).values.filter((v) => filter(v.labels)).reduce((total, v) => total + v.value, 0);
}

async function stats(): Promise<object> {
  const drops: Record<string, number> = {};
  for (const v of (await metrics.drops.get()).values) drops[`${v.labels.component}:${v.labels.cause}`] = v.value;
  const filtered: Record<string, number> = {};
  for (const v of (await metrics.filtered.get()).values) filtered[`${v.labels.component}:${v.labels.cause}`] = v.value;
  return {
    type: 'stats',
    received,
    sequenceGaps,
    outOfOrder,
    lastSequence: Object.fromEntries(lastSequence),
    sent: await sum('fsb_events_out_total'),
    lost: await sum('fsb_sequence_gap_events_total'),
    legacyGaps: await sum('fsb_multicast_legacy_sequence_gap_total'),
    own: await sum('fsb_multicast_own_datagrams_total'),
    drops,
    filtered,
    receiveBufferBytes: transport.socket.receiveBufferBytes,
    netnsRcvbufErrors: namespaceUdpRcvbufErrors(),
    peers: peers.list(),
  };
}

async function handle(command: NodeCommand): Promise<void> {
  if (command.cmd === 'send') {
    const count = command.count ?? 1;
    for (let i = 0; i < count; i++) {
      sequence++;
      const event = new FsEvent(
        [['Event-Name', command.name], ['Core-UUID', coreUuid], ['Event-Sequence', String(sequence)], ...(command.headers ?? [])],
        command.body ?? null,
      );
      transport.sink.deliver({ event, origin: { transport: 'esl', node: config.nodeName, receivedAt: Date.now() } });
    }
    out({ type: 'sent', count });
  } else if (command.cmd === 'raw') {
    // A legacy sender: captured datagrams, byte for byte, from the same socket.
    for (const datagram of command.base64) transport.socket.send(Buffer.from(datagram, 'base64'), () => {});
    out({ type: 'sent', count: command.base64.length });
  } else if (command.cmd === 'block') {
    out({ type: 'blocking' });
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, command.ms);
    out({ type: 'unblocked' });
  } else if (command.cmd === 'reload') {
    transport.reconfigure({ bindings: Bindings.parse(command.bindings), psk: command.psk, secure: secureConfig(command.secure), ttl: command.ttl });
    out({ type: 'reloaded' });
  } else {
    out(await stats());
  }
}

if (config.report !== 'listen') await run();

async function run(): Promise<void> {
  await transport.sink.start();
  if (config.report === 'capture') {
    // What an eavesdropper on the LAN records; the socket is the transport's own, the source never starts.
    transport.socket.setListener((datagram) => out({ type: 'datagram', base64: datagram.toString('base64') }), () => {});
    await transport.socket.acquire();
  } else await transport.source.start((item) => {
    received++;
    observeSequence(item.origin.node, item.event.get('Event-Sequence'));
    peers.observe(item);
    if (config.report === 'events') out({ type: 'event', node: item.origin.node, headers: item.event.headers, body: item.event.body });
  });
  peers.start();
  out({ type: 'ready', receiveBufferBytes: transport.socket.receiveBufferBytes });

  const lines = createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    queue = queue.then(() => handle(JSON.parse(line) as NodeCommand));
  });
  lines.on('close', () => {
    void queue.then(async () => {
      peers.stop();
      await transport.source.stop();
      await transport.sink.stop();
      process.exit(0);
    });
  });
}
