import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { parseMulticastKey } from '../../bridge/config/multicast-key.js';
import { DatagramError, type DatagramDropReason } from '../../bridge/errors.js';
import { FsEvent } from '../../bridge/event/event.js';
import { decodeDatagram, decodeSecureDatagram, encodeDatagram, encodeSecureDatagram } from '../../bridge/transports/multicast/codec.js';
import { SECURE_HEADER_BYTES, SecureOpener, SecureSealer, isSecureDatagram } from '../../bridge/transports/multicast/secure.js';
import { datagramFixtures, fixturePath } from '../support/fixtures.js';
import { legacyReceive } from '../support/legacy-receiver.js';
import { secureOpenerFromEnv } from '../../bridge/cli/commands/listen.js';

const PSK = Buffer.from(JSON.parse(readFileSync(fixturePath('multicast-psk', 'index.json'), 'utf8')).psk as string);
const K1 = parseMulticastKey(`1:${'11'.repeat(32)}`);
const K2 = parseMulticastKey(`2:${'22'.repeat(32)}`);
const LIMITS = { maxAgeMs: 10_000, replayWindow: 64 };

function event(seq: number, extra: [string, string][] = []): FsEvent {
  return new FsEvent([['Event-Name', 'CUSTOM'], ['Core-UUID', 'c0ffee00-0000-4000-8000-000000000001'], ['Event-Sequence', String(seq)], ['Event-Subclass', 'sofia::register'], ...extra], null);
}

/** The cause a datagram is refused with, or 'accepted': through the codec, or the opener alone at receiver time `now`. */
function outcome(opener: SecureOpener, datagram: Buffer, now?: number): DatagramDropReason | 'accepted' {
  try {
    if (now === undefined) decodeSecureDatagram(datagram, opener);
    else opener.open(datagram, now);
    return 'accepted';
  } catch (err) {
    if (err instanceof DatagramError) return err.reason;
    throw err;
  }
}

describe('secure multicast keys', () => {
  it('parses <id>:<64 hex> and <id>:<base64>; every refusal names the problem and never the key', () => {
    const hex = 'ab'.repeat(32);
    expect(parseMulticastKey(` 7:${hex} `)).toMatchObject({ id: 7, key: Buffer.from(hex, 'hex') });
    expect(parseMulticastKey(`255:${Buffer.alloc(32, 9).toString('base64')}`).key).toEqual(Buffer.alloc(32, 9));
    const secret = 'cd'.repeat(31);
    for (const bad of [hex, `256:${hex}`, `x:${hex}`, `1:${secret}`, `1:${secret}zz`, `1:${Buffer.alloc(31).toString('base64')}`, '1:', '']) {
      let message = '';
      try {
        parseMulticastKey(bad);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, bad).not.toBe('');
      expect(message).not.toContain(secret);
      expect(message).not.toContain(hex);
    }
  });

  it('prints as its id only when logged or serialized by accident', () => {
    const key = parseMulticastKey(`3:${'ef'.repeat(32)}`);
    expect(JSON.stringify({ key })).not.toContain('efef');
    expect(inspect(key)).not.toContain('efef');
    expect(JSON.stringify(key)).toContain('"id":3');
    expect(key.key.toString('hex')).toBe('ef'.repeat(32));
  });
});

describe('secure multicast datagrams', () => {
  it('add 48 bytes to the event text and MAGIC, plus NULs up to a multiple of 8 (round trips: multicast-codec.test.ts)', () => {
    const sealer = new SecureSealer(K1);
    for (let i = 0; i < 40; i++) {
      const e = event(i, [['pad', 'x'.repeat(i)]]);
      const text = encodeDatagram(e, 'fs-a', null).length - 272;
      const datagram = encodeSecureDatagram(e, 'fs-a', sealer);
      expect(datagram.length - 48).toBe(Math.ceil(text / 8) * 8);
    }
  });

  it('rejects every single-bit flip of a datagram (legacy psk accepts some), each counted by cause', () => {
    const sealer = new SecureSealer(K1);
    const opener = new SecureOpener([K1], LIMITS);
    const original = encodeSecureDatagram(event(1, [['from-user', '1000'], ['status', 'Registered(UDP)']]), 'fs-a', sealer);
    const causes = new Map<string, number>();
    for (let bit = 0; bit < original.length * 8; bit++) {
      const flipped = Buffer.from(original);
      flipped[bit >> 3] ^= 1 << (bit & 7);
      const cause = outcome(opener, flipped);
      causes.set(cause, (causes.get(cause) ?? 0) + 1);
    }
    expect(causes.get('accepted')).toBeUndefined();
    expect([...causes.values()].reduce((a, b) => a + b, 0)).toBe(original.length * 8);
    // Byte 0-4 are the format tag, 5 the version, 6 the key id; everything else fails authentication.
    expect(causes.get('not_secure')).toBe(5 * 8);
    expect(causes.get('secure_malformed')).toBe(8);
    expect(causes.get('unknown_key_id')).toBe(8);
    // Including the reserved byte 7: the whole header is authenticated.
    expect(causes.get('bad_tag')).toBe(original.length * 8 - 7 * 8);
    // The untouched datagram still opens: no flip moved any state.
    expect(outcome(opener, original)).toBe('accepted');

    // The same event through the legacy psk format: some flips decode, as altered events.
    const psk = encodeDatagram(event(1, [['from-user', '1000'], ['status', 'Registered(UDP)']]), 'fs-a', PSK);
    let pskAccepted = 0;
    for (let bit = 256 * 8; bit < psk.length * 8; bit++) {
      const flipped = Buffer.from(psk);
      flipped[bit >> 3] ^= 1 << (bit & 7);
      try {
        decodeDatagram(flipped, PSK);
        pskAccepted++;
      } catch {
        // refused
      }
    }
    expect(pskAccepted).toBeGreaterThan(0);
  });

  it('accepts a datagram once: a replay is refused, and so is one older than the replay window', () => {
    const sealer = new SecureSealer(K1);
    const opener = new SecureOpener([K1], LIMITS);
    const sent = Array.from({ length: 100 }, (_, i) => encodeSecureDatagram(event(i + 1), 'fs-a', sealer));
    expect(outcome(opener, sent[0])).toBe('accepted');
    expect(outcome(opener, sent[0])).toBe('replayed');
    expect(outcome(opener, sent[99])).toBe('accepted');
    // Counter 2 is 98 behind 100, the window is 64.
    expect(outcome(opener, sent[1])).toBe('outside_window');
    // Counter 40 is 60 behind: inside, not seen yet.
    expect(outcome(opener, sent[39])).toBe('accepted');
    expect(outcome(opener, sent[39])).toBe('replayed');
  });

  it('accepts datagrams reordered within the window, each once', () => {
    const sealer = new SecureSealer(K1);
    const opener = new SecureOpener([K1], LIMITS);
    const sent = Array.from({ length: 200 }, (_, i) => encodeSecureDatagram(event(i + 1), 'fs-a', sealer));
    // Each block of 50 arrives backwards: a datagram overtaken by up to 49 others (the window is 64).
    const order = sent.map((_, i) => i).sort((a, b) => Math.floor(a / 50) - Math.floor(b / 50) || b - a);
    const accepted = new Set<number>();
    for (const i of order) {
      const result = outcome(opener, sent[i]);
      if (result === 'accepted') accepted.add(i);
      else expect.fail(`datagram ${i + 1} refused as ${result}`);
    }
    expect(accepted.size).toBe(200);
    for (const i of order.slice(-30)) expect(outcome(opener, sent[i])).toBe('replayed');
  });

  it('refuses datagrams stamped further than max-age from the receiver clock, either way', () => {
    const sealer = new SecureSealer(K1);
    const opener = new SecureOpener([K1], LIMITS);
    const text = Buffer.alloc(64);
    const now = Date.now();
    expect(outcome(opener, sealer.seal(text, now - 10_001), now)).toBe('stale');
    expect(outcome(opener, sealer.seal(text, now + 10_001), now)).toBe('from_future');
    expect(outcome(opener, sealer.seal(text, now - 9_000), now)).toBe('accepted');
    expect(outcome(opener, sealer.seal(text, now + 9_000), now)).toBe('accepted');
  });

  it('refuses a wrong key under a known id (bad_tag) and an id it does not have (unknown_key_id)', () => {
    const wrong = parseMulticastKey(`1:${'33'.repeat(32)}`);
    const opener = new SecureOpener([K1], LIMITS);
    expect(outcome(opener, encodeSecureDatagram(event(1), 'fs-a', new SecureSealer(wrong)))).toBe('bad_tag');
    expect(outcome(opener, encodeSecureDatagram(event(1), 'fs-a', new SecureSealer(K2)))).toBe('unknown_key_id');
  });

  it('rotates keys: both accepted while the new one is added, the old one refused once removed, replays refused across it', () => {
    const sender = new SecureSealer(K1);
    const straggler = new SecureSealer(K1);
    const receiver = new SecureOpener([K1], LIMITS);
    const before = encodeSecureDatagram(event(1), 'fs-a', sender);
    expect(outcome(receiver, before)).toBe('accepted');
    // Step 1: every receiver accepts the new key as well.
    receiver.setKeys([K1, K2]);
    // Step 2: senders switch; one that has not been reloaded yet still sends with the old key.
    sender.setKey(K2);
    expect(sender.keyId).toBe(2);
    const rotated = encodeSecureDatagram(event(2), 'fs-a', sender);
    expect(rotated[6]).toBe(2);
    expect(outcome(receiver, rotated)).toBe('accepted');
    expect(outcome(receiver, encodeSecureDatagram(event(3), 'fs-b', straggler))).toBe('accepted');
    // A datagram accepted before the reload is still a replay after it (windows belong to senders, not keys),
    // and after new limits too.
    expect(outcome(receiver, before)).toBe('replayed');
    receiver.setLimits({ maxAgeMs: 20_000, replayWindow: 4096 });
    expect(outcome(receiver, before)).toBe('replayed');
    // Step 3: the old key is removed.
    receiver.setKeys([K2]);
    expect(outcome(receiver, encodeSecureDatagram(event(4), 'fs-b', straggler))).toBe('unknown_key_id');
    expect(outcome(receiver, encodeSecureDatagram(event(5), 'fs-a', sender))).toBe('accepted');
  });

  it('a restarted sender draws a new epoch: its counter starts again without reusing a nonce, and the old datagrams stay replays', () => {
    const receiver = new SecureOpener([K1], LIMITS);
    const first = new SecureSealer(K1);
    const old = [1, 2, 3].map((n) => encodeSecureDatagram(event(n), 'fs-a', first));
    for (const datagram of old) expect(outcome(receiver, datagram)).toBe('accepted');
    const restarted = new SecureSealer(K1);
    const fresh = encodeSecureDatagram(event(1), 'fs-a', restarted);
    // Same counter (1), same plaintext, another epoch: another AES key, so another ciphertext.
    expect(fresh.readUInt32BE(20)).toBe(1);
    expect(old[0].readUInt32BE(20)).toBe(1);
    expect(fresh.subarray(8, 16).equals(old[0].subarray(8, 16))).toBe(false);
    expect(fresh.subarray(SECURE_HEADER_BYTES).equals(old[0].subarray(SECURE_HEADER_BYTES))).toBe(false);
    expect(outcome(receiver, fresh)).toBe('accepted');
    for (const datagram of old) expect(outcome(receiver, datagram)).toBe('replayed');
    // 1,000 restarts: 1,000 distinct epochs.
    const epochs = new Set(Array.from({ length: 1_000 }, () => new SecureSealer(K1).seal(Buffer.alloc(8)).subarray(8, 16).toString('hex')));
    expect(epochs.size).toBe(1_000);
  });

  it('never throws anything but a DatagramError on arbitrary bytes behind the secure tag, and forged ones move no state (property)', () => {
    const sealer = new SecureSealer(K1);
    // Freshness is not what this checks: 2,000 runs on a loaded machine outlast maxAgeMs, and the genuine datagram must still be fresh at the end.
    const opener = new SecureOpener([K1], { ...LIMITS, maxAgeMs: 3_600_000 });
    const genuine = encodeSecureDatagram(event(1), 'fs-a', sealer);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (bytes, keepHeader) => {
        const forged = Buffer.concat([keepHeader ? genuine.subarray(0, SECURE_HEADER_BYTES) : Buffer.from([0, 0x46, 0x53, 0x42, 0x47, 1, 1]), Buffer.from(bytes)]);
        expect(outcome(opener, forged)).not.toBe('accepted');
      }),
      { numRuns: 2_000 },
    );
    expect(outcome(opener, genuine)).toBe('accepted');
  });
});

describe('legacy nodes and secure datagrams', () => {
  const cases = () => [
    ...datagramFixtures('multicast-plain').map((f) => decodeDatagram(f.bin, null).event),
    ...Array.from({ length: 50 }, (_, i) => event(i, [['body-ish', 'x'.repeat(i * 37)]])),
  ];

  it('the legacy model fires the real captures (so its refusals below mean something)', () => {
    for (const { file, bin, decoded } of [...datagramFixtures('multicast-plain'), ...datagramFixtures('multicast-psk')]) {
      const result = legacyReceive(bin, decoded.mode === 'psk' ? PSK : null);
      expect(result.fired, file).toBe(true);
      if (result.fired) expect(result.headers.map(([name]) => name).slice(0, 3)).toEqual(decoded.headers.slice(0, 3).map(([name]) => `Orig-${name}`));
    }
  });

  it('a legacy node without psk drops every secure datagram at once (NUL before any MAGIC), never parsing it', () => {
    const sealer = new SecureSealer(K1);
    for (const e of cases()) {
      const datagram = encodeSecureDatagram(e, 'fs-a', sealer);
      expect(datagram[0]).toBe(0);
      const result = legacyReceive(datagram, null);
      expect(result.fired).toBe(false);
      if (!result.fired && datagram.length > 256) expect(result.why).toBe('no_validation_string');
    }
  });

  it('a legacy node with a psk drops every secure datagram, and its NUL write stays inside its buffer', () => {
    const sealer = new SecureSealer(K1);
    let checked = 0;
    for (const e of cases()) {
      const datagram = encodeSecureDatagram(e, 'fs-a', sealer);
      if (datagram.length <= 256) continue;
      checked++;
      expect((datagram.length - 256) % 8).toBe(0);
      for (const stale of [0, 7]) {
        const result = legacyReceive(datagram, PSK, stale);
        expect(result.fired).toBe(false);
        expect(result.nulWriteInBounds).toBe(true);
      }
    }
    expect(checked).toBeGreaterThan(40);
  });

  it("the bridge's legacy decode path refuses them as secure_without_key, with or without psk; a secure node refuses legacy datagrams as not_secure", () => {
    const datagram = encodeSecureDatagram(event(1), 'fs-a', new SecureSealer(K1));
    expect(isSecureDatagram(datagram)).toBe(true);
    for (const psk of [null, PSK]) expect(() => decodeDatagram(datagram, psk)).toThrow(expect.objectContaining({ reason: 'secure_without_key' }));
    const opener = new SecureOpener([K1], LIMITS);
    for (const { bin } of [...datagramFixtures('multicast-plain'), ...datagramFixtures('multicast-psk')]) expect(outcome(opener, bin)).toBe('not_secure');
  });
});


describe('listen in secure mode', () => {
  it('takes the keys from the bridge variables only, naming the variable and never the key when one is bad', () => {
    expect(secureOpenerFromEnv({})).toBeNull();
    const opener = secureOpenerFromEnv({ FSB_MULTICAST_SECURE_KEY: `2:${'22'.repeat(32)}`, FSB_MULTICAST_SECURE_ACCEPT_KEY: `1:${'11'.repeat(32)}` })!;
    expect(outcome(opener, encodeSecureDatagram(event(1), 'fs-a', new SecureSealer(K1)))).toBe('accepted');
    expect(outcome(opener, encodeSecureDatagram(event(1), 'fs-a', new SecureSealer(K2)))).toBe('accepted');
    const bad = `3:${'99'.repeat(31)}`;
    expect(() => secureOpenerFromEnv({ FSB_MULTICAST_SECURE_KEY: bad })).toThrow(/environment FSB_MULTICAST_SECURE_KEY: param "secure-key": key 3 must be 32 bytes/);
    expect(() => secureOpenerFromEnv({ FSB_MULTICAST_SECURE_KEY: bad })).not.toThrow(new RegExp('9999'));
  });
});
