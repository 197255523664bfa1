import { EventEmitter } from 'node:events';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { readFixture } from '../support/fixtures.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * ESL parsing: our EslFrameParser + eventFromFrame (parsePlain) against the parsers
 * of modesl 1.2.1 and drachtio-modesl, on the same bytes in the same run.
 *
 * Setup: the event frames of test/fixtures/esl/a-plain.raw (200 real events, 3.5 KB
 * on average: channel events, PRESENCE_IN, sofia::*, multicast::event) repeated to
 * about 16 MB and cut into 64 KB reads, as a busy socket delivers them. Each
 * contender turns reads into events with every header decoded; the count of events
 * is checked so nobody wins by skipping work. Rounds alternate between contenders;
 * the best round of each is reported (least disturbed by GC and the machine).
 *
 * Fairness: the libraries are fed through their own Parser class with a stand-in
 * socket (an EventEmitter that emits 'data'), which is exactly how their Connection
 * feeds it; nothing of their connection layer runs. Their parser also builds an
 * Event object per frame, which is part of what a user of the library pays.
 *
 * Correctness: every contender gets the capture split (a) into two reads at every
 * offset of the first 16 KB of b-multicast-event.raw, (b) inside every `\n\n` of
 * a-plain.raw, (c) one byte per read; events delivered and events whose headers and
 * body equal ours are counted.
 */

type Contender = {
  name: string;
  /** Feed reads, return the number of events produced. */
  run(chunks: Buffer[]): number;
  /** Feed reads, return the events as [headers, body] for comparison. */
  collect(chunks: Buffer[]): EventShape[];
};
type EventShape = { headers: [string, string][]; body: string | null };

const require = createRequire(import.meta.url);

function ours(): Contender {
  const shapes = (chunks: Buffer[]) => {
    const parser = new EslFrameParser();
    const out: EventShape[] = [];
    for (const chunk of chunks) {
      for (const frame of parser.push(chunk)) {
        if (!isEventFrame(frame)) continue;
        const e = eventFromFrame(frame);
        out.push({ headers: e.headers.map(([n, v]) => [n, v]), body: e.body });
      }
    }
    return out;
  };
  return {
    name: 'fs-event-bridge EslFrameParser + parsePlain',
    run(chunks) {
      const parser = new EslFrameParser();
      let n = 0;
      for (const chunk of chunks) {
        const frames = parser.push(chunk);
        for (let i = 0; i < frames.length; i++) {
          if (isEventFrame(frames[i]) && eventFromFrame(frames[i]).headers.length > 0) n++;
        }
      }
      return n;
    },
    collect: shapes,
  };
}

interface ModeslEvent {
  headers: { name: string; value: unknown }[];
  body: string;
}
type ModeslParser = new (socket: EventEmitter) => EventEmitter;

function modeslLike(name: string, module: string): Contender {
  const Parser = require(`${module}/lib/esl/Parser.js`) as ModeslParser;
  const feed = (chunks: Buffer[], onEvent: (event: ModeslEvent, headers: Record<string, unknown>) => void) => {
    const socket = new EventEmitter();
    const parser = new Parser(socket);
    parser.on('error', () => undefined);
    parser.on('esl::event', onEvent);
    for (const chunk of chunks) {
      try {
        socket.emit('data', chunk);
      } catch {
        // A throw inside the library's data handler would kill a real connection; here it just costs the read.
      }
    }
  };
  return {
    name,
    run(chunks) {
      let n = 0;
      feed(chunks, (event, headers) => {
        const type = headers['Content-Type'];
        if ((type === 'text/event-plain' || type === 'text/event-json') && event.headers.length > 0) n++;
      });
      return n;
    },
    collect(chunks) {
      const out: EventShape[] = [];
      feed(chunks, (event, headers) => {
        const type = headers['Content-Type'];
        if (type !== 'text/event-plain' && type !== 'text/event-json') return;
        out.push({
          headers: event.headers.filter((h) => h.name !== 'Content-Length').map((h) => [h.name, String(h.value)]),
          body: event.body === '' ? null : event.body,
        });
      });
      return out;
    },
  };
}

function contenders(): Contender[] {
  return [ours(), modeslLike('modesl 1.2.1', 'modesl'), modeslLike('drachtio-modesl 1.3.1', 'drachtio-modesl')];
}

function eventStream(targetBytes: number): { chunks: Buffer[]; events: number } {
  const capture = readFixture('esl', 'a-plain.raw');
  const events = capture.subarray(capture.indexOf('Content-Length:'));
  const perCopy = new EslFrameParser().push(events).filter(isEventFrame).length;
  const copies = Math.max(1, Math.ceil(targetBytes / events.length));
  const stream = Buffer.concat(Array.from({ length: copies }, () => events));
  const chunks: Buffer[] = [];
  for (let at = 0; at < stream.length; at += 65536) chunks.push(stream.subarray(at, at + 65536));
  return { chunks, events: perCopy * copies };
}

function eventsPerSecond(contender: Contender, chunks: Buffer[], expected: number): number {
  const started = process.hrtime.bigint();
  const n = contender.run(chunks);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (n !== expected) throw new Error(`${contender.name} produced ${n} events, expected ${expected}`);
  return n / seconds;
}

export interface SplitFindings {
  /** Two reads at every offset of the first 16 KB (4 KB in quick mode) of b-multicast-event.raw. */
  everyOffset: { runs: number; runsWithAllEvents: number; runsIdentical: number };
  /** a-plain.raw cut in the middle of every `\n\n`. */
  insideBlankLines: { expected: number; delivered: number; identical: number };
  /** a-plain.raw one byte per read. */
  byteByByte: { expected: number; delivered: number; identical: number };
  /** a-plain.raw in one read: events whose headers and body equal ours. */
  wholeIdentical: number;
}

function same(a: EventShape[], b: EventShape[]): number {
  let n = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i].body === b[i].body && JSON.stringify(a[i].headers) === JSON.stringify(b[i].headers)) n++;
  }
  return n;
}

export function splitFindings(contender: Contender, reference: Contender, offsetBytes = 16 * 1024): SplitFindings {
  const small = readFixture('esl', 'b-multicast-event.raw').subarray(0, offsetBytes);
  const smallExpected = reference.collect([small]);
  let runsWithAllEvents = 0;
  let runsIdentical = 0;
  for (let cut = 1; cut < small.length; cut++) {
    const got = contender.collect([small.subarray(0, cut), small.subarray(cut)]);
    if (got.length === smallExpected.length) runsWithAllEvents++;
    if (got.length === smallExpected.length && same(got, smallExpected) === got.length) runsIdentical++;
  }
  const capture = readFixture('esl', 'a-plain.raw');
  const expected = reference.collect([capture]);
  const cuts: Buffer[] = [];
  let last = 0;
  for (let i = capture.indexOf('\n\n'); i >= 0; i = capture.indexOf('\n\n', i + 2)) {
    cuts.push(capture.subarray(last, i + 1));
    last = i + 1;
  }
  cuts.push(capture.subarray(last));
  const inside = contender.collect(cuts);
  const bytes: Buffer[] = [];
  for (let i = 0; i < capture.length; i++) bytes.push(capture.subarray(i, i + 1));
  const bytewise = contender.collect(bytes);
  return {
    everyOffset: { runs: small.length - 1, runsWithAllEvents, runsIdentical },
    insideBlankLines: { expected: expected.length, delivered: inside.length, identical: same(inside, expected) },
    byteByByte: { expected: expected.length, delivered: bytewise.length, identical: same(bytewise, expected) },
    wholeIdentical: same(contender.collect([capture]), expected),
  };
}

export const eslParse: BenchCase = async ({ quick }) => {
  const { chunks, events } = eventStream(quick ? 2 * 1024 * 1024 : 16 * 1024 * 1024);
  const all = contenders();
  const best = new Map<string, number>();
  const rounds = quick ? 3 : 7;
  // Warm-up so every contender runs optimised code.
  for (const c of all) eventsPerSecond(c, chunks.slice(0, 32), c.run(chunks.slice(0, 32)));
  for (let round = 0; round < rounds; round++) {
    for (const c of all) {
      const rate = eventsPerSecond(c, chunks, events);
      best.set(c.name, Math.max(best.get(c.name) ?? 0, rate));
    }
  }
  const [mine, ...peers] = all;
  const value = Math.round(best.get(mine.name)!);
  const findings = new Map(all.map((c) => [c.name, splitFindings(c, mine, quick ? 4096 : 16 * 1024)]));
  const setup = `${events} events (a-plain.raw x${Math.round(events / 200)}) in ${chunks.length} reads of 64 KB, best of ${rounds} rounds, node ${process.version}`;
  return peers.map((peer): BenchResult => {
    const baseline = Math.round(best.get(peer.name)!);
    const ratio = value / baseline;
    return {
      case: `ESL parse, events/s over the fixture mix (vs ${peer.name})`,
      value,
      unit: 'events/s',
      baseline: peer.name,
      baseline_value: baseline,
      ratio: Math.round(ratio * 100) / 100,
      target: 100_000,
      met: value >= 100_000 && ratio >= 5,
      notes: `higher is better; target >= 100000 ev/s and >= 5x the baseline. ${setup}. Split findings: ours ${JSON.stringify(findings.get(mine.name))}; ${peer.name} ${JSON.stringify(findings.get(peer.name))}`,
    };
  });
};

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const quick = process.argv.includes('--quick');
  eslParse({ quick }).then((rows) => process.stdout.write(JSON.stringify(rows, null, 2) + '\n'));
}
