import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { serializeJson } from '../../bridge/event/json.js';
import { parsePlain, serializePlain, serializePlainHeaders } from '../../bridge/event/plain.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { decodeDatagram, encodeDatagram, isOwnPlainDatagram, senderLine, SEQ_HEADER } from '../../bridge/transports/multicast/codec.js';
import { datagramFixtures, eslFrames } from '../support/fixtures.js';

/**
 * The hot path's shortcuts must give the same bytes as the general code:
 * serializeJson's quoting without JSON.stringify, and the multicast encoder reusing the
 * header block an event was parsed from, and the receiver spotting its own datagrams
 * without decoding them.
 */

/** serializeJson as it was written before the quoting shortcut: JSON.stringify for every string. */
function referenceJson(event: FsEvent): string {
  const groups = new Map<string, string[]>();
  for (const [name, value] of event.headers) groups.set(name, [...(groups.get(name) ?? []), value]);
  const parts: string[] = [];
  for (const [name, values] of groups) parts.push(JSON.stringify(name) + ':' + (values.length > 1 ? JSON.stringify(values) : JSON.stringify(values[0])));
  if (event.body !== null && event.body !== '') {
    parts.push('"Content-Length":' + JSON.stringify(String(Buffer.byteLength(event.body))), '"_body":' + JSON.stringify(event.body));
  }
  return '{' + parts.join(',') + '}';
}

// Strings JSON must escape: quotes, backslashes, controls, lone and paired surrogates, U+2028.
const tricky = fc.constantFrom('"', '\\', '\n', '\r', '\t', '\u0000', '\u001f', '\ud800', '\udfff', '😀', '\u2028', '/', 'é', '%41', '_undef_', ' ');
const text = fc.array(fc.oneof(tricky, fc.string({ unit: 'binary', maxLength: 12 })), { maxLength: 8 }).map((parts) => parts.join(''));
const headerName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,20}$/).filter((n) => n.toLowerCase() !== 'content-length' && n.toLowerCase() !== 'multicast-sender');
const eventArb = fc
  .record({
    headers: fc.array(fc.tuple(fc.oneof(headerName, fc.constantFrom('Event-Name', 'Unique-ID')), text), { minLength: 1, maxLength: 12 }),
    body: fc.option(text, { nil: null }),
  })
  .map(({ headers, body }) => new FsEvent([['Event-Name', 'CUSTOM'], ...headers.map(([n, v]) => [n, v] as Header)], body));

describe('serializeJson quoting shortcut', () => {
  it('gives exactly what JSON.stringify per string gives, for any header text and repeated names', () => {
    fc.assert(
      fc.property(eventArb, (event) => {
        expect(serializeJson(event)).toBe(referenceJson(event));
      }),
      { numRuns: 500 },
    );
  });
});

describe('plain header block reuse', () => {
  it('an event parsed from plain text remembers exactly the header lines serializePlainHeaders writes', () => {
    fc.assert(
      fc.property(eventArb, (event) => {
        const parsed = parsePlain(serializePlain(event));
        expect(parsed.plainHeaderBytes?.toString('utf8')).toBe(serializePlainHeaders(event));
        expect(parsed.plainBytes?.equals(Buffer.from(serializePlain(event), 'utf8'))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('every captured FreeSWITCH event keeps its header block, and the datagram is the one re-encoding would give', () => {
    const frames = eslFrames('a-plain.raw').filter(isEventFrame);
    expect(frames).toHaveLength(200);
    for (const frame of frames) {
      const parsed = eventFromFrame(frame);
      expect(parsed.plainBytes?.equals(frame.body!)).toBe(true);
      const rebuilt = new FsEvent(parsed.headers.map(([n, v]) => [n, v] as Header), parsed.body);
      expect(rebuilt.plainHeaderBytes).toBeNull();
      const options = { extraHeaders: [[SEQ_HEADER, 'cafe:7']] as Header[] };
      expect(encodeDatagram(parsed, 'fs-a', null, options).equals(encodeDatagram(rebuilt, 'fs-a', null, options))).toBe(true);
    }
  });

  it('a generated event round-trips through a datagram built from its remembered block', () => {
    fc.assert(
      fc.property(eventArb, (event) => {
        const parsed = parsePlain(serializePlain(event));
        const decoded = decodeDatagram(encodeDatagram(parsed, 'fs-a', null, { extraHeaders: [[SEQ_HEADER, 'cafe:1']] }), null).event;
        // Compared with the parsed event, since plain text itself writes '' as _undef_.
        expect(decoded.headers).toEqual([...parsed.headers, [SEQ_HEADER, 'cafe:1'], ['Multicast-Sender', 'fs-a']]);
        expect(decoded.body ?? '').toBe(parsed.body ?? '');
      }),
      { numRuns: 300 },
    );
  });

  it('any change to the headers forgets the block, so the datagram carries the change', () => {
    const source = serializePlain(new FsEvent([['Event-Name', 'PRESENCE_IN'], ['Unique-ID', 'abc'], ['status', 'Ringing']], 'hello'));
    const changes: [string, (event: FsEvent) => void][] = [
      ['add', (e) => e.add('X-New', 'v')],
      ['set', (e) => e.set('status', 'Answered')],
      ['delete', (e) => e.delete('Unique-ID')],
      ['push on headers', (e) => e.headers.push(['X-Pushed', 'v'])],
      ['body', (e) => (e.body = 'bye')],
    ];
    for (const [what, change] of changes) {
      const event = parsePlain(source);
      expect(event.plainHeaderBytes, what).not.toBeNull();
      change(event);
      expect(event.plainHeaderBytes, what).toBeNull();
      expect(event.plainBytes, what).toBeNull();
      const decoded = decodeDatagram(encodeDatagram(event, 'fs-a', null), null).event;
      expect(decoded.headers.slice(0, -1), what).toEqual(event.headers);
      expect(decoded.body, what).toBe(event.body);
    }
    // An unchanged copy shares the bytes; changing the copy leaves the original as it was.
    const original = parsePlain(source);
    const copy = original.clone();
    expect(copy.plainBytes?.toString()).toBe(source);
    copy.set('status', 'Answered');
    expect(copy.plainBytes).toBeNull();
    expect(original.plainBytes?.toString()).toBe(source);
    expect(original.get('status')).toBe('Ringing');
  });

  it('a Content-Length that is not the last header line, or a block without its final newline, is not reused', () => {
    expect(parsePlain('Event-Name: A\nContent-Length: 2\nX: y\n\nhi').plainHeaderBytes).toBeNull();
    expect(parsePlain('Event-Name: A\nX: y').plainHeaderBytes).toBeNull();
    expect(parsePlain('Event-Name: A\nX: y\nContent-Length: 2\n\nhi').plainHeaderBytes?.toString()).toBe('Event-Name: A\nX: y\n');
    expect(parsePlain('Event-Name: A\nContent-Length: 2\nContent-Length: 2\n\nhi').plainHeaderBytes).toBeNull();
  });

  it('sends the bytes unchanged only when they are exactly the serialization: no trailing bytes, canonical Content-Length, a blank line', () => {
    const exact = 'Event-Name: A\nX: y\nContent-Length: 2\n\nhi';
    expect(parsePlain(exact).plainBytes?.toString()).toBe(exact);
    expect(parsePlain('Event-Name: A\nX: y\n\n').plainBytes?.toString()).toBe('Event-Name: A\nX: y\n\n');
    expect(parsePlain('Event-Name: A\nX: y\nContent-Length: 2\n\nhi!').plainBytes).toBeNull();
    expect(parsePlain('Event-Name: A\nX: y\nContent-Length: 02\n\nhi').plainBytes).toBeNull();
    expect(parsePlain('Event-Name: A\nX: y\nContent-Length: 0\n\n').plainBytes).toBeNull();
    expect(parsePlain('Event-Name: A\nX: y\n').plainBytes).toBeNull();
    expect(parsePlain('Event-Name: A\nX: y\n\nleftover').plainBytes).toBeNull();
    // What is not sent as is is re-serialized: the datagram still carries every header and the body.
    const event = parsePlain('Event-Name: A\nX: y\nContent-Length: 02\n\nhi');
    expect(decodeDatagram(encodeDatagram(event, 'fs-a', null), null).event.body).toBe('hi');
  });
});

describe('own looped-back datagrams by one byte search', () => {
  it('recognizes the sender of every captured legacy datagram and of our own datagrams, with and without a body', () => {
    const fixtures = datagramFixtures('multicast-plain');
    expect(fixtures.length).toBeGreaterThan(10);
    for (const { bin, decoded } of fixtures) {
      const sender = decoded.headers.find(([n]) => n === 'Multicast-Sender')![1];
      expect(isOwnPlainDatagram(bin, senderLine(sender))).toBe(true);
      expect(isOwnPlainDatagram(bin, senderLine(sender + 'x'))).toBe(false);
      expect(isOwnPlainDatagram(bin, senderLine('x' + sender))).toBe(false);
    }
    fc.assert(
      fc.property(eventArb, fc.constantFrom('fs-a', 'node 1', 'ä:b'), (event, name) => {
        const datagram = encodeDatagram(event, name, null, { extraHeaders: [[SEQ_HEADER, 'cafe:3']] });
        expect(isOwnPlainDatagram(datagram, senderLine(name))).toBe(true);
        expect(isOwnPlainDatagram(datagram, senderLine(name + '2'))).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('is not fooled by our sender line inside another node\'s body or headers', () => {
    const line = senderLine('fs-a');
    const inBody = encodeDatagram(new FsEvent([['Event-Name', 'CUSTOM']], 'x\nMulticast-Sender: fs-a\n\n'), 'fs-b', null);
    expect(isOwnPlainDatagram(inBody, line)).toBe(false);
    const inHeader = encodeDatagram(new FsEvent([['Event-Name', 'CUSTOM'], ['Multicast-Sender-Old', 'fs-a']]), 'fs-b', null);
    expect(isOwnPlainDatagram(inHeader, line)).toBe(false);
    expect(isOwnPlainDatagram(Buffer.from('Multicast-Sender: fs-a\n\n'), line)).toBe(false);
    expect(isOwnPlainDatagram(Buffer.alloc(300), line)).toBe(false);
  });
});
