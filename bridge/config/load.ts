import { readFileSync } from 'node:fs';
import { hostname as systemHostname, networkInterfaces } from 'node:os';
import { XMLParser } from 'fast-xml-parser';
import { BoardExposedError, ConfigError } from '../errors.js';
import { Bindings } from '../pipeline/bindings.js';
import { peerDurableName, remotePeers } from '../transports/nats/permissions.js';
import { FORMATS, LEGACY_PARAMS, PARAMS, envName, type ParamSpec } from './schema.js';
import { parseMulticastKey, type MulticastKey } from './multicast-key.js';
import type { BoardConfig, BridgeConfig, SecureMulticastConfig } from './types.js';

/** Raw string values by section, then param name. */
type RawValues = Map<string, Map<string, string>>;

export type ConfigFlavour = 'event_bridge' | 'event_multicast';

export interface LoadedConfig {
  config: BridgeConfig;
  flavour: ConfigFlavour;
  /** Things FreeSWITCH would have accepted silently but an operator should know. */
  warnings: string[];
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  isArray: (name) => name === 'param' || name === 'consumer' || name === 'configuration' || name === 'section',
  parseAttributeValue: false,
  trimValues: true,
});

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, '(file)', `cannot be read: ${(err as Error).message}`);
  }
  return loadConfigText(text, file, env);
}

/** Parse config XML; `file` names the source in every error message. */
export function loadConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const configuration = findConfiguration(text, file);
  const name = String(configuration.name ?? '');
  const warnings: string[] = [];
  let raw: RawValues;
  let flavour: ConfigFlavour;
  if (name === 'event_multicast.conf') {
    flavour = 'event_multicast';
    raw = readLegacy(configuration, file, warnings);
  } else if (name === 'event_bridge.conf') {
    flavour = 'event_bridge';
    raw = readSections(configuration, file);
  } else {
    throw new ConfigError(file, 'configuration', `expected <configuration name="event_bridge.conf"> or name="event_multicast.conf", found ${JSON.stringify(name)}`);
  }
  const config = buildConfig(raw, file, env, flavour, warnings);
  return { config, flavour, warnings };
}

function findConfiguration(text: string, file: string): Record<string, unknown> {
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(text, true) as Record<string, unknown>;
  } catch (err) {
    const detail = (err as { err?: { msg?: string; line?: number } }).err;
    throw new ConfigError(file, '(xml)', detail ? `${detail.msg} at line ${detail.line}` : String(err));
  }
  // A standalone conf file, or the same inside FreeSWITCH's <document><section name="configuration">.
  const direct = doc.configuration as Record<string, unknown>[] | undefined;
  if (direct?.length) return direct[0];
  const sections = ((doc.document as Record<string, unknown> | undefined)?.section ?? []) as Record<string, unknown>[];
  for (const section of sections) {
    const inner = section.configuration as Record<string, unknown>[] | undefined;
    if (inner?.length) return inner[0];
  }
  throw new ConfigError(file, 'configuration', 'no <configuration> element');
}

function paramsOf(element: unknown, file: string, where: string): Map<string, string> {
  const out = new Map<string, string>();
  if (element === undefined || element === null || element === '') return out;
  const params = ((element as Record<string, unknown>).param ?? []) as Record<string, unknown>[];
  for (const param of params) {
    const name = param.name;
    if (typeof name !== 'string' || name === '') throw new ConfigError(file, `${where}/param`, 'has no name attribute');
    if (param.value === undefined) throw new ConfigError(file, name, `has no value attribute (in <${where}>)`);
    if (out.has(name)) throw new ConfigError(file, name, `is set twice in <${where}>`);
    out.set(name, String(param.value));
  }
  return out;
}

function readSections(configuration: Record<string, unknown>, file: string): RawValues {
  const raw: RawValues = new Map();
  const known = new Set(PARAMS.map((p) => (p.section.startsWith('consumer:') ? 'consumers' : p.section)));
  for (const [key, element] of Object.entries(configuration)) {
    if (key === 'name' || key === 'description') continue;
    if (!known.has(key)) throw new ConfigError(file, `<${key}>`, `unknown section; expected one of ${[...known].join(', ')}`);
    if (key === 'consumers') {
      const consumers = ((element as Record<string, unknown>)?.consumer ?? []) as Record<string, unknown>[];
      for (const consumer of consumers) {
        const section = `consumer:${String(consumer.name ?? '')}`;
        raw.set(section, paramsOf(consumer, file, section));
      }
      continue;
    }
    const list = Array.isArray(element) ? element : [element];
    if (list.length > 1) throw new ConfigError(file, `<${key}>`, 'section appears twice');
    raw.set(key, paramsOf(list[0], file, key));
  }
  return raw;
}

/** mod_event_multicast's own file, read as is: its params become the multicast section. */
function readLegacy(configuration: Record<string, unknown>, file: string, warnings: string[]): RawValues {
  const settings = paramsOf(configuration.settings, file, 'settings');
  const multicast = new Map<string, string>();
  const bindings = new Map<string, string>();
  for (const [rawName, value] of settings) {
    const name = rawName.toLowerCase(); // the module compares with strcasecmp
    if (!(LEGACY_PARAMS as readonly string[]).includes(name)) {
      warnings.push(`${file}: param "${rawName}" is not a mod_event_multicast param; ignored as the module ignores it`);
      continue;
    }
    switch (name) {
      case 'address': {
        const addresses = value.replace(/\s/g, '').split(',').filter(Boolean);
        if (addresses.length > 1) warnings.push(`${file}: param "address" lists ${addresses.length} groups; the bridge uses the first (${addresses[0]})`);
        multicast.set('address', addresses[0] ?? '');
        break;
      }
      case 'source_address':
        if (value.trim() !== '0.0.0.0') multicast.set('interface', value.trim());
        break;
      case 'source_address_ipv6':
        warnings.push(`${file}: param "source_address_ipv6" ignored: the bridge speaks IPv4 multicast only`);
        break;
      case 'bindings':
        bindings.set('multicast', value);
        break;
      default:
        multicast.set(name, value.trim());
    }
  }
  return new Map([
    ['multicast', multicast],
    ['bindings', bindings],
  ]);
}

function buildConfig(raw: RawValues, file: string, env: NodeJS.ProcessEnv, flavour: ConfigFlavour, warnings: string[]): BridgeConfig {
  for (const [section, params] of raw) {
    for (const name of params.keys()) {
      if (!PARAMS.some((p) => p.section === section && p.name === name)) {
        const candidates = PARAMS.filter((p) => p.section === section).map((p) => p.name);
        if (candidates.length === 0) throw new ConfigError(file, `<${section.replace('consumer:', 'consumer name=')}>`, 'unknown section');
        throw new ConfigError(file, name, `unknown param in <${section}>; known: ${candidates.join(', ')}`);
      }
    }
  }
  const values = new Map<string, unknown>();
  for (const spec of PARAMS) {
    const variable = envName(spec);
    const fromEnv = env[variable];
    const source = fromEnv !== undefined ? `environment ${variable}` : file;
    const text = fromEnv ?? raw.get(spec.section)?.get(spec.name) ?? spec.default;
    values.set(`${spec.section}/${spec.name}`, convert(spec, text, source, flavour, warnings));
  }
  const get = <T>(section: string, name: string): T => values.get(`${section}/${name}`) as T;
  const str = (section: string, name: string) => get<string>(section, name);
  const num = (section: string, name: string) => get<number>(section, name);
  const bool = (section: string, name: string) => get<boolean>(section, name);
  const optional = (section: string, name: string) => str(section, name) || undefined;

  const multicastAddress = str('multicast', 'address');
  const psk = str('multicast', 'psk');
  if (Buffer.byteLength(psk) > 72) warnings.push(`${file}: param "psk" is ${Buffer.byteLength(psk)} bytes; Blowfish uses only the first 72`);
  // Where a param's value came from, for errors found after conversion.
  const origin = (section: string, name: string): string => (env[envName({ section, name })] !== undefined ? `environment ${envName({ section, name })}` : file);
  const secure = secureMulticast(origin, str('multicast', 'secure-key'), str('multicast', 'secure-accept-key'), psk, num('multicast', 'secure-max-age'), num('multicast', 'secure-replay-window'));

  const nodeName = str('settings', 'node-name') || systemHostname();
  const tlsCa = optional('nats', 'tls-ca');
  const tlsCert = optional('nats', 'tls-cert');
  const tlsKey = optional('nats', 'tls-key');
  const natsEnabled = flavour === 'event_bridge' && bool('nats', 'enabled');
  const servers = get<string[]>('nats', 'servers');
  if (natsEnabled && servers.length === 0) throw new ConfigError(file, 'servers', 'NATS is enabled but no server is given');
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ConfigError(file, tlsCert ? 'tls-key' : 'tls-cert', 'tls-cert and tls-key go together');
  const peers = get<string[]>('nats', 'peers');
  const peerDurables = new Map<string, string>();
  for (const peer of remotePeers(peers, nodeName)) {
    const durable = peerDurableName(str('nats', 'durable-prefix'), nodeName, peer);
    const other = peerDurables.get(durable);
    // One durable for two peers: one of them would never be heard.
    if (other !== undefined) throw new ConfigError(file, 'peers', `${JSON.stringify(other)} and ${JSON.stringify(peer)} map to the same durable consumer name ${durable}`);
    peerDurables.set(durable, peer);
  }
  // JetStream refuses a stream whose duplicate window outlasts its max age.
  if (num('nats', 'duplicate-window') > num('nats', 'stream-max-age')) {
    throw new ConfigError(file, 'duplicate-window', `${num('nats', 'duplicate-window')} ms is longer than stream-max-age (${num('nats', 'stream-max-age')} ms); JetStream refuses such a stream`);
  }
  const dbPath = str('consumer:location', 'db-path');
  const board =
    bool('metrics', 'enabled') && bool('metrics', 'board')
      ? boardConfig(
          { host: str('metrics', 'host'), token: optional('metrics', 'board-token'), user: str('metrics', 'board-user'), password: optional('metrics', 'board-password'), public: bool('metrics', 'board-public') },
          file,
          warnings,
        )
      : null;

  return {
    file,
    node: {
      name: nodeName,
      hostname: str('settings', 'hostname') || systemHostname(),
      ipv4: str('settings', 'ipv4') || firstIpv4(),
      cluster: str('settings', 'cluster'),
    },
    esl: {
      host: str('esl', 'host'),
      port: num('esl', 'port'),
      password: str('esl', 'password'),
      reconnectMaxMs: num('esl', 'reconnect-max'),
      queueMaxEvents: num('esl', 'queue-max-events'),
      queueMaxBytes: num('esl', 'queue-max-bytes'),

      maxFrameBytes: num('esl', 'max-frame-bytes'),
      commandTimeoutMs: num('esl', 'command-timeout'),
    },
    inject: { connections: num('inject', 'connections'), queueMaxBytes: num('inject', 'queue-max-bytes') },
    multicast: {
      enabled: bool('multicast', 'enabled'),
      address: multicastAddress,
      port: num('multicast', 'port'),
      bindAddress: str('multicast', 'bind-address'),
      interface: str('multicast', 'interface'),
      ttl: num('multicast', 'ttl'),
      loopback: bool('multicast', 'loopback'),
      psk: psk === '' ? null : psk,
      secure,
      bindings: get<Bindings>('bindings', 'multicast'),
      receiveBufferBytes: num('multicast', 'receive-buffer'),
      peerTimeoutMs: num('multicast', 'peer-timeout'),
      maxPeers: num('multicast', 'max-peers'),
      peerForgetMs: num('multicast', 'peer-forget'),
      maxDatagramBytes: num('multicast', 'max-datagram-bytes'),
    },
    nats: {
      enabled: natsEnabled,
      servers,
      subjectPrefix: str('nats', 'subject-prefix'),
      bindings: get<Bindings>('bindings', 'nats'),
      stream: {
        name: str('nats', 'stream-name'),
        maxAgeMs: num('nats', 'stream-max-age'),
        maxBytes: num('nats', 'stream-max-bytes'),
        duplicateWindowMs: num('nats', 'duplicate-window'),
        replicas: num('nats', 'replicas'),
        storage: str('nats', 'stream-storage') as 'file' | 'memory',
      },
      payloadFormat: str('nats', 'payload-format') as 'plain' | 'json',
      durablePrefix: str('nats', 'durable-prefix'),
      peers,
      ackWaitMs: num('nats', 'ack-wait'),
      buffer: { maxEvents: num('nats', 'buffer-max-events'), maxBytes: num('nats', 'buffer-max-bytes') },
      maxInFlight: num('nats', 'max-in-flight'),
      auth: {
        user: optional('nats', 'user'),
        pass: optional('nats', 'pass'),
        token: optional('nats', 'token'),
        nkeySeed: optional('nats', 'nkey-seed'),
        credsFile: optional('nats', 'creds-file'),
      },
      tls: tlsCa || tlsCert ? { ca: tlsCa, cert: tlsCert, key: tlsKey } : null,
      kv: { locationBucket: str('nats', 'kv-location-bucket'), blfBucket: str('nats', 'kv-blf-bucket') },
    },
    dedup: { maxEntries: num('dedup', 'max-entries'), ttlMs: num('dedup', 'ttl'), journal: str('dedup', 'journal') },
    consumers: {
      blf: { enabled: bool('consumer:blf', 'enabled'), legacyParity: bool('consumer:blf', 'legacy-parity'), stateBucket: str('nats', 'kv-blf-bucket') },
      location: {
        enabled: bool('consumer:location', 'enabled'),
        sink: str('consumer:location', 'sink') as 'sqlite' | 'esl',
        dbPath,
        flushMs: num('consumer:location', 'flush-interval'),
        flushMaxRows: num('consumer:location', 'flush-max-rows'),
        busyTimeoutMs: num('consumer:location', 'busy-timeout'),
        peerDownGraceMs: num('consumer:location', 'peer-down-grace'),
        legacyParity: bool('consumer:location', 'legacy-parity'),
        stateBucket: str('nats', 'kv-location-bucket'),
        addressOverrides: get<Record<string, string>>('consumer:location', 'address-overrides'),
        expiryMarginMs: num('consumer:location', 'expiry-margin'),
        maxClockSkewMs: num('consumer:location', 'max-clock-skew'),
      },
    },
    metrics: { enabled: bool('metrics', 'enabled'), host: str('metrics', 'host'), port: num('metrics', 'port'), board },
    logLevel: str('settings', 'log-level'),
    statsIntervalMs: num('settings', 'stats-interval'),
  };
}

const TRUE = new Set(['yes', 'on', 'true', 't', 'enabled', 'active', 'allow', '1']);
const FALSE = new Set(['no', 'off', 'false', 'f', 'disabled', 'inactive', 'disallow', '0']);
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const BYTE_UNITS: Record<string, number> = { b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

function convert(spec: ParamSpec, text: string, source: string, flavour: ConfigFlavour, warnings: string[]): unknown {
  const fail = (problem: string): never => {
    throw new ConfigError(source, spec.name, problem);
  };
  const value = text.trim();
  const ranged = (n: number, unit = ''): number => {
    if (n === 0 && spec.zeroDisables) return n;
    const off = spec.zeroDisables ? ' (or 0: off)' : '';
    if (spec.min !== undefined && n < spec.min) fail(`${value} is below the minimum ${spec.min}${unit}${off}`);
    if (spec.max !== undefined && n > spec.max) fail(`${value} is above the maximum ${spec.max}${unit}`);
    return n;
  };
  /** A string param with a default is required: empty would silently mean something else (db-path "" is an in-memory database). */
  const formatted = (item: string, what = ''): string => {
    if (item === '') {
      if (spec.default !== '') fail(`${what}is empty; the default is ${JSON.stringify(spec.default)}`);
      return item;
    }
    const problem = spec.format === undefined ? undefined : FORMATS[spec.format].check(item);
    // A secret is never echoed, not even a wrong one: it is often the right one mistyped.
    if (problem !== undefined) fail(spec.type === 'secret' ? `${what}${problem}` : `${what}${JSON.stringify(item)} ${problem}`);
    return item;
  };
  switch (spec.type) {
    case 'string':
      return formatted(value);
    case 'secret':
      return formatted(text); // a key or password may legitimately start or end with spaces
    case 'int': {
      if (!/^-?\d+$/.test(value)) fail(`${JSON.stringify(text)} is not a whole number`);
      return ranged(Number(value));
    }
    case 'bool': {
      const lower = value.toLowerCase();
      if (TRUE.has(lower)) return true;
      if (FALSE.has(lower)) return false;
      return fail(`${JSON.stringify(text)} is not a boolean (yes/no, true/false, on/off)`);
    }
    case 'duration': {
      const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(value);
      if (!match) return fail(`${JSON.stringify(text)} is not a duration (e.g. 500ms, 5s, 10m, 24h; a bare number is milliseconds)`);
      return ranged(Math.round(Number(match[1]) * DURATION_UNITS[(match[2] ?? 'ms').toLowerCase()]), ' ms');
    }
    case 'bytes': {
      const match = /^(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?$/i.exec(value);
      if (!match) return fail(`${JSON.stringify(text)} is not a size (e.g. 65507, 64KB, 8MB, 1GB)`);
      return ranged(Math.round(Number(match[1]) * BYTE_UNITS[(match[2] ?? 'b').toLowerCase()]), ' bytes');
    }
    case 'list': {
      const items = value.split(',').map((s) => s.trim()).filter(Boolean);
      if (items.length === 0) formatted('');
      return items.map((item) => formatted(item, 'entry '));
    }
    case 'map': {
      const map: Record<string, string> = {};
      for (const pair of value.split(',').map((s) => s.trim()).filter(Boolean)) {
        const eq = pair.indexOf('=');
        if (eq <= 0 || eq === pair.length - 1) fail(`${JSON.stringify(pair)} is not a name=value pair`);
        const name = pair.slice(0, eq).trim();
        const problem = FORMATS.text.check(name);
        if (problem !== undefined) fail(`name ${JSON.stringify(name)} ${problem}`);
        map[name] = formatted(pair.slice(eq + 1).trim(), `value of ${name}: `);
      }
      return map;
    }
    case 'enum':
      if (!spec.values!.includes(value)) fail(`${JSON.stringify(text)} is not one of ${spec.values!.join(', ')}`);
      return value;
    case 'bindings': {
      const bindings = Bindings.parse(value);
      if (bindings.unknown.length > 0) {
        const problem = `unknown event name(s) ${bindings.unknown.join(', ')} (after CUSTOM every token is a subclass)`;
        // mod_event_multicast skips unknown names silently; its file must keep loading unchanged.
        if (flavour === 'event_multicast') warnings.push(`${source}: param "bindings": ${problem}; ignored as the module ignores them`);
        else fail(problem);
      }
      return bindings;
    }
  }
}

/** 127.0.0.0/8, ::1 and localhost: only this host can connect. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * The board shows who is registered where and who is on a call: open on loopback, and
 * anywhere else only with a credential, or when the operator says so (and is told at
 * every start).
 */
function boardConfig(values: { host: string; token?: string; user: string; password?: string; public: boolean }, file: string, warnings: string[]): BoardConfig {
  const { host, token, user, password } = values;
  const guarded = token !== undefined || password !== undefined;
  if (!isLoopbackHost(host)) {
    if (!guarded && !values.public) throw new BoardExposedError(file, host);
    if (!guarded) warnings.push(`${file}: SECURITY: the cluster board is served WITHOUT authentication on ${host} (board-public is set): anyone who reaches it sees every user, address and call`);
    else warnings.push(`${file}: the board's credentials travel in clear over HTTP on ${host}: put a TLS proxy in front of it, or keep it on a trusted network`);
  }
  return { token, user, password, public: values.public };
}

/** The secure multicast params, checked together. Errors name the param, never the key. */
function secureMulticast(origin: (section: string, name: string) => string, keyText: string, acceptText: string, psk: string, maxAgeMs: number, replayWindow: number): SecureMulticastConfig | null {
  const refuse = (param: string, problem: string) => new ConfigError(origin('multicast', param), param, problem);
  const parse = (param: string, text: string): MulticastKey => {
    try {
      return parseMulticastKey(text);
    } catch (err) {
      throw refuse(param, (err as Error).message);
    }
  };
  if (keyText.trim() === '') {
    if (acceptText.trim() !== '') throw refuse('secure-accept-key', 'is set without secure-key: set the key datagrams are sent with first');
    return null;
  }
  // Accepting psk datagrams as well would let anyone with the weaker key inject: one format per group.
  if (psk !== '') throw refuse('secure-key', 'psk and secure-key exclude each other: psk is the legacy format, secure-key the authenticated one (docs/security.md)');
  const key = parse('secure-key', keyText);
  const acceptKey = acceptText.trim() === '' ? null : parse('secure-accept-key', acceptText);
  if (acceptKey && acceptKey.id === key.id) throw refuse('secure-accept-key', `has the same id (${key.id}) as secure-key: each key needs its own id`);
  return { key, acceptKey, maxAgeMs, replayWindow };
}

function firstIpv4(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) if (info.family === 'IPv4' && !info.internal) return info.address;
  }
  return '127.0.0.1';
}

/** Defaults only: what the bridge runs with when given no file (the demo's embedded default starts from it). */
export function defaultConfigXml(overrides: Record<string, Record<string, string>> = {}): string {
  const sections = new Map<string, Map<string, string>>();
  for (const [section, params] of Object.entries(overrides)) sections.set(section, new Map(Object.entries(params)));
  let xml = '<configuration name="event_bridge.conf" description="fs-event-bridge">\n';
  const consumers: string[] = [];
  for (const [section, params] of sections) {
    const body = [...params].map(([n, v]) => `    <param name="${escapeXml(n)}" value="${escapeXml(v)}"/>`).join('\n');
    if (section.startsWith('consumer:')) consumers.push(`    <consumer name="${section.slice(9)}">\n${body.replace(/^/gm, '  ')}\n    </consumer>`);
    else xml += `  <${section}>\n${body}\n  </${section}>\n`;
  }
  if (consumers.length) xml += `  <consumers>\n${consumers.join('\n')}\n  </consumers>\n`;
  return xml + '</configuration>\n';
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
