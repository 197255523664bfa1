import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Bridge, guardedLocalNode } from '../../bridge/bridge.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import type { ConsumerContext, StateStore } from '../../bridge/consumer.js';
import { ParseError } from '../../bridge/errors.js';
import { EslFrameParser, type EslFrame } from '../../bridge/esl/frame-parser.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { parseJson, serializeJson } from '../../bridge/event/json.js';
import { serializePlain } from '../../bridge/event/plain.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { Bindings } from '../../bridge/pipeline/bindings.js';
import { Pipeline } from '../../bridge/pipeline/pipeline.js';
import { Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import type { EslClient } from '../../bridge/sources/esl/client.js';
import { MulticastSink } from '../../bridge/transports/multicast/sink.js';
import type { MulticastSocket, SendCallback } from '../../bridge/transports/multicast/socket.js';
import { MulticastSource } from '../../bridge/transports/multicast/source.js';
import { decodeKvKey, encodeKvKey } from '../../bridge/transports/nats/kv.js';
import { BlfConsumer } from '../../consumers/blf/blf-consumer.js';
import { LocationConsumer } from '../../consumers/location/location-consumer.js';
import { MemoryStateStore } from '../support/consumer-context.js';
import { NODES, wireEvent, type WireEvent } from '../support/wire-arbitraries.js';

/**
 * Arbitrary events (any UTF-16 including lone surrogates, NUL, CR/LF, 64 KB values,
 * forged identities and timestamps) driven through every path a wire string takes:
 * ESL framing and parsing -> pipeline -> multicast and NATS sinks; multicast datagram
 * and NATS JSON decode -> dedup -> injection into the node; both consumers on every
 * path, with their timers (expiry sweep, peer-down purge, forget) run by fake time.
 * Nothing may throw, reject unhandled, write a malformed ESL command, or grow
 * without bound.
 */

const PSK = Buffer.from('wire-properties-psk');

/** Records datagrams instead of sending them. */
class CapturingSocket {
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
}

/** A state store that escapes keys exactly like the NATS one does, and refuses what it refuses. */
class EscapingStateStore implements StateStore {
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

interface Written {
  /** The event sendEvent was called with, for sendevent commands. */
  event: FsEvent | null;
  text: string;
}

/**
 * What mod_event_socket would make of a command: one command per write, header lines
 * split at the first ':', a NUL ending it. Fails when a value could have added a header
 * or a command.
 */
function expectWellFormed(written: Written): void {
  const { text, event } = written;
  const end = text.indexOf('\n\n');
  expect(end).toBeGreaterThan(0);
  const head = text.slice(0, end);
  expect(head).not.toMatch(/[\r\0]/);
  const lines = head.split('\n');
  if (event === null) {
    expect(lines).toHaveLength(1);
    expect(text.length).toBe(end + 2);
    const db = /^api db (insert|delete)\/(.*)$/.exec(lines[0]);
    if (db) expect(db[2].split('/')).toHaveLength(db[1] === 'insert' ? 3 : 2);
    return;
  }
  const expected = event.headers.filter(([name]) => !/^(event-name|content-length)$/i.test(name)).length;
  const bodyLines = event.body !== null && event.body !== '' ? 1 : 0;
  expect(lines.length - 1).toBe(expected + bodyLines);
  for (const line of lines.slice(1)) expect(line.indexOf(':')).toBeGreaterThan(0);
}

/** An ESL frame as FreeSWITCH writes it for an event in either format. */
function eslFrame(event: FsEvent, format: 'plain' | 'json'): Buffer {
  const body = Buffer.from(format === 'plain' ? serializePlain(event) : serializeJson(event), 'utf8');
  return Buffer.concat([Buffer.from(`Content-Length: ${body.length}\nContent-Type: text/event-${format}\n\n`), body]);
}

type Via = 'esl-plain' | 'esl-json' | 'multicast' | 'multicast-psk' | 'nats' | 'nats-mangled' | 'datagram-mangled';

interface Step {
  wire: WireEvent;
  via: Via;
  /** Where a mangled copy is cut or flipped. */
  mangle: number;
  advanceMs: number;
  /** The clock jumps ahead this far (timers then run once), so long waits cost nothing. */
  jumpMs: number;
}

const step: fc.Arbitrary<Step> = fc.record({
  wire: wireEvent,
  via: fc.constantFrom<Via>('esl-plain', 'esl-json', 'multicast', 'multicast-psk', 'nats', 'nats', 'nats-mangled', 'datagram-mangled'),
  mangle: fc.nat(),
  advanceMs: fc.constantFrom(0, 0, 0, 5, 1_100, 3_100),
  jumpMs: fc.constantFrom(0, 0, 0, 0, 0, 61_000, 700_000),
});

const setup = fc.record({
  sink: fc.constantFrom('sqlite' as const, 'esl' as const),
  locationParity: fc.boolean(),
  blfParity: fc.boolean(),
  chunk: fc.integer({ min: 1, max: 4096 }),
});

function configFor(node: (typeof NODES)[number]) {
  const xml = defaultConfigXml({
    settings: { 'node-name': node.name, hostname: node.hostname, ipv4: node.ipv4, cluster: 'props' },
    multicast: { enabled: 'no', 'peer-timeout': '2s' },
    nats: { enabled: 'yes', 'buffer-max-events': '200' },
    metrics: { enabled: 'no' },
    dedup: { 'max-entries': '100' },
  });
  return loadConfigText(xml, `${node.name}.xml`, {}).config;
}

/** Node B (ours) as a Bridge that is never connected: its ESL client writes commands into `written`. */
async function nodeB(options: { sink: 'sqlite' | 'esl'; locationParity: boolean; blfParity: boolean }) {
  const config = configFor(NODES[1]);
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
  const source = new MulticastSource(new CapturingSocket() as unknown as MulticastSocket, { nodeName: config.node.name, psk: null, maxDatagramBytes: 65_507, metrics, logger: silentLogger(), gaps: bridge.peers });
  const pskSource = new MulticastSource(new CapturingSocket() as unknown as MulticastSocket, { nodeName: config.node.name, psk: PSK, maxDatagramBytes: 65_507, metrics, logger: silentLogger(), gaps: bridge.peers });
  const emit = (item: BridgeEvent) => {
    bridge.peers.observe(item);
    bridge.pipeline.remote(item);
  };
  await source.start(emit);
  await pskSource.start(emit);
  bridge.peers.start();
  return { bridge, location, blf, source, pskSource, written, emit, stores };
}

/** The sending side of a remote event: a pipeline with the real multicast sink, in plaintext and with a psk. */
function sender(name: string) {
  const metrics = new Metrics();
  const common = { nodeName: name, maxDatagramBytes: 65_507, metrics, logger: silentLogger(), bindings: Bindings.parse('ALL') };
  const plain = new CapturingSocket();
  const secret = new CapturingSocket();
  const sinks = [new MulticastSink(plain as unknown as MulticastSocket, { ...common, psk: null }), new MulticastSink(secret as unknown as MulticastSocket, { ...common, psk: PSK })];
  const pipeline = new Pipeline({ nodeName: name, sinks, dedup: { maxEntries: 100, ttlMs: 60_000 }, inject: () => undefined, metrics, logger: silentLogger() });
  return { pipeline, plain, secret };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('arbitrary wire input through the whole pipeline and both consumers', () => {
  it('never throws, never rejects unhandled, writes only well-formed ESL commands, keeps state bounded', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await fc.assert(
        fc.asyncProperty(setup, fc.array(step, { minLength: 1, maxLength: 25 }), async (options, steps) => {
          vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
          try {
            const b = await nodeB(options);
            const parser = new EslFrameParser();
            const senders = new Map<string, ReturnType<typeof sender>>();
            let registers = 0;
            let presence = 0;
            for (const { wire, via, mangle, advanceMs, jumpMs } of steps) {
              const { event } = wire;
              if (event.subclass === 'sofia::register') registers++;
              if (event.name === 'PRESENCE_IN') presence++;
              if (via === 'esl-plain' || via === 'esl-json') {
                const frame = eslFrame(event, via === 'esl-plain' ? 'plain' : 'json');
                for (let at = 0; at < frame.length; at += options.chunk) {
                  for (const parsed of parser.push(frame.subarray(at, at + options.chunk))) {
                    expect(isEventFrame(parsed)).toBe(true);
                    try {
                      b.bridge.pipeline.local(eventFromFrame(parsed), Date.now());
                    } catch (err) {
                      expect(err).toBeInstanceOf(ParseError);
                    }
                  }
                }
              } else if (via === 'nats' || via === 'nats-mangled') {
                let json = serializeJson(event);
                if (via === 'nats-mangled') json = json.slice(0, mangle % (json.length + 1)) + json.slice((mangle % (json.length + 1)) + 1);
                let decoded: FsEvent;
                try {
                  decoded = parseJson(json);
                } catch (err) {
                  expect(err).toBeInstanceOf(ParseError);
                  continue;
                }
                b.emit({ event: decoded, origin: { transport: Transport.Nats, node: wire.sender, receivedAt: Date.now() } });
              } else {
                // The sender's name comes from its config: arbitrary text is refused there, so forged names travel only in headers.
                const name = NODES.some((n) => n.name === wire.sender) ? wire.sender : 'fs-x';
                if (!senders.has(name)) senders.set(name, sender(name));
                const out = senders.get(name)!;
                out.pipeline.local(event, Date.now());
                for (const datagram of out.plain.sent.splice(0)) {
                  if (via === 'datagram-mangled') datagram[mangle % datagram.length] ^= 1 + (mangle % 255);
                  b.source.process(datagram);
                }
                for (const datagram of out.secret.sent.splice(0)) b.pskSource.process(datagram);
              }
              if (jumpMs > 0) vi.setSystemTime(Date.now() + jumpMs);
              if (advanceMs > 0) await vi.advanceTimersByTimeAsync(advanceMs);
            }
            // Every sweep, purge and forget timer gets its turn, after every expiry and memory window has passed.
            await vi.advanceTimersByTimeAsync(3_100);
            vi.setSystemTime(Date.now() + 700_000);
            await vi.runOnlyPendingTimersAsync();
            await vi.runOnlyPendingTimersAsync();
            await b.location.stop();
            await b.blf.stop();
            b.bridge.peers.stop();
            await b.source.stop();
            await b.pskSource.stop();
            for (const written of b.written) expectWellFormed(written);
            expect(b.location.registrations).toBeLessThanOrEqual(registers);
            expect(b.blf.lamps().size).toBeLessThanOrEqual(presence);
            expect(b.location.tombstones).toBeLessThanOrEqual(steps.length);
            for (const store of b.stores.values()) expect(store.memory.data.size).toBeLessThanOrEqual(registers + presence);
            // The pipeline catches a listener that throws and counts it: for a consumer that is a bug, whatever the input.
            const drops = (await b.bridge.metrics.drops.get()).values;
            expect(drops.filter((d) => d.labels.cause === 'consumer_error')).toEqual([]);
          } finally {
            vi.useRealTimers();
          }
        }),
        {
          numRuns: Number(process.env.WIRE_RUNS ?? 120),
          // On a loaded machine fewer runs fit: stop generating after a minute rather than time out (a failure still fails).
          interruptAfterTimeLimit: 45_000,
          markInterruptAsFailure: false,
        },
      );
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
  }, 120_000);
});
