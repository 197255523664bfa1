import { EventEmitter } from 'node:events';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { FreeSwitchParser } from 'esl-lite';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { FsEvent } from '../../bridge/event/event.js';
import { LOOP_GUARD_HEADER } from '../../bridge/pipeline/types.js';
import { readFixture } from '../support/fixtures.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * ESL parsing: ours against every maintained or widely used Node ESL library, each in
 * every event format it parses, on real FreeSWITCH bytes, in the same run.
 *
 * Streams: the 200 events of test/fixtures/esl/a-plain.raw (`event plain ALL`) and of
 * a-json.raw (`event json ALL`, the same scenario captured again), each repeated to
 * about 16 MB and cut into 64 KB reads, as a busy socket delivers them. The count of
 * events is checked. Rounds alternate between contenders; the best round of each is
 * reported (the one least disturbed by GC and the machine).
 *
 * Contenders, fed the way their own connection feeds them (nothing of their connection
 * layer runs), and what each does per event (CONTENDER_WORK says it in the notes):
 * - ours, as the bridge reads (the target row): EslFrameParser + parsePlain, which checks
 *   every header line (so no later read can fail) and records where each line is; then
 *   what the ESL client and the pipeline read of every event: name, subclass, Core-UUID,
 *   Event-Sequence (as a number and in the key), the loop-guard header, and FreeSWITCH's
 *   own bytes for the sinks (plainBytes, plainHeaderBytes). Other headers stay undecoded
 *   until a consumer asks, as in the bridge;
 * - ours, every header decoded, plain and json: the same parse, then every name, value
 *   and the body decoded into strings and touched, as the peers' objects hold them all
 *   (so that nobody can say lazy decoding hid work: this row has its own ratio against
 *   the same best peer);
 * - esl-lite 3.2.0: its exported FreeSwitchParser (an async generator over the socket)
 *   and JSON.parse of each body, which is what its client does for `text/event-json`
 *   before it delivers anything; its client only ever subscribes `event json`, and its
 *   plain body parser is not exported (it does not URL-decode values either), so json is
 *   its one format;
 * - modesl 1.2.1 and drachtio-modesl 1.3.1: their Parser class with a stand-in socket
 *   (an EventEmitter emitting 'data'), in plain and json; each builds its event object
 *   with every header decoded. Their xml path (xml2js) is not measured: the bridge never
 *   subscribes xml, no capture exists, and it is slower than their json path by
 *   construction (a full XML DOM per event).
 *
 * Correctness, for every contender in every format: the capture split (a) into two
 * reads at every offset of its first 16 KB, (b) inside every `\n\n`, (c) one byte per
 * read; events delivered and events equal to ours are counted; (d) events with a
 * repeated header (CODEC, CHANNEL_HANGUP_COMPLETE) that keep every value; (e) a header
 * value that is Latin-1, not UTF-8 (`caf%E9` in plain, the raw 0xE9 byte in json, as a
 * SIP phone's display name arrives): decoded, lost, or a throw. Ours is compared fully
 * decoded in every mode; the bridge-read mode reads its routing headers first, lazily, and
 * the run fails if any differs from the fully decoded event's.
 */

type Format = 'plain' | 'json';
type EventShape = { headers: [string, string][]; body: string | null };

interface Contender {
  library: string;
  format: Format;
  /** For ours: how much of each event is decoded. */
  mode?: OursMode;
  /** What it does per event, for the notes. */
  work: string;
  /** Feed reads, return the number of events produced (every header decoded). */
  run(chunks: Buffer[]): Promise<number>;
  /** Feed reads, return the events for comparison. */
  collect(chunks: Buffer[]): Promise<EventShape[]>;
}

/** `bridge`: what the bridge itself reads of each event; `full`: every header and the body decoded. */
type OursMode = 'bridge' | 'full';

const label = (c: Contender) => (c.mode === 'bridge' ? `${c.library} as the bridge reads, ${c.format}` : c.mode === 'full' ? `${c.library} every header decoded, ${c.format}` : `${c.library}, ${c.format}`);
const require = createRequire(import.meta.url);
const OURS = 'fs-event-bridge';

const BRIDGE_WORK =
  'EslFrameParser + parsePlain (every line checked, its offsets kept), then name, subclass, Core-UUID, Event-Sequence (number and key), the loop-guard header, and the plain bytes for the sinks; other headers left undecoded';
const FULL_WORK = (format: Format) =>
  `EslFrameParser + ${format === 'plain' ? 'parsePlain' : 'parseJson'}, then every header name and value and the body decoded into strings and read`;

/** The routing reads of the ESL client (trackSequence, loop guard) and the pipeline (bindings, dedup key), and the sinks' bytes. */
function bridgeReads(event: FsEvent): number {
  let touched = event.name.length + (event.subclass?.length ?? 0) + (event.coreUuid?.length ?? 0) + (event.sequence ?? 0);
  touched += event.key?.length ?? 0;
  if (event.get(LOOP_GUARD_HEADER) === undefined) touched++;
  touched += (event.plainBytes?.length ?? 0) + (event.plainHeaderBytes?.length ?? 0);
  return touched;
}

/** For the correctness checks: the lazily read routing headers must be the fully decoded event's. */
function checkRoutingReads(event: FsEvent): void {
  const lazy = [event.name, event.subclass, event.coreUuid, event.sequence, event.key, event.get(LOOP_GUARD_HEADER)];
  const decoded = new FsEvent(event.headers.map(([n, v]) => [n, v]), event.body);
  const eager = [decoded.name, decoded.subclass, decoded.coreUuid, decoded.sequence, decoded.key, decoded.get(LOOP_GUARD_HEADER)];
  if (JSON.stringify(lazy) !== JSON.stringify(eager)) throw new Error(`routing headers read lazily ${JSON.stringify(lazy)} differ from the decoded event's ${JSON.stringify(eager)}`);
}

function ours(format: Format, mode: OursMode): Contender {
  const feed = (chunks: Buffer[], onEvent: (event: FsEvent) => void) => {
    const parser = new EslFrameParser();
    for (const chunk of chunks) {
      const frames = parser.push(chunk);
      for (let i = 0; i < frames.length; i++) {
        if (isEventFrame(frames[i])) onEvent(eventFromFrame(frames[i]));
      }
    }
  };
  return {
    library: OURS,
    format,
    mode,
    work: mode === 'bridge' ? BRIDGE_WORK : FULL_WORK(format),
    async run(chunks) {
      let n = 0;
      let touched = 0;
      feed(
        chunks,
        mode === 'bridge'
          ? (event) => {
              touched += bridgeReads(event);
              n++;
            }
          : (event) => {
              // Touch every decoded name and value, as the peers' objects hold them all.
              const headers = event.headers;
              for (let i = 0; i < headers.length; i++) touched += headers[i][0].length + headers[i][1].length;
              const body = event.body;
              if (body !== null) touched += body.length;
              if (headers.length > 0) n++;
            },
      );
      return touched > 0 ? n : 0;
    },
    async collect(chunks) {
      const out: EventShape[] = [];
      feed(chunks, (event) => {
        if (mode === 'bridge') checkRoutingReads(event);
        out.push({ headers: event.headers.map(([k, v]) => [k, v]), body: event.body });
      });
      return out;
    },
  };
}

/** A decoded JSON event object as headers: arrays become repeated headers, `_body` the body (as parseJson reads it). */
function shapeOfObject(data: Record<string, unknown>): EventShape {
  const headers: [string, string][] = [];
  const body = typeof data._body === 'string' ? data._body : null;
  for (const [name, value] of Object.entries(data)) {
    if (name === '_body' || (name === 'Content-Length' && body !== null)) continue;
    if (Array.isArray(value)) for (const v of value) headers.push([name, String(v)]);
    else headers.push([name, String(value)]);
  }
  return { headers, body };
}

const silentPino = { error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined, trace: () => undefined, fatal: () => undefined };
type EslLiteLogger = Parameters<typeof FreeSwitchParser>[1];

/** The reads as a net.Socket's async iterator hands them out: one promise per read. */
async function* socketReads(chunks: Buffer[]): AsyncGenerator<Buffer> {
  yield* chunks;
}

function eslLite(): Contender {
  /** What esl-lite's client does per frame (processRawEvent, not exported): JSON.parse the text/event-json body. */
  const feed = async (chunks: Buffer[], onEvent: (data: Record<string, unknown>) => void) => {
    for await (const raw of FreeSwitchParser(socketReads(chunks), silentPino as unknown as EslLiteLogger)) {
      if (raw instanceof Error || raw.headers.contentType !== 'text/event-json') continue;
      let data: unknown;
      try {
        data = JSON.parse(raw.body.toString());
      } catch {
        continue;
      }
      if (data !== null && typeof data === 'object' && !Array.isArray(data) && typeof (data as Record<string, unknown>)['Event-Name'] === 'string') onEvent(data as Record<string, unknown>);
    }
  };
  return {
    library: 'esl-lite 3.2.0',
    format: 'json',
    work: 'FreeSwitchParser (frames from an async generator over the reads) + JSON.parse of each text/event-json body, every header decoded',
    async run(chunks) {
      let n = 0;
      await feed(chunks, () => n++);
      return n;
    },
    async collect(chunks) {
      const out: EventShape[] = [];
      await feed(chunks, (data) => out.push(shapeOfObject(data)));
      return out;
    },
  };
}

interface ModeslEvent {
  headers: { name: string; value: unknown }[];
  body: string;
}
type ModeslParser = new (socket: EventEmitter) => EventEmitter;

function modeslLike(library: string, module: string, format: Format): Contender {
  const Parser = require(`${module}/lib/esl/Parser.js`) as ModeslParser;
  const type = format === 'plain' ? 'text/event-plain' : 'text/event-json';
  const feed = (chunks: Buffer[], onEvent: (event: ModeslEvent) => void) => {
    const socket = new EventEmitter();
    const parser = new Parser(socket);
    parser.on('error', () => undefined);
    parser.on('esl::event', (event: ModeslEvent, headers: Record<string, unknown>) => {
      if (headers['Content-Type'] === type) onEvent(event);
    });
    for (const chunk of chunks) {
      try {
        socket.emit('data', chunk);
      } catch {
        // A throw inside the library's data handler would kill a real connection; here it just costs the read.
      }
    }
  };
  return {
    library,
    format,
    work: `its Parser on a stand-in socket, ${format === 'plain' ? 'its plain header parser (values URL-decoded)' : 'JSON.parse of the body'}, an event object with every header decoded`,
    async run(chunks) {
      let n = 0;
      feed(chunks, (event) => {
        if (event.headers.length > 0) n++;
      });
      return n;
    },
    async collect(chunks) {
      const out: EventShape[] = [];
      feed(chunks, (event) =>
        out.push({
          headers: event.headers.filter((h) => h.name !== 'Content-Length').map((h) => [h.name, String(h.value)]),
          body: event.body === '' ? null : event.body,
        }),
      );
      return out;
    },
  };
}

function contenders(): Contender[] {
  return [
    ours('plain', 'bridge'),
    ours('plain', 'full'),
    ours('json', 'full'),
    eslLite(),
    modeslLike('modesl 1.2.1', 'modesl', 'json'),
    modeslLike('modesl 1.2.1', 'modesl', 'plain'),
    modeslLike('drachtio-modesl 1.3.1', 'drachtio-modesl', 'json'),
    modeslLike('drachtio-modesl 1.3.1', 'drachtio-modesl', 'plain'),
  ];
}

const CAPTURE: Record<Format, string> = { plain: 'a-plain.raw', json: 'a-json.raw' };

/** The event frames of a capture (after its auth and command replies). */
function captureEvents(format: Format): Buffer {
  const capture = readFixture('esl', CAPTURE[format]);
  return capture.subarray(capture.indexOf('Content-Length:'));
}

function eventStream(format: Format, targetBytes: number): { chunks: Buffer[]; events: number; bytesPerEvent: number } {
  const events = captureEvents(format);
  const perCopy = new EslFrameParser().push(events).filter(isEventFrame).length;
  const copies = Math.max(1, Math.ceil(targetBytes / events.length));
  const stream = Buffer.concat(Array.from({ length: copies }, () => events));
  const chunks: Buffer[] = [];
  for (let at = 0; at < stream.length; at += 65536) chunks.push(stream.subarray(at, at + 65536));
  return { chunks, events: perCopy * copies, bytesPerEvent: Math.round(events.length / perCopy) };
}

async function eventsPerSecond(contender: Contender, chunks: Buffer[], expected: number): Promise<number> {
  const started = process.hrtime.bigint();
  const n = await contender.run(chunks);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (n !== expected) throw new Error(`${label(contender)} produced ${n} events, expected ${expected}`);
  return n / seconds;
}

export interface SplitFindings {
  /** Two reads at every offset of the first 16 KB (4 KB in quick mode) of the capture. */
  everyOffset: { runs: number; runsWithAllEvents: number; runsIdentical: number };
  /** The capture cut in the middle of every `\n\n`. */
  insideBlankLines: { expected: number; delivered: number; identical: number };
  /** The capture one byte per read. */
  byteByByte: { expected: number; delivered: number; identical: number };
  /** The capture in one read: events whose headers and body equal ours. */
  wholeIdentical: number;
  /** Events of the capture with a header name more than once (a duplicate, or a JSON array), and how many of them keep every value. */
  repeatedHeaders: { events: number; keptAll: number };
  /** What came out of a Latin-1 (not UTF-8) header value, and whether the next event still arrived. */
  latin1: string;
}

function same(a: EventShape[], b: EventShape[]): number {
  let n = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i].body === b[i].body && JSON.stringify(a[i].headers) === JSON.stringify(b[i].headers)) n++;
  }
  return n;
}

function hasRepeatedHeader(event: EventShape): boolean {
  const names = event.headers.map(([n]) => n);
  return new Set(names).size !== names.length;
}

/** One event frame with `Caller-Caller-ID-Name` = "caf" + the Latin-1 byte for é, then an ordinary event. */
function latin1Frames(format: Format): Buffer {
  const frame = (body: Buffer) => Buffer.concat([Buffer.from(`Content-Length: ${body.length}\nContent-Type: text/event-${format}\n\n`), body]);
  const value = format === 'plain' ? Buffer.from('caf%E9') : Buffer.from([0x63, 0x61, 0x66, 0xe9]);
  const first =
    format === 'plain'
      ? Buffer.concat([Buffer.from('Event-Name: CUSTOM\nEvent-Subclass: latin1%3A%3Atest\nCaller-Caller-ID-Name: '), value, Buffer.from('\n\n')])
      : Buffer.concat([Buffer.from('{"Event-Name":"CUSTOM","Event-Subclass":"latin1::test","Caller-Caller-ID-Name":"'), value, Buffer.from('"}')]);
  const second = format === 'plain' ? Buffer.from('Event-Name: HEARTBEAT\n\n') : Buffer.from('{"Event-Name":"HEARTBEAT"}');
  return Buffer.concat([frame(first), frame(second)]);
}

async function latin1Outcome(contender: Contender): Promise<string> {
  let events: EventShape[];
  try {
    events = await contender.collect([latin1Frames(contender.format)]);
  } catch (error) {
    return `threw ${(error as Error).name}`;
  }
  const value = events[0]?.headers.find(([n]) => n === 'Caller-Caller-ID-Name')?.[1];
  const next = events.some((e) => e.headers.some(([n, v]) => n === 'Event-Name' && v === 'HEARTBEAT'));
  const first = value === undefined ? 'event lost' : `decoded as ${JSON.stringify(value)}`;
  return `${first}${next ? '' : ', next event lost'}`;
}

export async function splitFindings(contender: Contender, reference: Contender, offsetBytes = 16 * 1024): Promise<SplitFindings> {
  const capture = captureEvents(contender.format);
  const small = capture.subarray(0, offsetBytes);
  const smallExpected = await reference.collect([small]);
  let runsWithAllEvents = 0;
  let runsIdentical = 0;
  for (let cut = 1; cut < small.length; cut++) {
    const got = await contender.collect([small.subarray(0, cut), small.subarray(cut)]);
    if (got.length === smallExpected.length) runsWithAllEvents++;
    if (got.length === smallExpected.length && same(got, smallExpected) === got.length) runsIdentical++;
  }
  const expected = await reference.collect([capture]);
  const cuts: Buffer[] = [];
  let last = 0;
  for (let i = capture.indexOf('\n\n'); i >= 0; i = capture.indexOf('\n\n', i + 2)) {
    cuts.push(capture.subarray(last, i + 1));
    last = i + 1;
  }
  cuts.push(capture.subarray(last));
  const inside = await contender.collect(cuts);
  const bytes: Buffer[] = [];
  for (let i = 0; i < capture.length; i++) bytes.push(capture.subarray(i, i + 1));
  const bytewise = await contender.collect(bytes);
  const whole = await contender.collect([capture]);
  let repeated = 0;
  let keptAll = 0;
  expected.forEach((event, i) => {
    if (!hasRepeatedHeader(event)) return;
    repeated++;
    if (whole[i] !== undefined && same([whole[i]], [event]) === 1) keptAll++;
  });
  return {
    everyOffset: { runs: small.length - 1, runsWithAllEvents, runsIdentical },
    insideBlankLines: { expected: expected.length, delivered: inside.length, identical: same(inside, expected) },
    byteByByte: { expected: expected.length, delivered: bytewise.length, identical: same(bytewise, expected) },
    wholeIdentical: same(whole, expected),
    repeatedHeaders: { events: repeated, keptAll },
    latin1: await latin1Outcome(contender),
  };
}

function describe(f: SplitFindings): string {
  const o = f.everyOffset;
  return (
    `every offset ${o.runsIdentical}/${o.runs} identical (${o.runsWithAllEvents} with all events); ` +
    `split inside \\n\\n ${f.insideBlankLines.delivered}/${f.insideBlankLines.expected} delivered, ${f.insideBlankLines.identical} identical; ` +
    `byte by byte ${f.byteByByte.delivered}/${f.byteByByte.expected} delivered, ${f.byteByByte.identical} identical; ` +
    `one read ${f.wholeIdentical} identical; events with a header name more than once (a duplicate, or a JSON array) kept whole ${f.repeatedHeaders.keptAll}/${f.repeatedHeaders.events}; Latin-1 value ${f.latin1}`
  );
}

export const eslParse: BenchCase = async ({ quick }) => {
  const target = quick ? 2 * 1024 * 1024 : 16 * 1024 * 1024;
  const streams = { plain: eventStream('plain', target), json: eventStream('json', target) };
  const all = contenders();
  const best = new Map<Contender, number>();
  const rounds = quick ? 3 : 7;
  // Warm-up so every contender runs optimised code.
  for (const c of all) {
    const few = streams[c.format].chunks.slice(0, 32);
    await eventsPerSecond(c, few, await c.run(few));
  }
  for (let round = 0; round < rounds; round++) {
    for (const c of all) {
      const stream = streams[c.format];
      best.set(c, Math.max(best.get(c) ?? 0, await eventsPerSecond(c, stream.chunks, stream.events)));
    }
  }
  const rate = (c: Contender) => Math.round(best.get(c)!);
  const byRate = (a: Contender, b: Contender) => rate(b) - rate(a);
  const bridgeRead = all.find((c) => c.mode === 'bridge')!;
  const fullyDecoded = all.filter((c) => c.mode === 'full').sort(byRate);
  const peers = all.filter((c) => c.library !== OURS).sort(byRate);
  // Every contender's events are compared with ours fully decoded, in the same format.
  const reference = new Map(fullyDecoded.map((c) => [c.format, c]));
  const findings = new Map<Contender, SplitFindings>();
  for (const c of all) findings.set(c, await splitFindings(c, reference.get(c.format)!, quick ? 4096 : 16 * 1024));
  const setup =
    `plain: a-plain.raw, json: a-json.raw (the same 200-event scenario, ${streams.plain.bytesPerEvent} and ${streams.json.bytesPerEvent} bytes per event), ` +
    `each repeated to ${Math.round(target / 1048576)} MB (${streams.plain.events} and ${streams.json.events} events) in 64 KB reads; best of ${rounds} rounds, node ${process.version}`;
  const allRates = all.map((c) => `${label(c)} ${rate(c).toLocaleString('en-US')}`).join(', ');
  const row = (value: Contender, baseline: Contender, caseName: string): BenchResult => {
    const ratio = rate(value) / rate(baseline);
    return {
      case: caseName,
      value: rate(value),
      unit: 'events/s',
      baseline: label(baseline),
      baseline_value: rate(baseline),
      ratio: Math.round(ratio * 100) / 100,
      target: 150_000,
      met: rate(value) >= 150_000 && ratio >= 3,
      notes:
        `higher is better; target >= 150000 events/s on one core and >= 3x the baseline. ${setup}. Per event, ${label(value)}: ${value.work}; ${label(baseline)}: ${baseline.work}. ` +
        `All rates (events/s): ${allRates}. ` +
        `Correctness (events compared fully decoded), ${label(value)}: ${describe(findings.get(value)!)}. ${label(baseline)}: ${describe(findings.get(baseline)!)}`,
    };
  };
  const bestPeer = peers[0];
  return [
    row(bridgeRead, bestPeer, 'ESL parse, ours as the bridge reads (plain: every line validated, routing headers decoded, the rest on demand) vs the best peer in its best format'),
    ...fullyDecoded.map((c) => row(c, bestPeer, `ESL parse, ours with every header and the body decoded (${c.format}) vs the best peer in its best format`)),
    ...peers.slice(1).map((peer) => row(bridgeRead, peer, `ESL parse, ours as the bridge reads (plain) vs ${label(peer)}`)),
  ];
};

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const quick = process.argv.includes('--quick');
  eslParse({ quick }).then((rows) => process.stdout.write(JSON.stringify(rows, null, 2) + '\n'));
}
