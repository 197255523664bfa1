import { mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { DedupJournal, dedupKey } from '../../bridge/pipeline/dedup.js';
import { injectionOrderKey, sanitizeForInjection, toMulticastEvent } from '../../bridge/pipeline/inject.js';
import { sendeventCommand } from '../../bridge/sources/esl/client.js';

/** Any string, lone surrogates, NUL, CR and LF included. */
const anyText = fc.string({ unit: 'binary', maxLength: 40 });

describe('sanitizeForInjection', () => {
  it('leaves every remote event writable with sendevent, one line per kept header (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(anyText, anyText), { maxLength: 8 }), fc.option(anyText, { nil: null }), (headers, body) => {
        const original = new FsEvent([['Event-Name', 'PRESENCE_IN'], ...headers], body);
        const clean = sanitizeForInjection(toMulticastEvent(original, 'fs-a', 'fs-b'));
        if (clean.event.body !== null && clean.event.body.includes('\0')) return;
        const text = sendeventCommand(clean.event);
        const headerBlock = clean.event.body ? text.slice(0, text.indexOf('\n\n')) : text.slice(0, -2);
        const lines = headerBlock.split('\n');
        const expected = clean.event.headers.filter(([n]) => !/^(event-name|content-length)$/i.test(n)).length + 1 + (clean.event.body ? 1 : 0);
        expect(lines).toHaveLength(expected);
        const removed = clean.crlf + clean.nul + clean.badName;
        expect(clean.event.headers.length + removed).toBe(toMulticastEvent(original, 'fs-a', 'fs-b').headers.length);
      }),
    );
  });

  it('removes SDP-like CR/LF headers, NUL and bad names, and keeps the rest as they were', () => {
    const event = FsEvent.create('CUSTOM', 'multicast::event')
      .add('Orig-variable_switch_r_sdp', 'v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n')
      .add('Orig-bad', 'a\0b')
      .add('Orig-a:b', 'colon in the name')
      .add('Orig-from', '1000@127.0.0.1');
    const clean = sanitizeForInjection(event);
    expect(clean).toMatchObject({ crlf: 1, nul: 1, badName: 1, names: ['Orig-variable_switch_r_sdp', 'Orig-bad', 'Orig-a:b'] });
    expect(clean.event.headers).toEqual([
      ['Event-Name', 'CUSTOM'],
      ['Event-Subclass', 'multicast::event'],
      ['Orig-from', '1000@127.0.0.1'],
    ]);
    const untouched = FsEvent.create('HEARTBEAT');
    expect(sanitizeForInjection(untouched).event).toBe(untouched);
  });
});

describe('injectionOrderKey', () => {
  it("groups a user's registrations, presence and message-waiting, and a call's other events", () => {
    const register = FsEvent.create('CUSTOM', 'sofia::register').add('from-user', '1000').add('from-host', '127.0.0.1');
    const expire = FsEvent.create('CUSTOM', 'sofia::expire').add('user', '1000').add('host', '127.0.0.1');
    const presence = FsEvent.create('PRESENCE_IN').add('from', '1000@127.0.0.1').add('Unique-ID', 'u1');
    const mwi = FsEvent.create('MESSAGE_WAITING').add('MWI-Message-Account', 'sip:1000@127.0.0.1');
    expect(new Set([register, expire, presence, mwi].map(injectionOrderKey))).toEqual(new Set(['user:1000@127.0.0.1']));
    expect(injectionOrderKey(FsEvent.create('CHANNEL_ANSWER').add('Unique-ID', 'u1'))).toBe('call:u1');
    expect(injectionOrderKey(FsEvent.create('HEARTBEAT'))).toBeNull();
  });
});

describe('dedup journal', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `fsb-journal-${process.pid}-`));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const options = () => ({ maxLines: 4, logger: silentLogger(), metrics: new Metrics() });

  it('reads back what it recorded, across a rotation, oldest first, bounded to two files', () => {
    const path = join(dir, 'j');
    const { journal, keys } = DedupJournal.open(path, options());
    expect(keys).toEqual([]);
    journal.record(['a', 'b', 'c']);
    journal.record(['d', 'e']);
    journal.record(['f']);
    journal.close();
    // 'a'..'e' filled the first file (rotated at 4 lines), 'f' is in the new one.
    expect(DedupJournal.open(path, options()).keys).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    const again = DedupJournal.open(path, options());
    again.journal.record(['g', 'h', 'i', 'j']);
    again.journal.close();
    // One more rotation: the oldest file is gone.
    expect(DedupJournal.open(path, options()).keys).toEqual(['f', 'g', 'h', 'i', 'j']);
  });

  it('ignores a line a crash cut short', () => {
    const path = join(dir, 'j');
    writeFileSync(path, 'k1\nk2\n');
    appendFileSync(path, 'k3-cut-sh');
    const { journal, keys } = DedupJournal.open(path, options());
    expect(keys).toEqual(['k1', 'k2']);
    journal.record(['k4']);
    journal.close();
    // Cut off, not kept: a key cut short could pass for another event's.
    expect(readFileSync(path, 'latin1')).toBe('k1\nk2\nk4\n');
    expect(DedupJournal.open(path, options()).keys).toEqual(['k1', 'k2', 'k4']);
  });

  it('keeps FreeSWITCH keys as they are and hashes anything else into one safe line', () => {
    expect(dedupKey('6a1e2b3c-0000-4000-8000-000000000001:1234')).toBe('6a1e2b3c-0000-4000-8000-000000000001:1234');
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (key) => {
        const k = dedupKey(key);
        expect(k).toMatch(/^[\x21-\x7e]{1,96}$/);
        expect(dedupKey(key)).toBe(k);
      }),
    );
    expect(dedupKey('a\nb')).not.toBe(dedupKey('a\nc'));
  });
});
