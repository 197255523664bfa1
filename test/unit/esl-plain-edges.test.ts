import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parsePlain } from '../../bridge/event/plain.js';
import { ParseError } from '../../bridge/errors.js';
import { urlDecode } from '../../bridge/event/url-encoding.js';

// Edges of parsePlain's header-block search (rewritten for speed, see test/bench/esl-parse.ts).
describe('parsePlain header block edges', () => {
  it('reads headers that run to the end without a blank line', () => {
    expect(parsePlain('A: 1\nB: 2').headers).toEqual([['A', '1'], ['B', '2']]);
    expect(parsePlain('A: 1\n').headers).toEqual([['A', '1']]);
  });

  it('treats a leading blank line as an empty header block', () => {
    const e = parsePlain('\nA: 1\n');
    expect(e.headers).toEqual([]);
    expect(e.body).toBeNull();
  });

  it('honours start and end inside a larger buffer', () => {
    const buf = Buffer.from('xxA: 1\nContent-Length: 3\n\nabcyy');
    const e = parsePlain(buf, 2, buf.length - 2);
    expect(e.headers).toEqual([['A', '1']]);
    expect(e.body).toBe('abc');
  });

  it('does not look for the blank line past end', () => {
    const buf = Buffer.from('A: 1\nB: 2\n\nC: 3\n');
    expect(parsePlain(buf, 0, 10).headers).toEqual([['A', '1'], ['B', '2']]);
  });

  it('counts the body in bytes and refuses a truncated one', () => {
    expect(parsePlain('A: %C3%A9\nContent-Length: 2\n\né').body).toBe('é');
    expect(() => parsePlain('A: 1\nContent-Length: 9\n\nabc')).toThrow(ParseError);
  });

  it('refuses a line without ": " and names the line', () => {
    expect(() => parsePlain('A: 1\nbroken\n\n')).toThrow(/malformed header line "broken"/);
    expect(() => parsePlain(': empty-name\n\n')).toThrow(ParseError);
  });

  it('cuts a name at its first ": " even when it holds other colons', () => {
    expect(parsePlain('a:b: c: d\n::x: y\n\n').headers).toEqual([['a:b', 'c: d'], ['::x', 'y']]);
    expect(() => parsePlain('a:b:c\n\n')).toThrow(ParseError);
  });

  /**
   * The format's rule written plainly: header lines up to a blank line (or the end), each cut
   * at its first ": " (not at its start); Content-Length (the last one) must be a safe
   * non-negative integer that fits in what follows the blank line.
   */
  function reference(text: string): [string, string][] | 'refused' {
    const blank = text.startsWith('\n') ? 0 : text.indexOf('\n\n');
    const block = blank < 0 ? text : text.slice(0, blank === 0 ? 0 : blank + 1);
    const rest = blank < 0 ? '' : text.slice(blank === 0 ? 1 : blank + 2);
    const headers: [string, string][] = [];
    let bodyLength = -1;
    for (const line of block === '' ? [] : block.replace(/\n$/, '').split('\n')) {
      const colon = line.indexOf(': ');
      if (colon <= 0) return 'refused';
      const name = line.slice(0, colon);
      const value = line.slice(colon + 2);
      if (name === 'Content-Length') {
        bodyLength = Number(value);
        if (!Number.isSafeInteger(bodyLength) || bodyLength < 0) return 'refused';
        continue;
      }
      // Bytes outside ASCII (FreeSWITCH URL-encodes them all) are read as UTF-8.
      const utf8 = (latin1: string) => Buffer.from(latin1, 'latin1').toString('utf8');
      headers.push([utf8(name), urlDecode(utf8(value))]);
    }
    return bodyLength > rest.length ? 'refused' : headers;
  }

  it('accepts exactly the header blocks the line rule accepts, and reads them the same (property)', () => {
    const piece = fc.oneof(fc.constantFrom(':', ': ', ' ', '\n', '\n\n', 'A', 'a:b', '%3A', '%', 'Event-Name', 'x: y', 'Content-Length: ', '1', '\u0000', '\r', '\u00e9'), fc.string({ unit: 'binary-ascii', maxLength: 6 }));
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }), (pieces) => {
        // Latin-1 only: one char per byte, as the parser reads an ASCII block.
        const text = pieces.join('');
        const expected = reference(text);
        let got: [string, string][] | 'refused';
        try {
          got = parsePlain(Buffer.from(text, 'latin1')).headers;
        } catch (error) {
          expect(error).toBeInstanceOf(ParseError);
          got = 'refused';
        }
        if (expected === 'refused' || got === 'refused') expect(got).toBe(expected);
        else expect(got).toEqual(expected);
      }),
      { numRuns: 2000 },
    );
  });
});
