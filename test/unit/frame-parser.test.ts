import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { EslFrameParser, type EslFrame } from '../../bridge/esl/frame-parser.js';
import { readFixture } from '../support/fixtures.js';

function summary(frames: EslFrame[]): string[] {
  return frames.map((f) => JSON.stringify(f.headers) + '|' + (f.body?.toString('latin1') ?? '<none>'));
}

function parseInChunks(data: Buffer, cuts: number[]): EslFrame[] {
  const parser = new EslFrameParser();
  const out: EslFrame[] = [];
  let last = 0;
  for (const cut of [...cuts, data.length]) {
    out.push(...parser.push(data.subarray(last, cut)));
    last = cut;
  }
  expect(parser.buffered).toBe(0);
  return out;
}

const STREAMS = ['a-plain.raw', 'a-json.raw', 'b-multicast-event.raw'];

describe('ESL frame parser', () => {
  it.each(STREAMS)('frames %s the same whether read whole or byte by byte', (name) => {
    const data = readFixture('esl', name);
    const whole = new EslFrameParser().push(data);
    expect(whole.length).toBeGreaterThan(30);
    const parser = new EslFrameParser();
    const bytewise: EslFrame[] = [];
    for (let i = 0; i < data.length; i++) bytewise.push(...parser.push(data.subarray(i, i + 1)));
    expect(summary(bytewise)).toEqual(summary(whole));
  });

  it('survives a split at every offset of the first frames, including inside each \\n\\n', () => {
    const data = readFixture('esl', 'b-multicast-event.raw').subarray(0, 8000);
    const whole = new EslFrameParser().push(data);
    // Cut the prefix that holds complete frames only, so every split must reproduce them.
    const complete = summary(whole);
    for (let cut = 1; cut < data.length; cut++) {
      const parser = new EslFrameParser();
      const frames = [...parser.push(data.subarray(0, cut)), ...parser.push(data.subarray(cut))];
      expect(summary(frames)).toEqual(complete);
    }
  });

  it('splits inside the blank line that ends every header block of a capture', () => {
    const data = readFixture('esl', 'a-plain.raw');
    const expected = summary(new EslFrameParser().push(data));
    const cuts: number[] = [];
    for (let i = data.indexOf('\n\n'); i >= 0; i = data.indexOf('\n\n', i + 2)) cuts.push(i + 1);
    expect(cuts.length).toBeGreaterThan(400);
    expect(summary(parseInChunks(data, cuts))).toEqual(expected);
  });

  it('frames → bytes → random chunks → the same frames (property)', () => {
    const data = readFixture('esl', 'a-json.raw');
    const expected = summary(new EslFrameParser().push(data));
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: data.length - 1 }), { maxLength: 300 }), (cuts) => {
        expect(summary(parseInChunks(data, cuts.sort((a, b) => a - b)))).toEqual(expected);
      }),
      { numRuns: 60 },
    );
  });

  it('copies only the header block that straddles two reads, not the read behind it', () => {
    const frame = Buffer.from('Content-Length: 5\nContent-Type: text/event-plain\n\nA: 1\n');
    for (let cut = 1; cut < frame.indexOf('\n\n') + 2; cut++) {
      // Not from Buffer's shared pool, so sharing its memory means being a view on it.
      const second = Buffer.alloc(frame.length - cut + frame.length);
      Buffer.concat([frame.subarray(cut), frame]).copy(second);
      const parser = new EslFrameParser();
      expect(parser.push(frame.subarray(0, cut))).toEqual([]);
      const frames = parser.push(second);
      expect(frames.map((f) => f.body!.toString())).toEqual(['A: 1\n', 'A: 1\n']);
      // Both bodies lie inside the second read: they are views on it, not copies.
      for (const f of frames) expect(f.body!.buffer).toBe(second.buffer);
      expect(parser.buffered).toBe(0);
    }
  });

  it('generated frames with stray blank lines, header-only frames and bodies, at random cuts (property)', () => {
    const value = fc.string({ unit: 'binary-ascii', maxLength: 12 }).map((v) => v.replace(/\n/g, ' ').replace(/^ +/, ''));
    const frame = fc.oneof(
      fc.record({ reply: value }).map(({ reply }) => `Content-Type: command/reply\nReply-Text: +OK${reply}\n\n`),
      fc.string({ unit: 'binary', maxLength: 40 }).map((body) => {
        const bytes = Buffer.from(body, 'utf8');
        return Buffer.concat([Buffer.from(`Content-Length: ${bytes.length}\nContent-Type: text/event-plain\n\n`), bytes]).toString('latin1');
      }),
      fc.constantFrom('\n', '\n\n'),
    );
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, rawCuts) => {
        const data = Buffer.from(frames.join(''), 'latin1');
        const expected = summary(new EslFrameParser().push(data));
        const cuts = [...new Set(rawCuts.map((c) => (data.length > 1 ? 1 + (c % (data.length - 1)) : 0)).filter((c) => c > 0))].sort((a, b) => a - b);
        expect(summary(parseInChunks(data, cuts))).toEqual(expected);
        const bytewise = new EslFrameParser();
        const one: EslFrame[] = [];
        for (let i = 0; i < data.length; i++) one.push(...bytewise.push(data.subarray(i, i + 1)));
        expect(summary(one)).toEqual(expected);
        expect(expected.length).toBe(frames.filter((f) => !/^\n+$/.test(f)).length);
      }),
      { numRuns: 300 },
    );
  });

  it('costs time in proportion to the reads, not their square: a 600 KB body and a 60 KB header block, byte by byte', () => {
    // Dropping each consumed read by its own Array shift (which moves the whole list once it outgrows V8's in-place trim) made this minutes.
    const body = Buffer.alloc(600_000, 'a');
    const frame = Buffer.concat([Buffer.from(`Content-Length: ${body.length}\nContent-Type: text/event-plain\n\n`), body]);
    const headerBlock = Buffer.from(`Content-Type: command/reply\nReply-Text: +OK ${'r'.repeat(60_000)}\n\n`);
    const started = performance.now();
    const parser = new EslFrameParser();
    const frames: EslFrame[] = [];
    for (let at = 0; at < frame.length; at++) frames.push(...parser.push(frame.subarray(at, at + 1)));
    for (let at = 0; at < headerBlock.length; at++) frames.push(...parser.push(headerBlock.subarray(at, at + 1)));
    const elapsed = performance.now() - started;
    expect(frames).toHaveLength(2);
    expect(frames[0].body!.equals(body)).toBe(true);
    expect(frames[1].headers['Reply-Text']).toBe(`+OK ${'r'.repeat(60_000)}`);
    expect(parser.buffered).toBe(0);
    // About 1 s here; the old cost was minutes: the bound leaves a loaded machine twentyfold room and still tells them apart.
    expect(elapsed).toBeLessThan(20_000);
  }, 60_000);

  it('refuses a header block over the cap however the reads cut it', () => {
    for (const size of [1, 7, 999, 1001]) {
      const parser = new EslFrameParser({ maxHeaderBytes: 1000 });
      const flood = Buffer.alloc(2000, 'a');
      expect(() => {
        for (let at = 0; at < flood.length; at += size) parser.push(flood.subarray(at, at + size));
      }).toThrow(expect.objectContaining({ code: 'FSB_ERR_FRAME_TOO_LARGE' }));
    }
  });

  it('reads auth/request, command/reply and disconnect-notice frames', () => {
    const frames = new EslFrameParser().push(readFixture('esl', 'b-multicast-event.raw'));
    expect(frames[0].headers).toEqual({ 'Content-Type': 'auth/request' });
    expect(frames[1].headers['Reply-Text']).toBe('+OK accepted');
    const last = frames[frames.length - 1];
    expect(last.headers['Content-Type']).toBe('text/disconnect-notice');
    expect(last.body!.toString()).toBe('The system is being shut down.\n');
  });

  it('refuses a frame over the size cap with a typed error', () => {
    const parser = new EslFrameParser({ maxFrameBytes: 100 });
    expect(() => parser.push(Buffer.from('Content-Length: 101\nContent-Type: text/event-plain\n\n'))).toThrow(
      expect.objectContaining({ code: 'FSB_ERR_FRAME_TOO_LARGE' }),
    );
    const headerFlood = new EslFrameParser({ maxHeaderBytes: 1000 });
    expect(() => headerFlood.push(Buffer.alloc(2000, 'a'))).toThrow(expect.objectContaining({ code: 'FSB_ERR_FRAME_TOO_LARGE' }));
  });

  it('rejects a malformed header line and a bad Content-Length', () => {
    expect(() => new EslFrameParser().push(Buffer.from('garbage\n\n'))).toThrow(/malformed ESL header/);
    expect(() => new EslFrameParser().push(Buffer.from('Content-Length: -4\n\n'))).toThrow(/bad Content-Length/);
  });
});
