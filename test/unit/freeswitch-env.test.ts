import { describe, expect, it } from 'vitest';
import { LAB_VARIABLES, LabEnvError, loadLabEnv } from '../freeswitch/env.js';

const LAB = {
  FSB_FS_DOMAIN: '127.0.0.1',
  FSB_FS_PASSWORD: '1234',
  FSB_FS_USERS: '1000-1019',
  FSB_FS_PHONE_IP: '10.99.0.3',
  FSB_FS_A_ESL: '10.99.0.1:8021',
  FSB_FS_A_ESL_PASSWORD: 'ClueCon',
  FSB_FS_A_SIP: '10.99.0.1:5060',
  FSB_FS_A_EXEC: 'ip netns exec labA',
  FSB_FS_B_ESL: '10.99.0.2:8022',
  FSB_FS_B_ESL_PASSWORD: 'ClueCon',
  FSB_FS_B_SIP: '10.99.0.2:5070',
  FSB_FS_B_EXEC: 'none',
  FSB_FS_MULTICAST: '225.1.1.1:4242',
  FSB_FS_LEGACY_NODE: 'a',
};

describe('npm run test:freeswitch environment', () => {
  it('reads two nodes, the phones and the group from the variables', () => {
    const env = loadLabEnv(LAB);
    expect(env.a).toEqual({ key: 'a', esl: { host: '10.99.0.1', port: 8021 }, eslPassword: 'ClueCon', sip: { host: '10.99.0.1', port: 5060 }, exec: ['ip', 'netns', 'exec', 'labA'] });
    expect(env.b.exec).toEqual([]);
    expect(env.users).toHaveLength(20);
    expect(env.multicast).toEqual({ host: '225.1.1.1', port: 4242 });
    expect(env.psk).toBeNull();
    expect(loadLabEnv({ ...LAB, FSB_FS_PSK: 'fixture-psk' }).psk).toBe('fixture-psk');
    expect(env.secureKey).toBeNull();
    expect(loadLabEnv({ ...LAB, FSB_FS_SECURE_KEY: `1:${'ab'.repeat(32)}` }).secureKey).toBe(`1:${'ab'.repeat(32)}`);
  });

  it('refuses the legacy psk and secure multicast together (a bridge runs one or the other)', () => {
    expect(() => loadLabEnv({ ...LAB, FSB_FS_PSK: 'fixture-psk', FSB_FS_SECURE_KEY: `1:${'ab'.repeat(32)}` })).toThrow('FSB_FS_PSK and FSB_FS_SECURE_KEY are both set');
  });

  it('refuses to start with every missing variable named and explained', () => {
    let error: unknown;
    try {
      loadLabEnv({});
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(LabEnvError);
    const message = (error as Error).message;
    for (const name of Object.keys(LAB_VARIABLES)) expect(message).toContain(`${name} is missing`);
    expect(message).toContain('docs/interop.md');
  });

  it('names a malformed value', () => {
    const attempt = () => loadLabEnv({ ...LAB, FSB_FS_A_ESL: '10.99.0.1', FSB_FS_USERS: '1000-1003', FSB_FS_LEGACY_NODE: 'c' });
    expect(attempt).toThrow('FSB_FS_A_ESL="10.99.0.1" is not valid');
    expect(attempt).toThrow('FSB_FS_USERS="1000-1003" is not valid');
    expect(attempt).toThrow('FSB_FS_LEGACY_NODE="c" is not valid');
  });
});
