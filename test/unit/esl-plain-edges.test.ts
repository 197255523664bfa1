import { describe, expect, it } from 'vitest';
import { parsePlain } from '../../bridge/event/plain.js';
import { ParseError } from '../../bridge/errors.js';

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
});
