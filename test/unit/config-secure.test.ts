import { describe, expect, it } from 'vitest';
import { loadConfigText } from '../../bridge/config/load.js';
import { ConfigError } from '../../bridge/errors.js';

const xml = (params: Record<string, string>) =>
  `<configuration name="event_bridge.conf"><multicast>${Object.entries(params)
    .map(([name, value]) => `<param name="${name}" value="${value}"/>`)
    .join('')}</multicast></configuration>`;
const KEY = 'a1'.repeat(32);
const OTHER = 'b2'.repeat(32);

function refusal(params: Record<string, string>, env: NodeJS.ProcessEnv = {}): string {
  try {
    loadConfigText(xml(params), '/etc/fs/bridge.xml', env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('secure multicast config', () => {
  it('is off by default and on with secure-key, with its defaults', () => {
    expect(loadConfigText(xml({}), 'f', {}).config.multicast.secure).toBeNull();
    const secure = loadConfigText(xml({ 'secure-key': `4:${KEY}` }), 'f', {}).config.multicast.secure!;
    expect(secure.key.id).toBe(4);
    expect(secure.key.key.toString('hex')).toBe(KEY);
    expect(secure).toMatchObject({ acceptKey: null, maxAgeMs: 10_000, replayWindow: 1024 });
  });

  it('takes the keys from the environment, which wins over the file', () => {
    const env = { FSB_MULTICAST_SECURE_KEY: `2:${OTHER}`, FSB_MULTICAST_SECURE_ACCEPT_KEY: `1:${KEY}` };
    const secure = loadConfigText(xml({ 'secure-key': `1:${KEY}` }), 'f', env).config.multicast.secure!;
    expect(secure.key.id).toBe(2);
    expect(secure.acceptKey?.id).toBe(1);
  });

  it('refuses bad keys, a shared id, psk with it, an accept key alone and out-of-bounds limits, naming the param and never the key', () => {
    const cases: [Record<string, string>, string][] = [
      [{ 'secure-key': KEY }, 'param "secure-key": expected <id>:<key>'],
      [{ 'secure-key': `1:${KEY.slice(2)}` }, 'param "secure-key": key 1 must be 32 bytes'],
      [{ 'secure-key': `300:${KEY}` }, 'param "secure-key": expected <id>:<key> with an id from 0 to 255'],
      [{ 'secure-key': `1:${KEY}`, 'secure-accept-key': `1:${OTHER}` }, 'param "secure-accept-key": has the same id (1)'],
      [{ 'secure-key': `1:${KEY}`, 'secure-accept-key': `2:${OTHER}zz` }, 'param "secure-accept-key": key 2 must be 32 bytes'],
      [{ 'secure-key': `1:${KEY}`, psk: 'legacy-psk' }, 'param "secure-key": psk and secure-key exclude each other'],
      [{ 'secure-accept-key': `2:${OTHER}` }, 'param "secure-accept-key": is set without secure-key'],
      [{ 'secure-key': `1:${KEY}`, 'secure-max-age': '500ms' }, 'param "secure-max-age": 500ms is below the minimum 1000 ms'],
      [{ 'secure-key': `1:${KEY}`, 'secure-max-age': '11m' }, 'param "secure-max-age": 11m is above the maximum 600000 ms'],
      [{ 'secure-key': `1:${KEY}`, 'secure-replay-window': '32' }, 'param "secure-replay-window": 32 is below the minimum 64'],
      [{ 'secure-key': `1:${KEY}`, 'secure-replay-window': '70000' }, 'param "secure-replay-window": 70000 is above the maximum 65536'],
    ];
    for (const [params, expected] of cases) {
      const message = refusal(params);
      expect(message, JSON.stringify(params)).toContain(expected);
      expect(message).not.toContain(KEY.slice(2, 40));
      expect(message).not.toContain(OTHER.slice(2, 40));
    }
    expect(refusal({}, { FSB_MULTICAST_SECURE_KEY: `9:${KEY.slice(4)}` })).toContain('environment FSB_MULTICAST_SECURE_KEY');
  });

  it('keeps the keys out of anything that serializes the config', () => {
    const { config } = loadConfigText(xml({ 'secure-key': `1:${KEY}`, 'secure-accept-key': `2:${OTHER}` }), 'f', {});
    const text = JSON.stringify(config);
    expect(text).not.toContain(KEY.slice(0, 16));
    expect(text).not.toContain(OTHER.slice(0, 16));
    expect(text).toContain('"secure"');
  });
});
