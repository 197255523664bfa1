import { parseMulticastKey } from '../../bridge/config/multicast-key.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { blowfishAvailable } from '../../bridge/transports/multicast/blowfish.js';
import { decodeDatagram, decodeSecureDatagram, encodeDatagram, encodeSecureDatagram } from '../../bridge/transports/multicast/codec.js';
import { SecureOpener, SecureSealer } from '../../bridge/transports/multicast/secure.js';
import { datagramFixtures } from '../support/fixtures.js';
import type { BenchCase, BenchResult } from './types.js';

/**
 * Cost per datagram of the three multicast formats, encode and decode, in one process
 * on the same events: plain (no crypto), psk (Blowfish-CBC, what legacy nodes speak)
 * and secure (AES-256-GCM, counter, replay window, freshness). The events are the
 * real captures of test/fixtures/multicast-plain (HEARTBEAT, RE_SCHEDULE, sofia
 * registrations: 0.9-2 KB), repeated. Formats alternate within each round and the best
 * round of each counts. Decode includes parsing the event (what the receiver does per
 * datagram); secure decode includes the replay-window bookkeeping, with one opener per
 * round so each round sees every datagram once.
 */
type Mode = 'plain' | 'psk' | 'secure';
const MODES: readonly Mode[] = ['plain', 'psk', 'secure'];
const PSK = Buffer.from('fixture-psk-0123456789');
const KEY = parseMulticastKey(`1:${'42'.repeat(32)}`);
const LIMITS = { maxAgeMs: 600_000, replayWindow: 1024 };

export const multicastCrypto: BenchCase = async ({ quick }) => {
  if (!blowfishAvailable()) throw new Error('Blowfish (psk) needs node --openssl-legacy-provider');
  const fixtures = datagramFixtures('multicast-plain').map((f) => decodeDatagram(f.bin, null).event);
  const count = quick ? 4_000 : 20_000;
  const events: FsEvent[] = Array.from({ length: count }, (_, i) => fixtures[i % fixtures.length]);
  const sealer = new SecureSealer(KEY);
  const encode: Record<Mode, (e: FsEvent) => Buffer> = {
    plain: (e) => encodeDatagram(e, 'fs-a', null),
    psk: (e) => encodeDatagram(e, 'fs-a', PSK),
    secure: (e) => encodeSecureDatagram(e, 'fs-a', sealer),
  };
  // Decoded datagrams are made once per mode; secure ones carry increasing counters.
  const datagrams = Object.fromEntries(MODES.map((mode) => [mode, events.map(encode[mode])])) as Record<Mode, Buffer[]>;
  const bytes = Object.fromEntries(MODES.map((m) => [m, datagrams[m].reduce((s, d) => s + d.length, 0) / count])) as Record<Mode, number>;

  const best = { encode: {} as Record<Mode, number>, decode: {} as Record<Mode, number> };
  const rounds = quick ? 3 : 7;
  for (let round = 0; round < rounds; round++) {
    for (const mode of MODES) {
      let started = performance.now();
      for (const e of events) encode[mode](e);
      const encodeRate = count / ((performance.now() - started) / 1000);
      const opener = new SecureOpener([KEY], LIMITS);
      const decode = mode === 'secure' ? (d: Buffer) => decodeSecureDatagram(d, opener) : (d: Buffer) => decodeDatagram(d, mode === 'psk' ? PSK : null);
      started = performance.now();
      let decoded = 0;
      for (const d of datagrams[mode]) if (decode(d).event.headers.length > 0) decoded++;
      const decodeRate = count / ((performance.now() - started) / 1000);
      if (decoded !== count) throw new Error(`${mode}: decoded ${decoded} of ${count}`);
      best.encode[mode] = Math.max(best.encode[mode] ?? 0, encodeRate);
      best.decode[mode] = Math.max(best.decode[mode] ?? 0, decodeRate);
    }
  }
  const us = (rate: number) => (1e6 / rate).toFixed(1);
  const summary = MODES.map((m) => `${m}: encode ${us(best.encode[m])} µs, decode ${us(best.decode[m])} µs, ${Math.round(bytes[m])} B`).join('; ');
  const notes = `Per datagram, best of ${rounds} rounds of ${count}: ${summary}. Target: the multicast receive target of 20,000 datagrams/s.`;
  const row = (what: 'encode' | 'decode', baseline: Mode): BenchResult => {
    const value = Math.round(best[what].secure);
    const baselineValue = Math.round(best[what][baseline]);
    return {
      case: `multicast secure (AES-256-GCM) ${what}, vs ${baseline === 'psk' ? 'psk (Blowfish-CBC)' : 'plain'}`,
      value,
      unit: 'datagrams/s',
      baseline: `${baseline === 'psk' ? 'legacy psk (Blowfish-CBC)' : 'plain, no crypto'} ${what}, same events, same run`,
      baseline_value: baselineValue,
      ratio: Number((value / baselineValue).toFixed(2)),
      target: 20_000,
      met: value >= 20_000,
      notes,
    };
  };
  return [row('encode', 'psk'), row('decode', 'psk'), row('decode', 'plain')];
};
