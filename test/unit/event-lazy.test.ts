import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { parsePlain, serializePlain } from '../../bridge/event/plain.js';
import { ParseError } from '../../bridge/errors.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { eslFrames } from '../support/fixtures.js';

/**
 * An event parsed from plain text decodes its headers only when asked (FsEvent.fromPlain).
 * Whatever is asked, in whatever order, it must answer exactly as the same event built
 * from its decoded list, and every malformed input must be refused by parsePlain itself,
 * never later by a read.
 */

/** What plain text carries of an event: '' is written as _undef_, and strings go through UTF-8. */
function asCarried(event: FsEvent): FsEvent {
  const utf8 = (s: string) => Buffer.from(s, 'utf8').toString('utf8');
  const body = event.body === null || event.body === '' ? null : utf8(event.body);
  return new FsEvent(event.headers.map(([n, v]) => [utf8(n), v === '' ? '_undef_' : utf8(v)] as Header), body);
}

/** The same event, decoded in full up front. */
function eager(event: FsEvent): FsEvent {
  return new FsEvent(event.headers.map(([n, v]) => [n, v] as Header), event.body);
}

const names = fc.constantFrom('Event-Name', 'event-name', 'Event-Subclass', 'Core-UUID', 'core-uuid', 'Event-Sequence', 'FSB-Injected-By', 'fsb-injected-by', 'Multicast-Sender', 'X', 'x', 'Unique-ID', 'ÄÖ-Name');
const values = fc.oneof(fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom('', '%41', 'caf%E9', '123', 'a:b', 'é', '\u0000', '\ud800'));
const plainEvent = fc
  .record({ headers: fc.array(fc.tuple(names, values), { maxLength: 12 }), body: fc.option(fc.string({ unit: 'binary', maxLength: 30 }), { nil: null }) })
  .map(({ headers, body }) => new FsEvent(headers.map(([n, v]) => [n, v] as Header), body));
const lookup = fc.constantFrom('Event-Name', 'EVENT-NAME', 'event-subclass', 'Core-UUID', 'Event-Sequence', 'FSB-Injected-By', 'Multicast-Sender', 'x', 'X', 'Unique-ID', 'unique-id', 'ÄÖ-Name', 'äö-name', 'Missing');

describe('lazily decoded plain events', () => {
  it('answer every read exactly as the decoded event does, in any order', () => {
    fc.assert(
      fc.property(plainEvent, fc.array(lookup, { maxLength: 6 }), fc.boolean(), (source, asks, decodeFirst) => {
        const text = serializePlain(source);
        const lazy = parsePlain(text);
        const reference = asCarried(source);
        if (decodeFirst) expect(lazy.headers).toEqual(reference.headers);
        for (const name of asks) {
          expect(lazy.get(name), name).toBe(reference.get(name));
          expect(lazy.has(name), name).toBe(reference.has(name));
        }
        expect(lazy.name).toBe(reference.name);
        expect(lazy.subclass).toBe(reference.subclass);
        expect(lazy.key).toBe(reference.key);
        expect(lazy.sequence).toBe(reference.sequence);
        expect(lazy.body).toBe(reference.body);
        expect(lazy.getAll('x')).toEqual(reference.getAll('x'));
        expect(lazy.headers).toEqual(reference.headers);
      }),
      { numRuns: 500 },
    );
  });

  it('decode every captured FreeSWITCH event to what the eager reading gave', () => {
    for (const stream of ['a-plain.raw', 'b-multicast-event.raw']) {
      for (const frame of eslFrames(stream).filter(isEventFrame)) {
        const lazy = eventFromFrame(frame);
        const reference = eager(eventFromFrame(frame));
        expect(lazy.name).toBe(reference.name);
        expect(lazy.subclass).toBe(reference.subclass);
        expect(lazy.key).toBe(reference.key);
        expect(lazy.get('Unique-ID')).toBe(reference.get('Unique-ID'));
        expect(lazy.headers).toEqual(reference.headers);
        expect(lazy.body).toBe(reference.body);
      }
    }
  });

  it('find the first exact name before an earlier case-insensitive one, and a case-folding lookup name as the list does', () => {
    const text = 'event-name: lower\nEvent-Name: exact\nk: kelvin\nCore-UUID: u\nX-Y: %41\n\n';
    const lazy = parsePlain(text);
    const reference = eager(parsePlain(text));
    // U+212A (Kelvin sign) lower-cases to an ASCII "k"; U+0130 lower-cases to two chars and matches nothing ASCII.
    for (const name of ['Event-Name', 'EVENT-NAME', 'event-name', '\u212a', 'K', '\u0130', 'core-uuid', 'x-y', 'X-Y', '', 'Absent', 'Event-Name: exact']) {
      expect(parsePlain(text).get(name), name).toBe(reference.get(name));
      expect(lazy.get(name), name).toBe(reference.get(name));
    }
    expect(lazy.get('Event-Name')).toBe('exact');
    expect(lazy.get('EVENT-NAME')).toBe('lower');
  });

  it('read raw UTF-8 in names and values (not FreeSWITCH output, but a peer may send it) as UTF-8', () => {
    const event = parsePlain(Buffer.from('Event-Name: CUSTOM\nNämé: wért\nX: %C3%A9\n\n', 'utf8'));
    expect(event.get('Nämé')).toBe('wért');
    expect(event.get('nämé')).toBe('wért');
    expect(event.get('X')).toBe('é');
    expect(event.headers).toEqual([['Event-Name', 'CUSTOM'], ['Nämé', 'wért'], ['X', 'é']]);
  });

  it('refuse every malformed line and bad Content-Length when parsed, whatever is read afterwards', () => {
    const line = fc.oneof(fc.constantFrom('broken', ': no-name', 'A:no-space', 'Content-Length: x', 'Content-Length: -1', 'Content-Length: 99'), fc.string({ maxLength: 12 }));
    fc.assert(
      fc.property(fc.array(fc.constantFrom('A: 1', 'B: %41', 'Event-Name: X'), { maxLength: 4 }), line, (good, bad) => {
        const text = [...good, bad].join('\n') + '\n\n';
        let parsed: FsEvent | null = null;
        try {
          parsed = parsePlain(text);
        } catch (error) {
          expect(error).toBeInstanceOf(ParseError);
          return;
        }
        // Accepted: every read works and agrees with the decoded list.
        const reference = eager(parsed);
        expect(parsed.get('A')).toBe(reference.get('A'));
        expect(parsed.body).toBe(reference.body);
        expect(() => parsed.headers).not.toThrow();
      }),
      { numRuns: 400 },
    );
  });

  it('keep the source unchanged for other readers when one copy is changed or its body replaced', () => {
    const event = parsePlain('Event-Name: CUSTOM\nEvent-Subclass: a%3A%3Ab\nX: 1\nContent-Length: 2\n\nhi');
    const copy = event.clone();
    copy.body = 'bye';
    copy.set('Event-Subclass', 'c::d');
    expect(copy.subclass).toBe('c::d');
    expect(copy.body).toBe('bye');
    expect(event.subclass).toBe('a::b');
    expect(event.body).toBe('hi');
    expect(event.plainBytes?.toString()).toBe('Event-Name: CUSTOM\nEvent-Subclass: a%3A%3Ab\nX: 1\nContent-Length: 2\n\nhi');
  });

  it('notice a name changed in place on the decoded list', () => {
    const event = parsePlain('Event-Name: CUSTOM\nX: 1\n\n');
    expect(event.name).toBe('CUSTOM');
    event.headers[0][1] = 'HEARTBEAT';
    expect(event.name).toBe('HEARTBEAT');
  });
});
