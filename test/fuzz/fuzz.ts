/**
 * Mutation fuzzing of everything the wire hands the bridge, from real captures: the
 * multicast datagrams of test/fixtures/multicast-* (plaintext and psk), the ESL event
 * frames of test/fixtures/esl and NATS messages made from the same events. Each input
 * is mutated (bytes flipped, cut, spliced; or one of its headers, its sender, name or
 * body replaced by hostile text first, then re-encoded) and driven the whole way in
 * one process: decode, pipeline, dedup, peers, the injection path, both consumers, and
 * their timers on fake time.
 *
 * A crash is anything thrown out of an entry point that a bridge would not catch (the
 * ESL framer's ParseError and FrameTooLargeError are caught: the client reconnects), an
 * uncaught exception or unhandled rejection, a consumer throwing into the pipeline, or
 * an ESL command that could have added a header or a command on the node. Everything
 * refused on purpose is counted per cause, from the bridge's own drop and filter
 * counters, so the report also shows what each refusal path saw.
 */
import FakeTimers from '@sinonjs/fake-timers';
import { DatagramError, FrameTooLargeError, ParseError } from '../../bridge/errors.js';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { FsEvent } from '../../bridge/event/event.js';
import { serializeJson } from '../../bridge/event/json.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { decodeDatagram, encodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { NatsClient } from '../../bridge/transports/nats/connection.js';
import { ORIGIN_NODE_HEADER } from '../../bridge/transports/nats/stream.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';
import { NatsSubscriber } from '../../bridge/transports/nats/subscriber.js';
import { datagramFixtures, eslFrames } from '../support/fixtures.js';
import { eslFrame, wellFormedProblem, wireNode } from '../support/wire-node.js';
import { seededRandom } from '../support/seeded-random.js';

export type InputKind = 'datagram' | 'datagram-psk' | 'esl' | 'nats';
const KINDS: readonly InputKind[] = ['datagram', 'datagram-psk', 'esl', 'nats'];

export interface FuzzOptions {
  count: number;
  seed: number;
}

export interface FuzzReport {
  seed: number;
  inputs: Record<InputKind, number>;
  crashes: { kind: InputKind; error: string; input: string }[];
  malformedCommands: string[];
  /** `component:cause` of fsb_drops_total, plus the ESL framing errors the client would reconnect on. */
  rejects: Record<string, number>;
  /** `component:cause` of fsb_filtered_total. */
  filtered: Record<string, number>;
  /** ESL commands the node received: sendevent (injections, lamps) and api (db rows). */
  commands: { sendevent: number; api: number };
}

/** The psk of test/fixtures/multicast-psk (test/fixtures/reference/conf/event_multicast-psk.conf.xml). */
const FIXTURE_PSK = Buffer.from('fixture-psk-0123456789');
const NODE = { name: 'fs-b', hostname: 'node-b', ipv4: '10.99.0.2' };
/** A fresh node every so many inputs, with other consumer modes, so state from one mode never hides another. */
const INPUTS_PER_NODE = 250;


const HOSTILE: readonly string[] = [
  '\ud800',
  'a\udc00b',
  '\0',
  'x\r\nEvent-Name: SHUTDOWN',
  '\n\nsendevent CUSTOM',
  '%',
  '%ZZ%0',
  ':',
  'a: b',
  '',
  ' ',
  '\u2028\u2029',
  '\u202e',
  '😀'.repeat(64),
  'x'.repeat(300),
  'y'.repeat(65_536),
  '-1',
  '18446744073709551616',
  '1e400',
  'NaN',
  '9999999999999999',
  'Registered(UDP)',
  'sofia::register',
  'multicast::event',
  'sip:1000@127.0.0.1;transport=udp',
];

const NAMES: readonly [string, string | undefined][] = [
  ['CUSTOM', 'sofia::register'],
  ['CUSTOM', 'sofia::unregister'],
  ['CUSTOM', 'sofia::expire'],
  ['CUSTOM', 'multicast::event'],
  ['CUSTOM', 'multicast::peerdown'],
  ['PRESENCE_IN', undefined],
  ['HEARTBEAT', undefined],
  ['CHANNEL_HANGUP_COMPLETE', undefined],
];

/** Headers whose forgery matters most: identity, order, time, and what the consumers read. */
const KEY_HEADERS = ['Multicast-Sender', 'Core-UUID', 'Event-Sequence', 'Event-Date-Timestamp', 'FreeSWITCH-Hostname', 'FreeSWITCH-Switchname', 'FreeSWITCH-IPv4', 'from-user', 'from-host', 'status', 'expires', 'contact', 'Unique-ID', 'Answer-State', 'Channel-State', 'presence-call-direction', 'FSB-Multicast-Seq', 'FSB-Injected-By'];

class Mutator {
  constructor(private readonly next: () => number) {}

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** One to three header-level changes: hostile values, forged identity, another event name, a hostile body. */
  event(original: FsEvent): FsEvent {
    const event = original.clone();
    for (let n = 1 + this.int(3); n > 0; n--) {
      const roll = this.int(6);
      if (roll === 0 && event.headers.length > 0) event.headers[this.int(event.headers.length)][1] = this.pick(HOSTILE);
      else if (roll === 1) event.set(this.pick(KEY_HEADERS), this.pick(HOSTILE));
      else if (roll === 2) event.add(this.pick(HOSTILE) || 'X-Empty', this.pick(HOSTILE));
      else if (roll === 3) {
        const [name, subclass] = this.pick(NAMES);
        event.set('Event-Name', name);
        if (subclass === undefined) event.delete('Event-Subclass');
        else event.set('Event-Subclass', subclass);
      } else if (roll === 4) event.body = this.pick(HOSTILE);
      else event.set('Event-Date-Timestamp', String(this.pick([0, -1, 4_102_444_800_000_000, Date.now() * 1000 + 86_400_000_000, Date.now() * 1000 - 86_400_000_000])));
    }
    // Mostly a new event to the dedup cache (so it reaches the consumers), sometimes a copy of one it has seen.
    if (this.int(4) !== 0) event.set('Event-Sequence', String(1_000_000 + this.int(1_000_000_000)));
    return event;
  }

  /** One to four byte-level changes. */
  bytes(input: Buffer, other: Buffer): Buffer {
    let out = Buffer.from(input);
    for (let n = 1 + this.int(4); n > 0; n--) {
      const at = out.length === 0 ? 0 : this.int(out.length);
      switch (this.int(7)) {
        case 0:
          if (out.length > 0) out[at] ^= 1 << this.int(8);
          break;
        case 1:
          if (out.length > 0) out[at] = this.pick([0x00, 0x0a, 0x0d, 0x20, 0x25, 0x3a, 0x7f, 0x80, 0xc0, 0xed, 0xff]);
          break;
        case 2:
          out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + this.int(16))]);
          break;
        case 3: {
          const from = this.int(out.length + 1);
          out = Buffer.concat([out.subarray(0, at), out.subarray(from, from + 1 + this.int(64)), out.subarray(at)]);
          break;
        }
        case 4:
          // A lone surrogate as raw (WTF-8) bytes, or an over-long encoding.
          out = Buffer.concat([out.subarray(0, at), Buffer.from(this.pick([[0xed, 0xa0, 0x80], [0xc0, 0x80], [0xf4, 0x90, 0x80, 0x80]])), out.subarray(at)]);
          break;
        case 5:
          out = out.subarray(0, at);
          break;
        default: {
          const cut = this.int(other.length + 1);
          out = Buffer.concat([out.subarray(0, at), other.subarray(cut)]);
        }
      }
    }
    return out;
  }
}

interface Corpus {
  datagrams: { bin: Buffer; event: FsEvent; sender: string }[];
  pskDatagrams: { bin: Buffer; event: FsEvent; sender: string }[];
  events: FsEvent[];
}

function loadCorpus(): Corpus {
  const decoded = (folder: string, psk: Buffer | null) =>
    datagramFixtures(folder).map(({ bin }) => {
      const event = decodeDatagram(bin, psk).event;
      return { bin, event, sender: event.get('Multicast-Sender') ?? 'fs-a' };
    });
  const events = ['a-plain.raw', 'a-json.raw', 'b-multicast-event.raw'].flatMap((file) => eslFrames(file).filter(isEventFrame).map(eventFromFrame));
  return {
    datagrams: [...decoded('multicast-plain', null), ...decoded('multicast-plain-presence-on-register', null)],
    pskDatagrams: decoded('multicast-psk', FIXTURE_PSK),
    events,
  };
}

function label(values: { labels: Record<string, string | number>; value: number }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) {
    const key = `${v.labels.component}:${v.labels.cause}`;
    out[key] = (out[key] ?? 0) + v.value;
  }
  return out;
}

function add(into: Record<string, number>, from: Record<string, number>): void {
  for (const [key, n] of Object.entries(from)) into[key] = (into[key] ?? 0) + n;
}

/** The mutated event as a datagram; one too large to send (the sender refuses it) leaves the sample as it was. */
function encodeOrOriginal(event: FsEvent, sample: { bin: Buffer; sender: string }, psk: Buffer | null): Buffer {
  try {
    return encodeDatagram(event, sample.sender, psk);
  } catch (err) {
    if (err instanceof DatagramError && err.reason === 'too_large') return sample.bin;
    throw err;
  }
}

/** A NATS message the subscriber's handler accepts (a JsMsg as far as it reads one). */
function natsMessage(subject: string, data: Buffer, origin: string | undefined) {
  return {
    subject,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    headers: origin === undefined ? undefined : { get: (name: string) => (name === ORIGIN_NODE_HEADER ? origin : '') },
    ack: () => undefined,
    term: () => undefined,
  };
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const corpus = loadCorpus();
  const mutate = new Mutator(seededRandom(options.seed));
  const report: FuzzReport = { seed: options.seed, inputs: { datagram: 0, 'datagram-psk': 0, esl: 0, nats: 0 }, crashes: [], malformedCommands: [], rejects: {}, filtered: {}, commands: { sendevent: 0, api: 0 } };
  const crash = (kind: InputKind, err: unknown, input: Buffer | string) =>
    report.crashes.push({ kind, error: err instanceof Error ? (err.stack ?? err.message).split('\n').slice(0, 4).join(' | ') : String(err), input: Buffer.from(input).subarray(0, 512).toString('base64') });
  let current: InputKind = 'datagram';
  const onAsyncFailure = (err: unknown) => crash(current, err, 'asynchronous');
  process.on('uncaughtException', onAsyncFailure);
  process.on('unhandledRejection', onAsyncFailure);
  const clock = FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'], now: Date.now() });
  try {
    for (let done = 0; done < options.count; ) {
      const batch = Math.min(INPUTS_PER_NODE, options.count - done);
      const node = await wireNode(NODE, { sink: mutate.pick(['sqlite', 'esl'] as const), locationParity: mutate.int(2) === 0, blfParity: mutate.int(2) === 0, psk: FIXTURE_PSK });
      const subjects = new SubjectMapper(node.config.nats.subjectPrefix, node.config.node.cluster);
      const subscriber = new NatsSubscriber(node.config.nats, { client: new NatsClient(node.config.nats, { logger: silentLogger() }), node: node.config.node, metrics: node.metrics, logger: silentLogger() });
      // The subscriber's own message handler, without a server: it is what decodes a message and decides its origin.
      const subscriberInternals = subscriber as unknown as { emit: typeof node.emit; handle: (msg: ReturnType<typeof natsMessage>) => void };
      subscriberInternals.emit = node.emit;
      let parser = new EslFrameParser({ maxFrameBytes: node.config.esl.maxFrameBytes });
      for (let i = 0; i < batch; i++, done++) {
        const kind = mutate.pick(KINDS);
        current = kind;
        report.inputs[kind]++;
        let input: Buffer = Buffer.alloc(0);
        try {
          if (kind === 'datagram' || kind === 'datagram-psk') {
            const psk = kind === 'datagram-psk' ? FIXTURE_PSK : null;
            const pool = psk ? corpus.pskDatagrams : corpus.datagrams;
            const sample = mutate.pick(pool);
            const roll = mutate.int(3);
            input = roll === 0 ? sample.bin : encodeOrOriginal(mutate.event(sample.event), sample, psk);
            if (roll !== 1) input = mutate.bytes(input, mutate.pick(pool).bin);
            (psk ? node.pskSource : node.source).process(input);
          } else if (kind === 'esl') {
            const event = mutate.int(3) === 0 ? mutate.pick(corpus.events) : mutate.event(mutate.pick(corpus.events));
            input = eslFrame(event, mutate.int(2) === 0 ? 'plain' : 'json');
            if (mutate.int(2) === 0) input = mutate.bytes(input, eslFrame(mutate.pick(corpus.events), 'plain'));
            const chunk = 1 + mutate.int(4096);
            for (let at = 0; at < input.length; at += chunk) {
              let frames;
              try {
                frames = parser.push(input.subarray(at, at + chunk));
              } catch (err) {
                if (!(err instanceof ParseError || err instanceof FrameTooLargeError)) throw err;
                // What the ESL client does on a broken stream: count it and start over on a new connection.
                report.rejects[`esl:${err.code}`] = (report.rejects[`esl:${err.code}`] ?? 0) + 1;
                parser = new EslFrameParser({ maxFrameBytes: node.config.esl.maxFrameBytes });
                break;
              }
              for (const frame of frames) {
                if (!isEventFrame(frame)) continue;
                let parsed: FsEvent;
                try {
                  parsed = eventFromFrame(frame);
                } catch (err) {
                  if (!(err instanceof ParseError)) throw err;
                  report.rejects['esl:FSB_ERR_PARSE'] = (report.rejects['esl:FSB_ERR_PARSE'] ?? 0) + 1;
                  continue;
                }
                node.bridge.pipeline.local(parsed, Date.now());
              }
            }
          } else {
            const original = mutate.pick(corpus.events);
            const event = mutate.int(3) === 0 ? original : mutate.event(original);
            const sender = mutate.int(4) === 0 ? mutate.pick(HOSTILE) : (event.get('FreeSWITCH-Switchname') ?? 'fs-a');
            let subject = subjects.subject(sender, event.name, event.subclass);
            if (mutate.int(4) === 0) subject = mutate.bytes(Buffer.from(subject), Buffer.from(subjects.base)).toString('latin1');
            input = Buffer.from(serializeJson(event));
            if (mutate.int(2) === 0) input = mutate.bytes(input, Buffer.from(serializeJson(mutate.pick(corpus.events))));
            const origin = mutate.int(3) === 0 ? undefined : mutate.int(4) === 0 ? mutate.pick(HOSTILE) : sender;
            subscriberInternals.handle(natsMessage(subject, input, origin));
          }
        } catch (err) {
          crash(kind, err, input);
        }
        // Time passes now and then, sometimes a lot, so every timer runs on this input's state.
        const roll = mutate.int(20);
        if (roll === 0) await clock.tickAsync(mutate.pick([5, 1_100, 3_100]));
        else if (roll === 1) {
          clock.setSystemTime(Date.now() + mutate.pick([61_000, 700_000]));
          await clock.tickAsync(1);
        } else if (roll === 2) await clock.tickAsync(0);
      }
      // Every sweep, purge and forget timer gets its turn after every expiry and window has passed.
      await clock.tickAsync(3_100);
      clock.setSystemTime(Date.now() + 700_000);
      await clock.runToLastAsync();
      await node.stop();
      await clock.runToLastAsync();
      for (const written of node.written) {
        const problem = wellFormedProblem(written);
        if (problem !== undefined) report.malformedCommands.push(`${problem}: ${JSON.stringify(written.text.slice(0, 200))}`);
        report.commands[written.event === null ? 'api' : 'sendevent']++;
      }
      add(report.rejects, label((await node.metrics.drops.get()).values));
      add(report.filtered, label((await node.metrics.filtered.get()).values));
    }
  } finally {
    clock.uninstall();
    process.off('uncaughtException', onAsyncFailure);
    process.off('unhandledRejection', onAsyncFailure);
  }
  // A consumer that throws is a bug whatever the input: the pipeline only counts it.
  const consumerErrors = report.rejects['pipeline:consumer_error'] ?? 0;
  if (consumerErrors > 0) report.crashes.push({ kind: 'nats', error: `${consumerErrors} consumer errors caught by the pipeline`, input: '' });
  return report;
}

export function formatReport(report: FuzzReport): string {
  const total = Object.values(report.inputs).reduce((a, b) => a + b, 0);
  const lines = [
    `fuzz: ${total} inputs, seed ${report.seed} (${KINDS.map((k) => `${k} ${report.inputs[k]}`).join(', ')})`,
    `crashes: ${report.crashes.length}`,
    ...report.crashes.slice(0, 20).map((c) => `  ${c.kind}: ${c.error}\n    input (base64, first 512 bytes): ${c.input}`),
    `malformed ESL commands: ${report.malformedCommands.length}`,
    ...report.malformedCommands.slice(0, 20).map((m) => `  ${m}`),
    `ESL commands written: ${report.commands.sendevent} sendevent, ${report.commands.api} api`,
    'rejects per cause:',
    ...Object.entries(report.rejects)
      .sort((a, b) => b[1] - a[1])
      .map(([cause, n]) => `  ${cause.padEnd(48)} ${n}`),
    'filtered per cause (by design):',
    ...Object.entries(report.filtered)
      .sort((a, b) => b[1] - a[1])
      .map(([cause, n]) => `  ${cause.padEnd(48)} ${n}`),
  ];
  return lines.join('\n') + '\n';
}
