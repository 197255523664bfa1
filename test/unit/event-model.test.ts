import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { parsePlain, serializePlain } from '../../bridge/event/plain.js';
import { parseJson, serializeJson } from '../../bridge/event/json.js';
import { urlDecode, urlEncode } from '../../bridge/event/url-encoding.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { eslFrames } from '../support/fixtures.js';

const STREAMS = ['a-plain.raw', 'a-json.raw', 'b-multicast-event.raw'];

describe('event model on the captured ESL streams', () => {
  it.each(STREAMS)('parses every event of %s', (stream) => {
    const frames = eslFrames(stream).filter(isEventFrame);
    expect(frames.length).toBeGreaterThan(30);
    for (const frame of frames) {
      const event = eventFromFrame(frame);
      expect(event.name).not.toBe('');
      expect(event.coreUuid).toMatch(/^[0-9a-f-]{36}$/);
      expect(event.sequence).toBeGreaterThan(0);
    }
  });

  it('serialize(parse(x)) reproduces FreeSWITCH plain bytes exactly', () => {
    const frames = eslFrames('a-plain.raw').filter(isEventFrame);
    expect(frames).toHaveLength(200);
    for (const frame of frames) {
      expect(serializePlain(eventFromFrame(frame))).toBe(frame.body!.toString('utf8'));
    }
  });

  it('serialize(parse(x)) reproduces FreeSWITCH event json bytes, grouping duplicate keys into arrays', () => {
    const frames = eslFrames('a-json.raw').filter(isEventFrame);
    expect(frames).toHaveLength(200);
    let withDuplicates = 0;
    for (const frame of frames) {
      const event = eventFromFrame(frame);
      const names = event.headers.map((h) => h[0]);
      if (new Set(names).size === names.length) {
        expect(serializeJson(event)).toBe(frame.body!.toString('utf8'));
      } else {
        // FreeSWITCH writes a repeated header as a duplicate key, which JSON.parse
        // readers lose; we keep both values as an array.
        withDuplicates++;
        const again = parseJson(serializeJson(event));
        expect(again.headers.length).toBe(event.headers.length);
        const decoded = JSON.parse(serializeJson(event));
        for (const name of names.filter((n, i) => names.indexOf(n) !== i)) {
          expect(decoded[name]).toEqual(event.headers.filter((h) => h[0] === name).map((h) => h[1]));
        }
      }
    }
    expect(withDuplicates).toBeGreaterThan(0);
  });

  it('plain and json captures of the same scenario carry the same events', () => {
    const plain = eslFrames('a-plain.raw').filter(isEventFrame).map(eventFromFrame);
    const json = eslFrames('a-json.raw').filter(isEventFrame).map(eventFromFrame);
    const plainByKey = new Map(plain.map((e) => [e.key, e]));
    let compared = 0;
    for (const e of json) {
      const twin = plainByKey.get(e.key);
      if (!twin) continue;
      // Both connections see the same event object; dates and sequence are identical.
      expect(e.name).toBe(twin.name);
      expect(e.get('Event-Date-Timestamp')).toBe(twin.get('Event-Date-Timestamp'));
      compared++;
    }
    expect(compared).toBeGreaterThan(100);
  });

  it('accessors read name, subclass, Core-UUID, sequence and headers case-insensitively', () => {
    const register = eslFrames('a-plain.raw')
      .filter(isEventFrame)
      .map(eventFromFrame)
      .find((e) => e.subclass === 'sofia::register')!;
    expect(register.name).toBe('CUSTOM');
    expect(register.get('STATUS')).toBe('Registered(UDP)');
    expect(register.get('contact')).toContain('<sip:');
    expect(register.key).toBe(`${register.coreUuid}:${register.sequence}`);
  });
});

const awkwardChar = fc.constantFrom(':', ' ', '%', '+', 'é', '€', '😀', '=', '@', '"', '\\', '/', ',', '~', '\t', 'a', 'Z', '0', '%41', '_undef_x');
const awkwardValue = fc.array(awkwardChar, { minLength: 1, maxLength: 12 }).map((a) => a.join(''));
const headerName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,20}$/).filter((n) => n !== 'Content-Length');
const bodyArb = fc.option(
  fc.array(fc.constantFrom('a', ':', '\r', '\n', '\r\n', 'x: y', '\u00e2', '€', ' ', '%20'), { minLength: 1, maxLength: 20 }).map((a) => a.join('')),
  { nil: null },
);
const eventArb = fc
  .record({ extra: fc.array(fc.tuple(headerName, awkwardValue), { maxLength: 15 }), body: bodyArb })
  .map(({ extra, body }) => new FsEvent([['Event-Name', 'CUSTOM'], ...extra.map(([n, v]) => [n, v] as Header)], body));

describe('round trips of generated events with awkward values', () => {
  it('parse(serializePlain(e)) equals e', () => {
    fc.assert(
      fc.property(eventArb, (e) => {
        const back = parsePlain(serializePlain(e));
        expect(back.headers).toEqual(e.headers);
        expect(back.body).toBe(e.body);
      }),
      { numRuns: 500 },
    );
  });

  it('parse(serializeJson(e)) equals e up to grouping of repeated headers', () => {
    fc.assert(
      fc.property(eventArb, (e) => {
        const back = parseJson(serializeJson(e));
        const group = (ev: FsEvent) => [...new Set(ev.headers.map((h) => h[0]))].map((n) => [n, ev.headers.filter((h) => h[0] === n).map((h) => h[1])]);
        expect(group(back)).toEqual(group(e));
        expect(back.body).toBe(e.body);
      }),
      { numRuns: 500 },
    );
  });

  it('repeated headers become a JSON array and come back as repeated headers', () => {
    const e = new FsEvent([['Event-Name', 'CUSTOM'], ['X', '1'], ['Y', 'y'], ['X', '2']]);
    expect(serializeJson(e)).toBe('{"Event-Name":"CUSTOM","X":["1","2"],"Y":"y"}');
    expect(parseJson(serializeJson(e)).getAll('x')).toEqual(['1', '2']);
  });

  it('escapes exactly what FreeSWITCH escapes', () => {
    expect(urlEncode('Wed, 25 Nov 2026 12:14:35 GMT')).toBe('Wed,%2025%20Nov%202026%2012%3A14%3A35%20GMT');
    expect(urlEncode('sip:1000@10.0.0.1;transport=udp')).toBe('sip%3A1000%4010.0.0.1%3Btransport%3Dudp');
    expect(urlEncode("a/b(c)!*'$~")).toBe("a/b(c)!*'$~");
    expect(urlEncode('é\n')).toBe('%C3%A9%0A');
    expect(urlDecode('%C3%A9%0A+%2')).toBe('é\n+%2');
  });

  it('decodes %XX runs as UTF-8 (U+FFFD where they are not), keeps everything else, for any text and any length', () => {
    /** switch_url_decode's rule written plainly: each run of %XX bytes decoded as UTF-8, every other char kept. */
    const reference = (value: string) => value.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => Buffer.from(run.replace(/%/g, ''), 'hex').toString('utf8'));
    const piece = fc.oneof(fc.constantFrom('%', '%4', '%41', '%e9', '%E9', '%C3%A9', '%C3', '%F0%9F%98%80', '%ED%A0%80', '%zz', '+', 'é', '\ud800', '😀'), fc.string({ unit: 'binary', maxLength: 6 }));
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (parts) => {
        const value = parts.join('');
        expect(urlDecode(value)).toBe(reference(value));
      }),
      { numRuns: 300 },
    );
    // Around the size of the scratch buffer the common case decodes into.
    for (const pad of [16 * 1024 - 8, 16 * 1024 + 8]) {
      for (const tail of ['%C3%A9%E9x%41', 'é%41', '%zz%2']) {
        const value = 'a'.repeat(pad) + tail;
        expect(urlDecode(value)).toBe(reference(value));
      }
    }
  });

  it('writes empty values as _undef_ like FreeSWITCH', () => {
    expect(serializePlain(new FsEvent([['Event-Name', 'X'], ['Empty', '']]))).toBe('Event-Name: X\nEmpty: _undef_\n\n');
  });

  it('rejects malformed plain text with a ParseError', () => {
    expect(() => parsePlain('Event-Name: X\ngarbage\n\n')).toThrow(/malformed header line/);
    expect(() => parsePlain('Event-Name: X\nContent-Length: 10\n\nabc')).toThrow(/truncated/);
    expect(() => parseJson('[1]')).toThrow(/expected '\{'/);
    expect(() => parseJson('{"a":{}}')).toThrow(/neither a string/);
    expect(() => parseJson('{"a":"b"')).toThrow(/expected '\}'/);
  });
});
