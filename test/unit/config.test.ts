import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadConfigFile, loadConfigText, defaultConfigXml } from '../../bridge/config/load.js';
import { fixturePath } from '../support/fixtures.js';
import { FsEvent } from '../../bridge/event/event.js';

const repoConfig = (name: string) => fileURLToPath(new URL(`../../config/${name}`, import.meta.url));
const xml = (inner: string) => `<configuration name="event_bridge.conf">${inner}</configuration>`;

describe('config loader', () => {
  it('reads the shipped event_bridge.conf.xml', () => {
    const { config, flavour, warnings } = loadConfigFile(repoConfig('event_bridge.conf.xml'), {});
    expect(flavour).toBe('event_bridge');
    expect(warnings).toEqual([]);
    expect(config.node).toMatchObject({ name: 'fs-a', hostname: 'node-a', ipv4: '10.99.0.1' });
    expect(config.esl).toMatchObject({ host: '127.0.0.1', port: 8021, password: 'ClueCon', reconnectMaxMs: 800 });
    expect(config.multicast).toMatchObject({ enabled: true, address: '225.1.1.1', port: 4242, ttl: 1, loopback: false, psk: null, receiveBufferBytes: 32 * 1024 * 1024 });
    expect(config.nats.enabled).toBe(true);
    expect(config.nats.stream.maxAgeMs).toBe(24 * 3600 * 1000);
    expect(config.consumers.location.enabled).toBe(true);
    expect(config.multicast.bindings.matches(FsEvent.create('CUSTOM', 'sofia::register'))).toBe(true);
  });

  it.each([
    ['plain', 'event_multicast.conf.xml', null],
    ['psk', 'event_multicast-psk.conf.xml', 'fixture-psk-0123456789'],
  ])('accepts the legacy %s event_multicast.conf.xml unchanged', (_kind, file, psk) => {
    const { config, flavour } = loadConfigFile(fixturePath('reference', 'conf', file), {});
    expect(flavour).toBe('event_multicast');
    expect(config.multicast).toMatchObject({ enabled: true, address: '225.1.1.1', port: 4242, ttl: 1, loopback: false, psk });
    expect(config.nats.enabled).toBe(false);
    const b = config.multicast.bindings;
    expect([...b.names].sort()).toEqual(['CUSTOM', 'HEARTBEAT', 'PRESENCE_IN', 'RE_SCHEDULE']);
    expect([...b.subclasses].sort()).toEqual(['multicast::event', 'sofia::expire', 'sofia::register', 'sofia::unregister']);
  });

  it('names the file, the param and the problem', () => {
    const bad = (inner: string) => () => loadConfigText(xml(inner), '/etc/fs/bad.xml', {});
    expect(bad('<esl><param name="port" value="80x"/></esl>')).toThrow('/etc/fs/bad.xml: param "port": "80x" is not a whole number');
    expect(bad('<esl><param name="prot" value="1"/></esl>')).toThrow(/param "prot": unknown param in <esl>; known: host, port/);
    expect(bad('<multicast><param name="ttl" value="300"/></multicast>')).toThrow(/param "ttl": 300 is above the maximum 255/);
    expect(bad('<multicast><param name="address" value="10.0.0.1"/></multicast>')).toThrow(/not an IPv4 multicast group/);
    expect(bad('<bindings><param name="nats" value="PRESENCE_INN"/></bindings>')).toThrow(/unknown event name\(s\) PRESENCE_INN/);
    expect(bad('<esl><param name="reconnect-max" value="30s"/></esl>')).toThrow(/above the maximum 5000 ms/);
    expect(bad('<oops/>')).toThrow(/<oops>: unknown section/);
    expect(bad('<esl><param name="port" value="1"/><param name="port" value="2"/></esl>')).toThrow(/is set twice/);
    expect(() => loadConfigText('<configuration name="x.conf"/>', 'f.xml', {})).toThrow(/expected <configuration name="event_bridge.conf">/);
    expect(() => loadConfigText('<configuration name="event_bridge.conf"><esl>', 'f.xml', {})).toThrow(/f\.xml: \(xml\): /);
    expect(() => loadConfigFile('/nonexistent/x.xml', {})).toThrow(/cannot be read/);
  });

  it('lets environment variables override params, naming the variable in errors', () => {
    const { config } = loadConfigText(xml('<esl><param name="password" value="ClueCon"/></esl>'), 'f.xml', {
      FSB_ESL_PASSWORD: 's3cret',
      FSB_NODE_NAME: 'fs-z',
      FSB_NATS_SERVERS: 'nats://a:4222, nats://b:4222',
      FSB_CONSUMER_LOCATION_DB_PATH: '/tmp/x.db',
    });
    expect(config.esl.password).toBe('s3cret');
    expect(config.node.name).toBe('fs-z');
    expect(config.nats.servers).toEqual(['nats://a:4222', 'nats://b:4222']);
    expect(config.consumers.location.dbPath).toBe('/tmp/x.db');
    expect(() => loadConfigText(xml(''), 'f.xml', { FSB_ESL_PORT: 'abc' })).toThrow('environment FSB_ESL_PORT: param "port"');
  });

  it('warns about, but accepts, what mod_event_multicast would silently ignore', () => {
    const legacy = `<configuration name="event_multicast.conf"><settings>
      <param name="address" value="225.1.1.1,225.1.1.2"/><param name="port" value="4242"/>
      <param name="bindings" value="HEARTBEAT BOGUS CUSTOM a::b"/><param name="frobnicate" value="1"/>
    </settings></configuration>`;
    const { config, warnings } = loadConfigText(legacy, 'legacy.xml', {});
    expect(config.multicast.address).toBe('225.1.1.1');
    expect(warnings.join('\n')).toMatch(/lists 2 groups/);
    expect(warnings.join('\n')).toMatch(/BOGUS/);
    expect(warnings.join('\n')).toMatch(/frobnicate/);
  });

  it('parses durations, sizes and FreeSWITCH booleans', () => {
    const { config } = loadConfigText(
      xml('<multicast><param name="loopback" value="on"/><param name="receive-buffer" value="2MB"/><param name="peer-timeout" value="1.5s"/></multicast>'),
      'f.xml',
      {},
    );
    expect(config.multicast.loopback).toBe(true);
    expect(config.multicast.receiveBufferBytes).toBe(2 * 1024 * 1024);
    expect(config.multicast.peerTimeoutMs).toBe(1500);
  });

  it('builds a config from defaultConfigXml overrides', () => {
    const text = defaultConfigXml({ settings: { 'node-name': 'hub' }, 'consumer:blf': { enabled: 'true' } });
    const { config } = loadConfigText(text, 'embedded', {});
    expect(config.node.name).toBe('hub');
    expect(config.consumers.blf.enabled).toBe(true);
  });

  it('reads nats/peers (empty by default) and refuses two peers that would share a durable consumer', () => {
    const load = (peers?: string) =>
      loadConfigText(defaultConfigXml({ settings: { 'node-name': 'fs-a' }, nats: { enabled: 'true', ...(peers === undefined ? {} : { peers }) } }), 'f.xml', {}).config.nats.peers;
    expect(load()).toEqual([]);
    expect(load('fs-a, fs-b,fs-c')).toEqual(['fs-a', 'fs-b', 'fs-c']);
    expect(() => load('fs-a,fs.b,fs_b')).toThrow(/f\.xml: param "peers": "fs\.b" and "fs_b" map to the same durable consumer name fsb-fs-a__fs_b/);
  });

  it('reads the stream storage, file by default, and refuses anything but file or memory', () => {
    const load = (storage?: string) => loadConfigText(defaultConfigXml(storage ? { nats: { enabled: 'true', 'stream-storage': storage } } : {}), 'f.xml', {}).config.nats.stream.storage;
    expect(load()).toBe('file');
    expect(load('memory')).toBe('memory');
    expect(() => load('disk')).toThrow(/f\.xml: param "stream-storage": "disk" is not one of file, memory/);
  });

  it('reads name=address maps and rejects malformed pairs', () => {
    const text = defaultConfigXml({ 'consumer:location': { 'address-overrides': 'fs-a=192.0.2.1, node-b=192.0.2.2' } });
    expect(loadConfigText(text, 'f.xml', {}).config.consumers.location.addressOverrides).toEqual({ 'fs-a': '192.0.2.1', 'node-b': '192.0.2.2' });
    const bad = defaultConfigXml({ 'consumer:location': { 'address-overrides': 'fs-a' } });
    expect(() => loadConfigText(bad, 'f.xml', {})).toThrow(/param "address-overrides": "fs-a" is not a name=value pair/);
    // The dialplan dials db_data.data: a node whose profile is on another port than 5060 is written with it (config/dialplan/).
    const withPorts = defaultConfigXml({ 'consumer:location': { 'address-overrides': 'fs-a=10.99.0.1:5060,fs-b=node-b.example:5070,fs-c=[2001:db8::1]:5080,fs-d=2001:db8::2' } });
    expect(loadConfigText(withPorts, 'f.xml', {}).config.consumers.location.addressOverrides).toEqual({ 'fs-a': '10.99.0.1:5060', 'fs-b': 'node-b.example:5070', 'fs-c': '[2001:db8::1]:5080', 'fs-d': '2001:db8::2' });
    for (const [value, problem] of [
      ['10.99.0.1:0', /has port 0, outside 1 to 65535/],
      ['10.99.0.1:65536', /has port 65536/],
      ['10.99.0.1:', /is not an IP address or a host name, with an optional :port/],
      ['[::ffff:1.2.3]:5070', /has no valid host/],
      ['bad host:5070', /has no valid host/],
    ] as const) {
      const refused = defaultConfigXml({ 'consumer:location': { 'address-overrides': `fs-a=${value}` } });
      expect(() => loadConfigText(refused, 'f.xml', {})).toThrow(problem);
    }
  });
});
