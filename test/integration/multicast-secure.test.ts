import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { createLan, JsonLineProcess, nodeInNetns, type Lan } from '../support/netns.js';
import { datagramFixtures } from '../support/fixtures.js';
import { CHILD_START_MS, until } from '../support/wait.js';
import type { NodeProcessConfig, SecureNodeConfig } from './multicast-node.js';

/**
 * Secure multicast between bridge transports in separate processes, each in its own
 * network namespace on one virtual LAN, with an eavesdropper that records the wire and
 * sends it back, and a bridge in legacy mode on the same group.
 */
const NODE_SCRIPT = fileURLToPath(new URL('./multicast-node.ts', import.meta.url));
const GROUP = '239.77.2.1';
const K1 = `1:${'4b'.repeat(32)}`;
const K2 = `2:${'7e'.repeat(32)}`;
/** Long enough that a replay after the slow restart below is refused as a replay, not as stale (the unit tests cover stale). */
const MAX_AGE = 600_000;
const BINDINGS = 'HEARTBEAT PRESENCE_IN CUSTOM sofia::register';

type Report = { type: string; [key: string]: unknown };
type Stats = { received: number; lost: number; drops: Record<string, number>; filtered: Record<string, number> };

let lan: Lan;
const running: JsonLineProcess<Report>[] = [];
const port = 15000 + (process.pid % 1000);

// ip(8) waits for the kernel's rtnl lock, which every namespace of every suite on the machine takes.
beforeAll(() => {
  lan = createLan('sec', 5);
}, CHILD_START_MS);
afterAll(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
  lan?.cleanup();
});

async function startNode(host: number, overrides: Partial<NodeProcessConfig>): Promise<JsonLineProcess<Report>> {
  const { netns, ip } = lan.hosts[host];
  const config: NodeProcessConfig = { nodeName: `fs-${'abcde'[host]}`, group: GROUP, port, interface: ip, psk: null, bindings: BINDINGS, report: 'events', ...overrides };
  const node = new JsonLineProcess<Report>(nodeInNetns(netns, NODE_SCRIPT, [JSON.stringify(config)]));
  running.push(node);
  // Starting a child loads TypeScript: slow on a busy machine, and nothing else waits on it.
  await node.waitFor((r) => r.type === 'ready', 120_000);
  return node;
}

async function stats(node: JsonLineProcess<Report>): Promise<Stats> {
  return (await node.request({ cmd: 'stats' }, 'stats')) as unknown as Stats;
}

const events = (node: JsonLineProcess<Report>) => node.reports.filter((r) => r.type === 'event');
const captured = (node: JsonLineProcess<Report>) => node.reports.filter((r) => r.type === 'datagram').map((r) => String(r.base64));
const header = (report: Report, name: string) => (report.headers as [string, string][]).find(([n]) => n === name)?.[1];
const reload = (node: JsonLineProcess<Report>, secure: SecureNodeConfig) => node.request({ cmd: 'reload', bindings: BINDINGS, psk: null, ttl: 1, secure }, 'reloaded');

describe('secure multicast between bridges on a virtual LAN', () => {
  it('delivers, refuses replays, tampering, legacy datagrams and retired keys, survives a key rotation and a sender restart; legacy-mode nodes drop it', async () => {
    const [a, b, eve, legacy, listener] = await Promise.all([
      startNode(0, { secure: { key: K1 } }),
      startNode(1, { secure: { key: K1, maxAgeMs: MAX_AGE } }),
      startNode(2, { nodeName: 'eve', report: 'capture' }),
      startNode(3, {}),
      // The `listen` command's code with the key: what an operator debugging the group sees.
      startNode(4, { report: 'listen', secure: { key: K1 } }),
    ]);

    // 1. Delivery, exact, and unreadable to a bridge without the key.
    a.send({ cmd: 'send', name: 'PRESENCE_IN', count: 5, headers: [['from', '1000@example.com']], body: 'body: kept\r\n' });
    await until(() => events(b).length === 5 && captured(eve).length === 5, 60_000);
    expect(events(b).map((r) => header(r, 'Event-Sequence'))).toEqual(['1', '2', '3', '4', '5']);
    expect(events(b).every((r) => r.node === 'fs-a' && r.body === 'body: kept\r\n' && header(r, 'from') === '1000@example.com')).toBe(true);
    await until(async () => (await stats(legacy)).drops['multicast-receive:secure_without_key'] === 5, 60_000);
    expect(events(legacy)).toHaveLength(0);
    const listened = await until(() => {
      const lines = listener.reports.filter((r) => 'headers' in r);
      return lines.length === 5 ? lines : null;
    }, 60_000);
    expect(listened.every((line) => line.mode === 'secure' && (line.headers as [string, string][]).at(-1)?.[1] === 'fs-a')).toBe(true);
    const firstFive = captured(eve);
    expect(firstFive.every((d) => !Buffer.from(d, 'base64').includes('1000@example.com'))).toBe(true);

    // 2. What the eavesdropper can do with it: replay (filtered, not injected), tamper, inject legacy datagrams.
    const tampered = Buffer.from(firstFive[0], 'base64');
    tampered[tampered.length - 20] ^= 0x01;
    eve.send({ cmd: 'raw', base64: [...firstFive, tampered.toString('base64'), datagramFixtures('multicast-plain')[0].bin.toString('base64'), datagramFixtures('multicast-psk')[0].bin.toString('base64')] });
    // The plain capture names fs-b as its sender: unauthenticated, so refused, not taken for our own datagram.
    await until(async () => {
      const s = await stats(b);
      return s.filtered['multicast-receive:replayed'] === 5 && s.drops['multicast-receive:bad_tag'] === 1 && s.drops['multicast-receive:not_secure'] === 2;
    }, 60_000);
    expect(events(b)).toHaveLength(5);

    // 3. Rotation to K2 without a gap: receivers first accept both, then senders switch, then K1 is retired.
    await reload(b, { key: K1, acceptKey: K2, maxAgeMs: MAX_AGE });
    await reload(a, { key: K2, acceptKey: K1 });
    a.send({ cmd: 'send', name: 'PRESENCE_IN', count: 2 });
    await until(() => events(b).length === 7 && captured(eve).length === 7, 60_000);
    expect(Buffer.from(captured(eve)[6], 'base64')[6]).toBe(2);
    await reload(b, { key: K2, maxAgeMs: MAX_AGE });
    await reload(a, { key: K2 });
    eve.send({ cmd: 'raw', base64: [firstFive[1]] });
    await until(async () => (await stats(b)).drops['multicast-receive:unknown_key_id'] === 1, 60_000);

    // 4. The sender restarts (new process: new epoch, counter from 1 again) and is accepted; its old datagrams stay replays.
    const beforeRestart = captured(eve)[6];
    await a.stop();
    const a2 = await startNode(0, { secure: { key: K2 } });
    a2.send({ cmd: 'send', name: 'HEARTBEAT' });
    await until(() => events(b).length === 8 && captured(eve).length === 8, 60_000);
    expect(header(events(b)[7], 'Event-Name')).toBe('HEARTBEAT');
    const afterRestart = Buffer.from(captured(eve).at(-1)!, 'base64');
    expect(afterRestart.readUInt32BE(20)).toBe(1);
    expect(afterRestart.subarray(8, 16).equals(Buffer.from(beforeRestart, 'base64').subarray(8, 16))).toBe(false);
    eve.send({ cmd: 'raw', base64: [beforeRestart] });
    await until(async () => (await stats(b)).filtered['multicast-receive:replayed'] === 6, 60_000);

    const final = await stats(b);
    expect(final.received).toBe(8);
    expect(final.lost).toBe(0);
    expect(final.drops).toEqual({ 'multicast-receive:bad_tag': 1, 'multicast-receive:not_secure': 2, 'multicast-receive:unknown_key_id': 1 });
    expect(events(b)).toHaveLength(8);
    // A legacy-mode bridge (same group, no key) read none of the secure datagrams, counting each; it
    // accepted the plaintext capture the eavesdropper sent, which is what the legacy format allows.
    const l = await stats(legacy);
    expect(l.drops['multicast-receive:secure_without_key']).toBeGreaterThanOrEqual(14);
    expect(events(legacy).map((r) => r.node)).toEqual(['fs-b']);

  }, 480_000);
});
