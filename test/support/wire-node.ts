/**
 * One bridged node for driving wire input through every path in-process, with no
 * socket: the real Bridge (pipeline, dedup, peers, the injection path) whose ESL client
 * and injector write their commands into `written` instead of a socket, the real BLF and location
 * consumers on it, and multicast sources fed datagrams by hand. Used by the wire
 * property test (test/unit/wire-properties.test.ts) and the fuzz harness (test/fuzz/).
 */
import { Bridge, guardedLocalNode } from '../../bridge/bridge.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import type { ConsumerContext, StateStore } from '../../bridge/consumer.js';
import type { EslFrame } from '../../bridge/esl/frame-parser.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { serializeJson } from '../../bridge/event/json.js';
import { serializePlain } from '../../bridge/event/plain.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { Pipeline } from '../../bridge/pipeline/pipeline.js';
import type { BridgeEvent } from '../../bridge/pipeline/types.js';
import type { EslClient } from '../../bridge/sources/esl/client.js';
import { MulticastSink } from '../../bridge/transports/multicast/sink.js';
import type { MulticastSocket, SendCallback } from '../../bridge/transports/multicast/socket.js';
import { MulticastSource } from '../../bridge/transports/multicast/source.js';
import { decodeKvKey, encodeKvKey } from '../../bridge/transports/nats/kv.js';
import { BlfConsumer } from '../../consumers/blf/blf-consumer.js';
import { LocationConsumer } from '../../consumers/location/location-consumer.js';
import { MemoryStateStore } from './consumer-context.js';

/** Records datagrams instead of sending them. */
export class CapturingSocket {
  sent: Buffer[] = [];
  setListener(): void {}
  acquire(): Promise<void> {
    return Promise.resolve();
  }
  release(): Promise<void> {
    return Promise.resolve();
  }
  send(datagram: Buffer, callback: SendCallback): void {
    this.sent.push(datagram);
    callback(null);
  }
  ownSkipped(): number {
    return 0;
  }
  kernelDrops(): number | null {
    return null;
  }
}

/** A state store that escapes keys exactly like the NATS one does, and refuses what it refuses. */
export class EscapingStateStore implements StateStore {
  readonly memory = new MemoryStateStore();
  async put(key: string, value: string): Promise<void> {
    await this.memory.put(decodeKvKey(encodeKvKey(key)), value);
  }
  async delete(key: string): Promise<void> {
    await this.memory.delete(decodeKvKey(encodeKvKey(key)));
  }
  entries(): Promise<Map<string, string>> {
    return this.memory.entries();
  }
  watch(onChange: (key: string, value: string | null) => void): Promise<() => Promise<void>> {
    return this.memory.watch(onChange);
  }
}

export interface Written {
  /** The event sendEvent was called with, for sendevent commands. */
  event: FsEvent | null;
  text: string;
}

/**
 * What mod_event_socket would make of a command: one command per write, header lines
 * split at the first ':', a NUL ending it. The problem when a value could have added a
 * header or a command, else undefined.
 */
export function wellFormedProblem(written: Written): string | undefined {
  const { text, event } = written;
  const end = text.indexOf('\n\n');
  if (end <= 0) return 'no blank line ends the command';
  const head = text.slice(0, end);
  if (/[\r\0]/.test(head)) return 'CR or NUL before the blank line';
  const lines = head.split('\n');
  if (event === null) {
    if (lines.length !== 1) return `an api command of ${lines.length} lines`;
    if (text.length !== end + 2) return 'text after an api command';
    const db = /^api db (insert|delete)\/(.*)$/.exec(lines[0]);
    const parts = db?.[2].split('/').length;
    if (db && parts !== (db[1] === 'insert' ? 3 : 2)) return `db ${db[1]} with ${parts} parts`;
    return undefined;
  }
  const expected = event.headers.filter(([name]) => !/^(event-name|content-length)$/i.test(name)).length;
  const bodyLines = event.body !== null && event.body !== '' ? 1 : 0;
  if (lines.length - 1 !== expected + bodyLines) return `sendevent of ${lines.length - 1} lines for ${expected + bodyLines} headers and body`;
  const unnamed = lines.slice(1).find((line) => line.indexOf(':') <= 0);
  return unnamed === undefined ? undefined : `a line with no header name: ${JSON.stringify(unnamed.slice(0, 60))}`;
}

/** An ESL frame as FreeSWITCH writes it for an event in either format. */
export function eslFrame(event: FsEvent, format: 'plain' | 'json'): Buffer {
  const body = Buffer.from(format === 'plain' ? serializePlain(event) : serializeJson(event), 'utf8');
  return Buffer.concat([Buffer.from(`Content-Length: ${body.length}\nContent-Type: text/event-${format}\n\n`), body]);
}

export interface NodeIdentity {
  name: string;
  hostname: string;
  ipv4: string;
}

export interface WireNodeOptions {
  sink: 'sqlite' | 'esl';
  locationParity: boolean;
  blfParity: boolean;
  /** The psk of the second multicast source. */
  psk: Buffer;
}

export function wireNodeConfig(node: NodeIdentity) {
  const xml = defaultConfigXml({
    settings: { 'node-name': node.name, hostname: node.hostname, ipv4: node.ipv4, cluster: 'props' },
    multicast: { enabled: 'no', 'peer-timeout': '2s' },
    nats: { enabled: 'yes', 'buffer-max-events': '200' },
    metrics: { enabled: 'no' },
    dedup: { 'max-entries': '100' },
  });
  return loadConfigText(xml, `${node.name}.xml`, {}).config;
}

/**
 * The node as a Bridge that is never connected. Create it after installing fake timers
 * when the consumers' timers (expiry sweep, peer-down purge, forget) should run on fake time.
 */
export async function wireNode(node: NodeIdentity, options: WireNodeOptions) {
  const config = wireNodeConfig(node);
  const metrics = new Metrics();
  const bridge = new Bridge(config, { logger: silentLogger(), metrics });
  const written: Written[] = [];
  const esl = bridge.esl as unknown as { command: (text: string) => Promise<EslFrame>; sendEvent: EslClient['sendEvent'] };
  let current: FsEvent | null = null;
  esl.command = async (text) => {
    written.push({ event: current, text });
    return { headers: { 'Reply-Text': '+OK 00000000-0000-0000-0000-000000000000' }, body: Buffer.from('+OK') };
  };
  const sendEvent = esl.sendEvent.bind(bridge.esl);
  // sendEvent writes its command synchronously, before its first await.
  esl.sendEvent = (event) => {
    current = event;
    try {
      return sendEvent(event);
    } finally {
      current = null;
    }
  };
  // Injections (remote events, peer events) go through the injector: FreeSWITCH answers each at once.
  bridge.injector.offer = (item) => {
    written.push({ event: item.event ?? null, text: item.command });
    item.done?.('injected');
    return true;
  };
  const stores = new Map<string, EscapingStateStore>();
  const context: ConsumerContext = {
    node: config.node,
    events: bridge.pipeline,
    local: guardedLocalNode(bridge.esl, config.node.name),
    logger: silentLogger(),
    metrics,
    openState: async (bucket) => {
      if (!stores.has(bucket)) stores.set(bucket, new EscapingStateStore());
      return stores.get(bucket)!;
    },
  };
  const location = new LocationConsumer({ ...config.consumers.location, enabled: true, sink: options.sink, dbPath: ':memory:', legacyParity: options.locationParity, peerDownGraceMs: 1_000, expiryMarginMs: 0, flushMs: 5 });
  const blf = new BlfConsumer({ ...config.consumers.blf, enabled: true, legacyParity: options.blfParity });
  await location.start(context);
  await blf.start(context);
  const common = { nodeName: config.node.name, maxDatagramBytes: 65_507, metrics, logger: silentLogger(), gaps: bridge.peers };
  const source = new MulticastSource(new CapturingSocket() as unknown as MulticastSocket, { ...common, psk: null });
  const pskSource = new MulticastSource(new CapturingSocket() as unknown as MulticastSocket, { ...common, psk: options.psk });
  const emit = (item: BridgeEvent) => bridge.remote(item);
  await source.start(emit);
  await pskSource.start(emit);
  bridge.peers.start();
  const stop = async () => {
    await location.stop();
    await blf.stop();
    bridge.peers.stop();
    await source.stop();
    await pskSource.stop();
  };
  return { bridge, config, metrics, location, blf, source, pskSource, written, emit, stores, stop };
}

/** The sending side of a remote event: a pipeline with the real multicast sink, in plaintext and with a psk. */
export function wireSender(name: string, psk: Buffer) {
  const metrics = new Metrics();
  const common = { nodeName: name, maxDatagramBytes: 65_507, metrics, logger: silentLogger(), bindings: Bindings.parse('ALL') };
  const plain = new CapturingSocket();
  const secret = new CapturingSocket();
  const sinks = [new MulticastSink(plain as unknown as MulticastSocket, { ...common, psk: null }), new MulticastSink(secret as unknown as MulticastSocket, { ...common, psk })];
  const pipeline = new Pipeline({ nodeName: name, sinks, dedup: { maxEntries: 100, ttlMs: 60_000 }, inject: () => undefined, metrics, logger: silentLogger() });
  return { pipeline, plain, secret };
}
