import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createLan, JsonLineProcess, nodeInNetns, type Lan } from '../support/netns.js';
import { datagramFixtures, fixturePath } from '../support/fixtures.js';
import { CHILD_START_MS, CHILD_TEST_MS, until } from '../support/wait.js';
import type { NodeProcessConfig } from './multicast-node.js';

/**
 * Real multicast between bridge transports in separate processes, each in its own
 * network namespace on one virtual LAN (like the two FreeSWITCH hosts of the captures).
 */
const NODE_SCRIPT = fileURLToPath(new URL('./multicast-node.ts', import.meta.url));
const PSK = JSON.parse(readFileSync(fixturePath('multicast-psk', 'index.json'), 'utf8')).psk as string;
const GROUP = '239.77.1.1';

type Report = { type: string; [key: string]: unknown };
type Stats = { received: number; lost: number; legacyGaps: number; drops: Record<string, number>; peers: { name: string; up: boolean }[] };

let lan: Lan;
const running: JsonLineProcess<Report>[] = [];
let port = 14000 + (process.pid % 1000);

// ip(8) waits for the kernel's rtnl lock, which every namespace of every suite on the machine takes.
beforeAll(() => {
  lan = createLan('mc', 3);
}, CHILD_START_MS);
afterAll(() => lan?.cleanup());
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
  port++;
});

async function startNode(host: number, overrides: Partial<NodeProcessConfig>): Promise<JsonLineProcess<Report>> {
  const { netns, ip } = lan.hosts[host];
  const config: NodeProcessConfig = {
    nodeName: `fs-${'abc'[host]}`,
    group: GROUP,
    port,
    interface: ip,
    psk: null,
    bindings: 'HEARTBEAT PRESENCE_IN CUSTOM sofia::register',
    report: 'events',
    ...overrides,
  };
  const node = new JsonLineProcess<Report>(nodeInNetns(netns, NODE_SCRIPT, [JSON.stringify(config)]));
  running.push(node);
  await node.waitFor((r) => r.type === 'ready', CHILD_START_MS);
  return node;
}

async function stats(node: JsonLineProcess<Report>): Promise<Stats> {
  return (await node.request({ cmd: 'stats' }, 'stats')) as unknown as Stats;
}

const header = (report: Report, name: string) => (report.headers as [string, string][]).find(([n]) => n === name)?.[1];

describe('multicast between bridge transports on a virtual LAN', { timeout: CHILD_TEST_MS }, () => {
  it('carries events with their original headers and exact bodies, plain', async () => {
    const [a, b] = await Promise.all([startNode(0, {}), startNode(1, {})]);
    const body = 'line: with colon\r\nand CR, \u2131 and € and a MAGIC-like \u2131\u0158\n';
    a.send({ cmd: 'send', name: 'PRESENCE_IN', headers: [['from', '1000@127.0.0.1'], ['status', 'CS_ROUTING']], body });
    a.send({ cmd: 'send', name: 'CHANNEL_CREATE' });
    a.send({ cmd: 'send', name: 'HEARTBEAT' });
    const presence = await b.waitFor((r) => r.type === 'event' && header(r, 'Event-Name') === 'PRESENCE_IN');
    expect(presence.node).toBe('fs-a');
    expect(presence.body).toBe(body);
    expect(header(presence, 'from')).toBe('1000@127.0.0.1');
    expect((presence.headers as [string, string][]).at(-1)).toEqual(['Multicast-Sender', 'fs-a']);
    await b.waitFor((r) => r.type === 'event' && header(r, 'Event-Name') === 'HEARTBEAT');
    const peerup = await b.waitFor((r) => r.type === 'peer');
    expect(peerup.headers).toEqual([['Event-Name', 'CUSTOM'], ['Event-Subclass', 'multicast::peerup'], ['Peer', 'fs-a'], ['Lastseen', 'Never']]);
    const s = await stats(b);
    // CHANNEL_CREATE is outside A's bindings: two events, nothing lost.
    expect(s.received).toBe(2);
    expect(s.lost).toBe(0);
    expect(s.peers).toMatchObject([{ name: 'fs-a', up: true }]);
  });

  it('psk: a node with the same psk decodes, one with a wrong psk drops everything as bad_psk', async () => {
    const [a, b, c] = await Promise.all([startNode(0, { psk: PSK }), startNode(1, { psk: PSK }), startNode(2, { psk: 'wrong-psk' })]);
    a.send({ cmd: 'send', name: 'PRESENCE_IN', count: 5 });
    await b.waitFor((r) => r.type === 'event' && header(r, 'Event-Sequence') === '5');
    // C reads the same datagrams on its own: on a loaded machine it may not have refused all five yet when B has them.
    const refused = (x: Stats) => x.drops['multicast-receive:bad_psk'] ?? 0;
    const sc = await until(async () => {
      const now = await stats(c);
      return refused(now) >= 5 ? now : null;
    }, CHILD_START_MS).catch(async () => stats(c));
    const sb = await stats(b);
    expect(sb.received).toBe(5);
    expect(sc.received).toBe(0);
    expect(sc.drops['multicast-receive:bad_psk']).toBe(5);
    expect(c.reports.filter((r) => r.type === 'event')).toHaveLength(0);
  });

  for (const [folder, psk] of [['multicast-plain', null], ['multicast-psk', PSK]] as const) {
    it(`hears a legacy sender: captured ${folder} datagrams arrive with the headers of their .json`, async () => {
      const [legacy, b] = await Promise.all([startNode(0, { nodeName: 'replayer' }), startNode(1, { nodeName: 'fs-x', psk })]);
      const fixtures = datagramFixtures(folder).slice(0, 12);
      legacy.send({ cmd: 'raw', base64: fixtures.map((f) => f.bin.toString('base64')) });
      const sender = (headers: [string, string][]) => headers.find(([n]) => n === 'Multicast-Sender')![1];
      await b.waitFor(() => b.reports.filter((r) => r.type === 'event').length === fixtures.length);
      const events = b.reports.filter((r) => r.type === 'event');
      expect(events.map((r) => r.headers)).toEqual(fixtures.map((f) => f.decoded.headers));
      expect(events.map((r) => r.node)).toEqual(fixtures.map((f) => sender(f.decoded.headers)));
    });
  }

  it('`listen` prints every datagram as a JSON line, and refused ones with their reason', async () => {
    const [a, listener] = await Promise.all([startNode(0, { psk: PSK }), startNode(1, { report: 'listen', psk: PSK })]);
    const replayer = await startNode(2, { nodeName: 'replayer' });
    a.send({ cmd: 'send', name: 'HEARTBEAT' });
    const line = await listener.waitFor((r) => 'headers' in r);
    expect(line.mode).toBe('psk');
    expect(String(line.from)).toMatch(new RegExp(`^${lan.hosts[0].ip.replaceAll('.', '\\.')}:`));
    expect((line.headers as [string, string][]).at(-1)).toEqual(['Multicast-Sender', 'fs-a']);
    replayer.send({ cmd: 'raw', base64: [datagramFixtures('multicast-plain')[0].bin.toString('base64')] });
    const refused = await listener.waitFor((r) => 'reason' in r);
    expect(refused.reason).toBe('plaintext_with_psk');
  });

  it('fires peerup then peerdown when heartbeats stop (short timeout)', async () => {
    const [a, b] = await Promise.all([startNode(0, {}), startNode(1, { peerTimeoutMs: 400, peerCheckMs: 50 })]);
    a.send({ cmd: 'send', name: 'HEARTBEAT' });
    await b.waitFor((r) => r.type === 'peer' && header(r, 'Event-Subclass') === 'multicast::peerup');
    const started = Date.now();
    const down = await b.waitFor((r) => r.type === 'peer' && header(r, 'Event-Subclass') === 'multicast::peerdown', 5_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(header(down, 'Peer')).toBe('fs-a');
    expect(Number(header(down, 'Lastseen'))).toBeGreaterThan(1_600_000_000);
    a.send({ cmd: 'send', name: 'HEARTBEAT' });
    const again = await b.waitFor((r) => r.type === 'peer' && header(r, 'Event-Subclass') === 'multicast::peerup' && header(r, 'Lastseen') !== 'Never');
    expect(header(again, 'Lastseen')).toBe(header(down, 'Lastseen'));
  });

  it('reloads bindings and TTL under traffic: every datagram is received or counted (no loss from the reload); new bindings apply at once', async () => {
    const [a, b] = await Promise.all([startNode(0, { bindings: 'PRESENCE_IN' }), startNode(1, { report: 'count' })]);
    const batches = 40;
    const perBatch = 250;
    for (let i = 0; i < batches; i++) {
      a.send({ cmd: 'send', name: 'PRESENCE_IN', count: perBatch });
      a.send({ cmd: 'send', name: 'CUSTOM', headers: [['Event-Subclass', 'sofia::register']] });
      if (i === batches / 2) {
        a.send({ cmd: 'reload', bindings: 'PRESENCE_IN CUSTOM sofia::register', psk: null, ttl: 2 });
        b.send({ cmd: 'reload', bindings: 'HEARTBEAT', psk: null, ttl: 1 });
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // sofia::register only matches A's bindings after the reload: batches/2 - 1 of them.
    const expected = batches * perBatch + (batches / 2 - 1);
    // On a loaded machine B may not read as fast as A sends: what its kernel buffer could not
    // hold is counted as kernel_rcvbuf. A reload that reopened the socket would lose datagrams
    // nobody counts (no socket to count them), so everything must be received or counted.
    const kernel = (x: Stats) => x.drops['multicast-receive:kernel_rcvbuf'] ?? 0;
    const s = await until(async () => {
      const now = await stats(b);
      return now.received + kernel(now) >= expected ? now : null;
    }, CHILD_START_MS).catch(async () => stats(b));
    expect(s.received + kernel(s)).toBe(expected);
    // The only loss is the kernel's, and the receiver saw exactly it as gaps.
    expect(s.lost).toBe(kernel(s));
    expect(Object.entries(s.drops).filter(([cause, n]) => cause !== 'multicast-receive:kernel_rcvbuf' && n > 0)).toEqual([]);
  });
});
