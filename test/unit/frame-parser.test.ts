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
