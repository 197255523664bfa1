/**
 * Every param of the schema, table-driven: each has full bounds (a range for numbers,
 * a format for text), the loader accepts its default, its bounds and a good sample,
 * refuses what lies outside with an error naming the param (from the file and from the
 * environment alike), and whatever it accepts the bridge can be built with: `validate`
 * passes exactly what `run` can start with, short of what only the host can tell.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { validateStreamName } from '@nats-io/jetstream/internal';
import { validateBucket } from '@nats-io/kv/internal';
import { Bridge } from '../../bridge/bridge.js';
import { consumersFor } from '../../bridge/cli/commands/run.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { FORMATS, MAX_TIMER_MS, PARAMS, envName, type FormatName, type ParamSpec } from '../../bridge/config/schema.js';
import { createLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { SubjectMapper } from '../../bridge/transports/nats/subjects.js';

const GOOD: Record<FormatName, string[]> = {
  text: ['fs-a', 'Node A (lab)'],
  ipv4: ['10.0.0.1'],
  'multicast-group': ['239.1.2.3'],
  host: ['node-a.example.org', '::1', '192.0.2.7'],
  'host-port': ['192.0.2.7', '192.0.2.7:5070', 'node-b.example:5080', '::1', '[::1]:5060'],
  'nats-url': ['tls://10.0.0.1:4222', 'nats.example:4222', 'nats://user:pw@[::1]:4222'],
  'subject-prefix': ['fs.eu'],
  'jetstream-name': ['FS-EVENTS_2'],
  'kv-bucket': ['fsb_x-1'],
  path: ['/tmp/x.db'],
  'pem-or-path': ['/etc/ssl/ca.pem'],
  'multicast-key': [`2:${'ab'.repeat(32)}`, `7:${Buffer.alloc(32, 9).toString('base64')}`],
  secret: ['pa ss:w0rd'],
};

const BAD: Record<FormatName, string[]> = {
  text: ['a\nb', 'nul\0', 'x'.repeat(256)],
  ipv4: ['10.0.0', 'eth0', '256.1.1.1'],
  'multicast-group': ['10.0.0.1', '240.0.0.1'],
  host: ['bad host', 'a..b'],
  'host-port': ['bad host', 'a..b:5060', '192.0.2.7:0', '192.0.2.7:70000', '::1:5060x', '[node]:5060'],
  'nats-url': ['nats://a b:4222', 'nats://h:99999', 'http//x'],
  'subject-prefix': ['a..b', 'fs.*', 'f s', 'fs.>'],
  'jetstream-name': ['A.B', 'a b', 'x/y', 'a*'],
  'kv-bucket': ['a.b', 'a b', 'ü'],
  path: ['a\0b', ':memory:'],
  'pem-or-path': ['a\nb'],
  'multicast-key': ['1:abc', `256:${'ab'.repeat(32)}`, 'ab'.repeat(32)],
  secret: ['a\rb', 'a\nb', 'a\0b'],
};

const GARBAGE: Partial<Record<ParamSpec['type'], string>> = { int: '12x', duration: '5 parsecs', bytes: 'lots', bool: 'maybe', enum: 'nope', bindings: 'NOT_AN_EVENT' };

/** Params that cannot be set alone: the loader checks them against another. */
function companions(spec: ParamSpec, value: string): Record<string, string> {
  // An accepted key rotates in beside the key datagrams are sent with, under another id.
  if (spec.section === 'multicast' && spec.name === 'secure-accept-key' && value !== '') return { 'secure-key': `1:${'cd'.repeat(32)}` };
  if (spec.section !== 'nats' || value === '') return {};
  if (spec.name === 'tls-cert') return { 'tls-key': '/etc/ssl/key.pem' };
  if (spec.name === 'tls-key') return { 'tls-cert': '/etc/ssl/cert.pem' };
  // duplicate-window must fit in stream-max-age (JetStream refuses otherwise).
  if (spec.name === 'stream-max-age') return { 'duplicate-window': '100' };
  return {};
}

/** Every section enabled, so every param is read and every component is built. */
function xmlWith(spec: ParamSpec, value: string): string {
  const overrides: Record<string, Record<string, string>> = {
    nats: { enabled: 'yes' },
    'consumer:blf': { enabled: 'yes' },
    'consumer:location': { enabled: 'yes' },
  };
  overrides[spec.section] = { ...overrides[spec.section], [spec.name]: value, ...companions(spec, value) };
  return defaultConfigXml(overrides);
}

function accepted(spec: ParamSpec): string[] {
  const values = [spec.default];
  if (spec.min !== undefined) values.push(String(spec.min));
  if (spec.max !== undefined) values.push(String(spec.max));
  if (spec.zeroDisables) values.push('0');
  // An example with a <placeholder> shows the shape only (a real key there would get copied).
  if (spec.example && !/<[^>]+>/.test(spec.example)) values.push(spec.example);
  if (spec.format && spec.type !== 'map') values.push(...GOOD[spec.format]);
  if (spec.format && spec.type === 'map') values.push(...GOOD[spec.format].map((v) => `fs-a=${v}`));
  return values;
}

function refused(spec: ParamSpec): string[] {
  const values: string[] = [];
  if (GARBAGE[spec.type]) values.push(GARBAGE[spec.type]!);
  if (spec.min !== undefined && !spec.zeroDisables && spec.min > 0) values.push(String(spec.min - 1));
  if (spec.min !== undefined && spec.zeroDisables) values.push(String(spec.min - 1));
  if (spec.min === 0) values.push('-1');
  if (spec.max !== undefined) values.push(String(spec.max + 1));
  if (spec.format && spec.type !== 'map') values.push(...BAD[spec.format].filter((v) => spec.type !== 'list' || !v.includes(',')));
  if (spec.format && spec.type === 'map') values.push(...BAD[spec.format].map((v) => `fs-a=${v}`), 'bad\nname=10.0.0.1');
  if (spec.default !== '' && ['string', 'secret', 'list'].includes(spec.type)) values.push('');
  return values;
}

const silent = createLogger('silent');
const label = (spec: ParamSpec) => `${spec.section}/${spec.name}`;

describe('config schema bounds', () => {
  it('gives every param full bounds: a range for numbers, a format for text', () => {
    for (const spec of PARAMS) {
      if (['int', 'duration', 'bytes'].includes(spec.type)) {
        expect(spec.min, `${label(spec)} has no minimum`).toBeTypeOf('number');
        expect(spec.max, `${label(spec)} has no maximum`).toBeTypeOf('number');
      }
      if (['string', 'secret', 'list', 'map'].includes(spec.type)) expect(spec.format, `${label(spec)} has no format`).toBeDefined();
      if (spec.type === 'enum') expect(spec.values?.length, `${label(spec)} has no values`).toBeGreaterThan(0);
    }
  });

  it('keeps every duration that runs a timer within what Node timers can hold (2^31-1 ms)', () => {
    // stream-max-age goes to JetStream (nanoseconds), never to a Node timer.
    const notTimers = new Set(['nats/stream-max-age']);
    for (const spec of PARAMS.filter((p) => p.type === 'duration' && !notTimers.has(label(p)))) {
      expect(spec.max!, label(spec)).toBeLessThanOrEqual(MAX_TIMER_MS);
    }
    expect(() => loadConfigText(defaultConfigXml({ settings: { 'stats-interval': '30d' } }), 'f.xml', {})).toThrow(/param "stats-interval": 30d is above the maximum 86400000 ms/);
  });

  describe.each(PARAMS.map((spec) => [label(spec), spec] as const))('%s', (_name, spec) => {
    it('accepts its default, bounds and good samples, and the bridge can be built with each', () => {
      for (const value of accepted(spec)) {
        const { config } = loadConfigText(xmlWith(spec, value), 'f.xml', {});
        // What the loader accepts must not make a component refuse it later.
        const bridge = new Bridge(config, { logger: silent, metrics: new Metrics(), consumers: consumersFor(config) });
        expect(bridge.config).toBe(config);
      }
    });

    it('refuses values outside its bounds, naming the file or variable and the param', () => {
      for (const value of refused(spec)) {
        expect(() => loadConfigText(xmlWith(spec, value), '/etc/fs/f.xml', {}), `${label(spec)} = ${JSON.stringify(value)}`).toThrow(`/etc/fs/f.xml: param "${spec.name}"`);
        const env = { [envName(spec)]: value };
        expect(() => loadConfigText(xmlWith(spec, spec.default), 'f.xml', env), `${envName(spec)}=${JSON.stringify(value)}`).toThrow(`environment ${envName(spec)}: param "${spec.name}"`);
      }
    });
  });

  it('cross-checks: duplicate-window within stream-max-age', () => {
    const xml = defaultConfigXml({ nats: { enabled: 'yes', 'stream-max-age': '1m', 'duplicate-window': '2m' } });
    expect(() => loadConfigText(xml, 'f.xml', {})).toThrow(/param "duplicate-window": 120000 ms is longer than stream-max-age \(60000 ms\)/);
  });
});

describe('string formats agree with the code that later uses the value', () => {
  const anyText = fc.string({ unit: 'binary', maxLength: 40 });

  it('jetstream-name accepts only names nats.js accepts for streams and consumers', () => {
    fc.assert(
      fc.property(anyText, (name) => {
        if (name === '' || FORMATS['jetstream-name'].check(name) !== undefined) return;
        expect(() => validateStreamName(name)).not.toThrow();
      }),
      { numRuns: 2000 },
    );
  });

  it('kv-bucket accepts only names nats.js accepts for buckets', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, fc.stringMatching(/^[-\w.]{1,20}$/)), (name) => {
        if (name === '' || FORMATS['kv-bucket'].check(name) !== undefined) return;
        expect(() => validateBucket(name)).not.toThrow();
      }),
      { numRuns: 2000 },
    );
  });

  it('subject-prefix accepts exactly the prefixes the subject mapper takes', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, fc.stringMatching(/^[a-z.*>%]{1,12}$/)), (prefix) => {
        if (prefix === '') return;
        const ok = FORMATS['subject-prefix'].check(prefix) === undefined;
        if (ok) expect(() => new SubjectMapper(prefix, 'c')).not.toThrow();
        else expect(() => new SubjectMapper(prefix, 'c')).toThrow();
      }),
      { numRuns: 2000 },
    );
  });
});
