import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { DatagramError } from '../../bridge/errors.js';
import { MAGIC, PLAIN_TRAILER_NULS, decodeDatagram, decodeSecureDatagram, encodeDatagram, encodeSecureDatagram } from '../../bridge/transports/multicast/codec.js';
import { SecureOpener, SecureSealer } from '../../bridge/transports/multicast/secure.js';
import { parseMulticastKey } from '../../bridge/config/multicast-key.js';
import { blowfishAvailable } from '../../bridge/transports/multicast/blowfish.js';
import { datagramFixtures, fixturePath } from '../support/fixtures.js';

const PSK = Buffer.from(JSON.parse(readFileSync(fixturePath('multicast-psk', 'index.json'), 'utf8')).psk as string);
const PLAIN_FOLDERS = ['multicast-plain', 'multicast-plain-presence-on-register', 'loop-experiment'];

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(DatagramError);
    return (error as DatagramError).reason;
  }
  throw new Error('expected a DatagramError');
}

describe('multicast codec against real captures', () => {
  it('has Blowfish in the test workers (execArgv --openssl-legacy-provider)', () => {
    expect(blowfishAvailable()).toBe(true);
  });

  for (const folder of PLAIN_FOLDERS) {
    it(`decodes every ${folder} datagram to its .json and re-encodes it byte for byte`, () => {
      const fixtures = datagramFixtures(folder);
      expect(fixtures.length).toBeGreaterThan(3);
      for (const { file, bin, decoded } of fixtures) {
        const result = decodeDatagram(bin, null);
        expect(result.mode, file).toBe('plain');
        expect(result.event.headers, file).toEqual(decoded.headers);
        expect(result.event.body, file).toBe(decoded.body);
        const sender = result.event.get('Multicast-Sender')!;
        expect(encodeDatagram(result.event, sender, null).equals(bin), file).toBe(true);
      }
    });
  }

  it('decodes every psk datagram with the fixture psk', () => {
    const fixtures = datagramFixtures('multicast-psk');
    expect(fixtures.length).toBeGreaterThan(10);
    for (const { file, bin, decoded } of fixtures) {
      const result = decodeDatagram(bin, PSK);
      expect(result.mode, file).toBe('psk');
      expect(result.event.headers, file).toEqual(decoded.headers);
      expect(result.event.body, file).toBe(decoded.body);
    }
  });

  it('encodes psk datagrams in the legacy layout, with a fresh UUID each time', () => {
    const { bin } = datagramFixtures('multicast-psk')[0];
    const event = decodeDatagram(bin, PSK).event;
    const a = encodeDatagram(event, 'fs-b', PSK);
    const b = encodeDatagram(event, 'fs-b', PSK);
    expect(a.toString('latin1', 0, 36)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(a.subarray(36, 256).every((byte) => byte === 0)).toBe(true);
    expect(a.toString('latin1', 0, 36)).not.toBe(b.toString('latin1', 0, 36));
    // Same plaintext length as the legacy sender produced: ciphertext sizes agree.
    expect(a.length).toBe(bin.length);
    expect(decodeDatagram(a, PSK).event.headers).toEqual(event.headers);
  });

  it('gives plain datagrams the 272-NUL trailer so legacy receivers (> 256 bytes) accept even tiny events', () => {
    const tiny = encodeDatagram(FsEvent.create('HEARTBEAT'), 'x', null);
    expect(tiny.length).toBeGreaterThan(256);
    expect(tiny.subarray(tiny.length - PLAIN_TRAILER_NULS).every((byte) => byte === 0)).toBe(true);
    expect(tiny.indexOf(MAGIC)).toBe(tiny.length - PLAIN_TRAILER_NULS - MAGIC.length);
    const encrypted = encodeDatagram(FsEvent.create('HEARTBEAT'), 'x', PSK);
    expect(encrypted.length).toBeGreaterThan(256);
  });

  it('accepts plain datagrams without the NUL trailer', () => {
    const { bin, decoded } = datagramFixtures('multicast-plain')[0];
    const trimmed = bin.subarray(0, bin.length - PLAIN_TRAILER_NULS);
    expect(decodeDatagram(trimmed, null).event.headers).toEqual(decoded.headers);
  });

  it('puts extra headers before Multicast-Sender, which stays last and replaces an existing one', () => {
    const event = new FsEvent([['Event-Name', 'HEARTBEAT'], ['Multicast-Sender', 'old'], ['A', 'b']]);
    const datagram = encodeDatagram(event, 'new', null, { extraHeaders: [['FSB-Multicast-Seq', 's:1']] });
    expect(decodeDatagram(datagram, null).event.headers).toEqual([
      ['Event-Name', 'HEARTBEAT'],
      ['A', 'b'],
      ['FSB-Multicast-Seq', 's:1'],
      ['Multicast-Sender', 'new'],
    ]);
  });
});

describe('multicast codec refuses bad datagrams with a typed reason', () => {
  const plain = datagramFixtures('multicast-plain')[0].bin;
  const encrypted = datagramFixtures('multicast-psk')[0].bin;

  it('too_short, too_large', () => {
    expect(reason(() => decodeDatagram(plain.subarray(0, 256), null))).toBe('too_short');
    expect(reason(() => decodeDatagram(plain, null, 1000))).toBe('too_large');
    const huge = new FsEvent([['Event-Name', 'CUSTOM']], 'x'.repeat(70_000));
    expect(reason(() => encodeDatagram(huge, 'a', null))).toBe('too_large');
  });

  it('no_magic: plain without MAGIC, or an encrypted datagram while no psk is set', () => {
    const noMagic = Buffer.concat([plain.subarray(0, 894), Buffer.alloc(300)]);
    expect(reason(() => decodeDatagram(noMagic, null))).toBe('no_magic');
    expect(reason(() => decodeDatagram(encrypted, null))).toBe('no_magic');
  });

  it('bad_psk: wrong key; plaintext_with_psk: cleartext while a psk is set', () => {
    expect(reason(() => decodeDatagram(encrypted, Buffer.from('wrong-psk')))).toBe('bad_psk');
    expect(reason(() => decodeDatagram(plain, PSK))).toBe('plaintext_with_psk');
  });

  it('malformed: truncated ciphertext, Content-Length beyond the text, no Event-Name', () => {
    expect(reason(() => decodeDatagram(encrypted.subarray(0, encrypted.length - 3), PSK))).toBe('malformed');
    const lying = Buffer.concat([Buffer.from('Event-Name: X\nContent-Length: 900\n\nab'), MAGIC, Buffer.alloc(272)]);
    expect(reason(() => decodeDatagram(lying, null))).toBe('malformed');
    const nameless = Buffer.concat([Buffer.from('Foo: bar\n\n'), MAGIC, Buffer.alloc(272)]);
    expect(reason(() => decodeDatagram(nameless, null))).toBe('malformed');
    const badLine = Buffer.concat([Buffer.from('Event-Name: X\nnocolon\n\n'), MAGIC, Buffer.alloc(272)]);
    expect(reason(() => decodeDatagram(badLine, null))).toBe('malformed');
  });

  it('never throws anything but DatagramError on random bytes or mutated captures', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 2000 }), fc.nat(), fc.boolean(), (bytes, at, usePsk) => {
        const base = usePsk ? Buffer.from(encrypted) : Buffer.from(plain);
        const mutated = Buffer.concat([base.subarray(0, at % base.length), Buffer.from(bytes)]);
        for (const input of [Buffer.from(bytes), mutated]) {
          try {
            decodeDatagram(input, usePsk ? PSK : null);
          } catch (error) {
            if (!(error instanceof DatagramError)) throw error;
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('multicast codec round trips', () => {
  // Characters the legacy parser mangles: ':' in body lines, CR, 0xE2 (first MAGIC byte), MAGIC itself, NUL-free.
  const tricky = fc.constantFrom(':', '\r', '\n', '\r\n', 'a: b\n', '\u2131', '€', MAGIC.toString('utf8'), '%3A', '_undef_', ' ', 'ä');
  const text = fc.array(fc.oneof(tricky, fc.string({ unit: 'grapheme', maxLength: 20 })), { maxLength: 30 }).map((parts) => parts.join(''));
  const headerName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,20}$/).filter((n) => n.toLowerCase() !== 'content-length' && n.toLowerCase() !== 'multicast-sender');
  const header = fc.tuple(headerName, text.filter((v) => v !== '' && v !== '_undef_')).map(([n, v]) => [n, v] as Header);

  it('keeps every header and the body exactly, plain, psk and secure', () => {
    const key = parseMulticastKey(`1:${'5a'.repeat(32)}`);
    const sealer = new SecureSealer(key);
    const opener = new SecureOpener([key], { maxAgeMs: 10_000, replayWindow: 1024 });
    fc.assert(
      fc.property(fc.array(header, { maxLength: 15 }), fc.option(text.filter((b) => b !== ''), { nil: null }), fc.constantFrom('plain', 'psk', 'secure'), (headers, body, mode) => {
        const event = new FsEvent([['Event-Name', 'CUSTOM'], ...headers], body);
        const psk = mode === 'psk' ? PSK : null;
        const decoded = mode === 'secure' ? decodeSecureDatagram(encodeSecureDatagram(event, 'fs-x', sealer), opener) : decodeDatagram(encodeDatagram(event, 'fs-x', psk), psk);
        expect(decoded.mode).toBe(mode);
        expect(decoded.event.headers).toEqual([...event.headers, ['Multicast-Sender', 'fs-x']]);
        expect(decoded.event.body).toBe(body);
      }),
      { numRuns: 600 },
    );
  });
});
