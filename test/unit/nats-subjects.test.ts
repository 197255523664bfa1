import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseTimeArg } from '../../bridge/cli/commands/replay.js';
import { parseMatches } from '../../bridge/cli/commands/tail.js';
import { FsEvent } from '../../bridge/event/event.js';
import { MAX_ENCODED_KEY_BYTES, decodeKvKey, encodeKvKey } from '../../bridge/transports/nats/kv.js';
import { StateKeyError } from '../../bridge/errors.js';
import { decodeToken, encodeToken, isValidPrefix, SubjectMapper } from '../../bridge/transports/nats/subjects.js';

/** What nats-server accepts in a subject token (plus our stricter printable-ASCII rule). */
const VALID_TOKEN = /^[\x21-\x7e]+$/;
const FORBIDDEN_IN_TOKEN = /[.*>\s]/;

describe('subject token escaping', () => {
  it('leaves ordinary names alone and escapes forbidden characters', () => {
    expect(encodeToken('PRESENCE_IN')).toBe('PRESENCE_IN');
    expect(encodeToken('fs-node-1')).toBe('fs-node-1');
    expect(encodeToken('sofia')).toBe('sofia');
    expect(encodeToken('a.b')).toBe('a%2Eb');
    expect(encodeToken('a b')).toBe('a%20b');
    expect(encodeToken('*')).toBe('%2A');
    expect(encodeToken('>')).toBe('%3E');
    expect(encodeToken('100%')).toBe('100%25');
    expect(encodeToken('\t\n')).toBe('%09%0A');
    expect(encodeToken('é')).toBe('%C3%A9');
    expect(encodeToken('')).toBe('%');
  });

  it('round-trips every string and always yields a valid token (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (text) => {
        const token = encodeToken(text);
        expect(token).toMatch(VALID_TOKEN);
        expect(token).not.toMatch(FORBIDDEN_IN_TOKEN);
        expect(decodeToken(token)).toBe(text);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('SubjectMapper', () => {
  const mapper = new SubjectMapper('fs', 'prod');

  it('maps events to <prefix>.<cluster>.<node>.<EVENT-NAME> and CUSTOM subclasses to tokens', () => {
    expect(mapper.subject('fs-a', 'PRESENCE_IN', undefined)).toBe('fs.prod.fs-a.PRESENCE_IN');
    expect(mapper.subject('fs-a', 'CUSTOM', 'sofia::register')).toBe('fs.prod.fs-a.CUSTOM.sofia.register');
    expect(mapper.subject('fs-a', 'CUSTOM', 'conference::maintenance')).toBe('fs.prod.fs-a.CUSTOM.conference.maintenance');
    expect(mapper.subject('fs-a', 'CUSTOM', 'single')).toBe('fs.prod.fs-a.CUSTOM.single');
    expect(mapper.subject('fs-a', 'CUSTOM', undefined)).toBe('fs.prod.fs-a.CUSTOM');
    // A subclass header on a non-CUSTOM event does not change its subject.
    expect(mapper.subject('fs-a', 'PRESENCE_IN', 'x::y')).toBe('fs.prod.fs-a.PRESENCE_IN');
    expect(mapper.clusterWildcard).toBe('fs.prod.>');
  });

  it('returns the cached subject string on repeated calls', () => {
    const first = mapper.subject('fs-b', 'CUSTOM', 'sofia::expire');
    expect(mapper.subject('fs-b', 'CUSTOM', 'sofia::expire')).toBe(first);
    expect(mapper.subject('fs-b', 'CUSTOM', 'sofia::unregister')).not.toBe(first);
  });

  it('parses subjects back to node, event name and subclass (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), fc.constantFrom('PRESENCE_IN', 'CUSTOM', 'HEARTBEAT'), fc.option(fc.string({ maxLength: 30 }), { nil: undefined }), (node, name, subclass) => {
        const subject = mapper.subject(node, name, subclass);
        const parsed = mapper.parse(subject);
        expect(parsed).toEqual({ node, name, subclass: name === 'CUSTOM' ? subclass : undefined });
      }),
      { numRuns: 1_000 },
    );
  });

  it('builds subscription filters for node, event name and subclass', () => {
    expect(mapper.filter({})).toBe('fs.prod.*.>');
    expect(mapper.filter({ node: 'fs-a' })).toBe('fs.prod.fs-a.>');
    expect(mapper.filter({ event: 'presence_in' })).toBe('fs.prod.*.PRESENCE_IN');
    expect(mapper.filter({ event: 'sofia::register' })).toBe('fs.prod.*.CUSTOM.sofia.register');
    expect(mapper.filter({ event: 'CUSTOM sofia::register', node: 'a b' })).toBe('fs.prod.a%20b.CUSTOM.sofia.register');
    expect(mapper.filter({ event: 'CUSTOM' })).toBe('fs.prod.*.CUSTOM.>');
  });

  it('accepts dotted prefixes, escapes the cluster, and refuses invalid prefixes', () => {
    expect(new SubjectMapper('acme.fs', 'eu west').subject('n', 'HEARTBEAT', undefined)).toBe('acme.fs.eu%20west.n.HEARTBEAT');
    expect(new SubjectMapper('acme.fs', 'eu').parse('acme.fs.eu.n.CUSTOM.a.b')).toEqual({ node: 'n', name: 'CUSTOM', subclass: 'a::b' });
    expect(new SubjectMapper('fs', 'eu').parse('other.eu.n.HEARTBEAT')).toBeUndefined();
    expect(isValidPrefix('fs')).toBe(true);
    expect(isValidPrefix('a..b')).toBe(false);
    expect(() => new SubjectMapper('fs.*', 'x')).toThrow(RangeError);
    expect(() => new SubjectMapper('', 'x')).toThrow(RangeError);
  });
});

describe('KV key escaping', () => {
  it('keeps plain keys and escapes the rest with =XX', () => {
    expect(encodeKvKey('user1000')).toBe('user1000');
    expect(encodeKvKey('realm/key_1-2')).toBe('realm/key_1-2');
    expect(encodeKvKey('1000@example.com')).toBe('1000=40example=2Ecom');
    expect(encodeKvKey('.x.')).toBe('=2Ex=2E');
    expect(encodeKvKey('a=b')).toBe('a=3Db');
    expect(encodeKvKey('')).toBe('=');
  });

  it('round-trips every string into a valid KV key (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (key) => {
        const encoded = encodeKvKey(key);
        expect(encoded).toMatch(/^[-/_=a-zA-Z0-9]+$/);
        expect(encoded.startsWith('.') || encoded.endsWith('.')).toBe(false);
        expect(decodeKvKey(encoded)).toBe(key);
      }),
      { numRuns: 2_000 },
    );
  });

  it('refuses a key with a lone surrogate (it would collide with U+FFFD) and one too long for a NATS protocol line', () => {
    expect(() => encodeKvKey('realm/\ud800/host')).toThrow(StateKeyError);
    expect(() => encodeKvKey('realm/\udfff')).toThrow(/lone surrogate/);
    expect(encodeKvKey('a'.repeat(MAX_ENCODED_KEY_BYTES))).toHaveLength(MAX_ENCODED_KEY_BYTES);
    expect(() => encodeKvKey('a'.repeat(MAX_ENCODED_KEY_BYTES + 1))).toThrow(StateKeyError);
    // 1100 bytes of UTF-8 escape to 3300 characters.
    expect(() => encodeKvKey('\u00e9'.repeat(550))).toThrow(/once escaped/);
  });
});

describe('CLI argument parsing for tail and replay', () => {
  it('parses relative durations and ISO times, refuses the rest', () => {
    const now = Date.parse('2025-01-01T12:00:00Z');
    expect(parseTimeArg('10m', now).toISOString()).toBe('2025-01-01T11:50:00.000Z');
    expect(parseTimeArg('90s', now).toISOString()).toBe('2025-01-01T11:58:30.000Z');
    expect(parseTimeArg('2h', now).toISOString()).toBe('2025-01-01T10:00:00.000Z');
    expect(parseTimeArg('1d', now).toISOString()).toBe('2024-12-31T12:00:00.000Z');
    expect(parseTimeArg('2024-06-01T08:30:00Z', now).toISOString()).toBe('2024-06-01T08:30:00.000Z');
    expect(() => parseTimeArg('10', now)).toThrow(/duration like 10m/);
    expect(() => parseTimeArg('soon', now)).toThrow(/duration like 10m/);
    expect(() => parseTimeArg('2024-13-45', now)).toThrow(/duration like 10m/);
  });

  it('--match requires every header=value to hold', () => {
    const event = FsEvent.create('PRESENCE_IN').add('status', 'CS_ROUTING').add('from', 'a=b@x');
    expect(parseMatches(['status=CS_ROUTING'])(event)).toBe(true);
    expect(parseMatches(['Status=CS_ROUTING', 'from=a=b@x'])(event)).toBe(true);
    expect(parseMatches(['status=answered'])(event)).toBe(false);
    expect(parseMatches([])(event)).toBe(true);
    expect(() => parseMatches(['novalue'])).toThrow(/header=value/);
  });
});
