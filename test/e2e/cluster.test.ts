/**
 * End to end on the local hub-and-satellites cluster (compose/local/cluster.ts): three
 * network namespaces on one LAN, each with a simulated FreeSWITCH and a bridge
 * process with the blf and location consumers, a 3-server NATS JetStream cluster in a
 * fourth. One cluster for the whole file; the scenarios run in order and build on
 * each other, as one day in the life of the cluster.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FsEvent } from '../../bridge/event/event.js';
import { LocalCluster, waitReady, type ClusterNode } from '../../compose/local/cluster.js';
import { DIALOG_STATE, presenceEvent, registerEvent, type CallPhase } from '../../compose/local/events.js';
import { modelNotifies, modelNotify } from '../support/sofia-presence-model.js';
import { sleep } from '../support/wait.js';

const PEER_TIMEOUT_MS = 2_000;
const PEER_DOWN_GRACE_MS = 500;

let cluster: LocalCluster;
let hub: ClusterNode;
let sat1: ClusterNode;
let sat2: ClusterNode;

async function eventually<T>(probe: () => T | Promise<T>, accept: (value: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T;
  for (;;) {
    last = await probe();
    if (accept(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The multicast::event a bridge injected for a remote sofia::register of `user`. */
const injectedRegister = (user: string) => (e: FsEvent) =>
  e.subclass === 'multicast::event' && e.get('Orig-Event-Subclass') === 'sofia::register' && e.get('Orig-from-user') === user;

/** An event that makes mod_sofia show `callId` in `state` to every watcher (test/support/sofia-presence-model.ts). */
const lampEvent = (callId: string, state: string) => (e: FsEvent) => {
  const shown = modelNotify(e);
  return shown !== null && shown.subscription === null && shown.uuid === callId && shown.state === state;
};

function metric(text: string, name: string, labels: Record<string, string>): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{')) continue;
    if (wanted.every((w) => line.includes(w))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

beforeAll(async () => {
  cluster = await LocalCluster.start({ layout: 'netns', peerTimeoutMs: PEER_TIMEOUT_MS, peerDownGraceMs: PEER_DOWN_GRACE_MS, heartbeatMs: 500, logLevel: 'warn' });
  hub = cluster.node('hub');
  sat1 = cluster.node('sat1');
  sat2 = cluster.node('sat2');
  // Every node must know the others before the first scenario (peers are learned from heartbeats).
  for (const node of [hub, sat1, sat2]) {
    await eventually(() => node.peers(), (peers) => peers.filter((p) => p.up).length === 2, `${node.id} peers`);
  }
}, 90_000);

afterAll(async () => {
  await cluster?.dispose();
}, 60_000);

describe('hub and two satellites', () => {
  it('runs each node in its own namespace on one LAN, with multicast and a 3-server NATS cluster', () => {
    expect(cluster.layout).toBe('netns');
    expect(cluster.multicast).toBe(true);
    expect(cluster.nats?.servers).toHaveLength(3);
    const addresses = [hub, sat1, sat2].map((n) => n.spec.ip);
    expect(new Set(addresses).size).toBe(3);
    expect(new Set([hub, sat1, sat2].map((n) => n.spec.netns)).size).toBe(3);
  });

  it('phone 1000 registers on satellite 1: every node answers its IP, injected once per node via both transports', async () => {
    await sat1.fire(registerEvent('1000'));
    for (const node of [hub, sat1, sat2]) {
      await eventually(() => node.location('1000'), (rows) => rows.length === 1 && rows[0] === sat1.spec.ip, `${node.id} LOCATION_1000`);
    }
    // Both transports delivered it to the other nodes: the copy that came second was filtered as a duplicate.
    for (const node of [hub, sat2]) {
      await eventually(
        async () => {
          const text = await node.metricsText();
          return {
            multicast: metric(text, 'fsb_events_in_total', { transport: 'multicast', node: 'fs-sat1' }),
            nats: metric(text, 'fsb_events_in_total', { transport: 'nats', node: 'fs-sat1' }),
            duplicates: metric(text, 'fsb_filtered_total', { component: 'pipeline', cause: 'duplicate_nats' }) + metric(text, 'fsb_filtered_total', { component: 'pipeline', cause: 'duplicate_multicast' }),
          };
        },
        (m) => m.multicast > 0 && m.nats > 0 && m.duplicates > 0,
        `${node.id} received from both transports`,
      );
    }
    await sleep(500);
    expect(hub.sendevents(injectedRegister('1000'))).toHaveLength(1);
    expect(sat2.sendevents(injectedRegister('1000'))).toHaveLength(1);
    // The node the phone registered on never gets its own event back.
    expect(sat1.sendevents(injectedRegister('1000'))).toHaveLength(0);
  });

  it('a call from 1000 rings, is answered and hangs up: the lamps on the hub and satellite 2 follow', async () => {
    const callId = 'e2e-call-1';
    for (const phase of ['ringing', 'answered', 'hangup'] as CallPhase[]) {
      await sat1.fire(presenceEvent(phase, '1000', callId));
      for (const node of [hub, sat2]) {
        await eventually(() => node.sendevents(lampEvent(callId, DIALOG_STATE[phase])).length, (n) => n === 1, `${node.id} ${phase} lamp`);
      }
    }
    for (const node of [hub, sat2]) {
      const states = modelNotifies(node.sendevents()).filter((n) => n.uuid === callId).map((n) => `${n.state}/${n.direction}`);
      expect(states).toEqual(['early/recipient', 'confirmed/recipient', 'terminated/recipient']);
      // All of it from the injected events: the BLF consumer fires nothing for a live call.
      expect(node.sendevents((e) => e.name === 'PRESENCE_IN')).toHaveLength(0);
      const injected = node.sendevents((e) => e.subclass === 'multicast::event' && e.get('Orig-Unique-ID') === callId).map((e) => e.get('Orig-status'));
      expect(injected).toEqual(['CS_ROUTING', 'answered', 'CS_HANGUP']);
    }
  });

  it('a NATS server killed mid-scenario loses nothing: the phone moves to satellite 2 and every node follows', async () => {
    const hubBefore = metric(await hub.metricsText(), 'fsb_events_in_total', { transport: 'nats', node: 'fs-sat2' });
    await cluster.nats!.servers[0].kill();
    // Registrations of 50 phones on satellite 2 while a NATS server is down, then the move of 1000.
    const users = Array.from({ length: 50 }, (_, i) => String(2000 + i));
    for (const user of users) await sat2.fire(registerEvent(user));
    await sat2.fire(registerEvent('1000'));
    for (const node of [hub, sat1, sat2]) {
      await eventually(() => node.location('1000'), (rows) => rows.length === 1 && rows[0] === sat2.spec.ip, `${node.id} LOCATION_1000 after the move`);
      await eventually(() => users.filter((u) => node.location(u)[0] === sat2.spec.ip).length, (n) => n === users.length, `${node.id} rows of the 50 phones`);
    }
    // Not only multicast carried them: NATS delivered all 51 to the hub too.
    await eventually(
      async () => metric(await hub.metricsText(), 'fsb_events_in_total', { transport: 'nats', node: 'fs-sat2' }) - hubBefore,
      (n) => n >= users.length + 1,
      'hub events from satellite 2 over NATS',
      15_000,
    );
    await cluster.nats!.servers[0].start();
    // Let the NATS cluster settle (leader elections, durable consumers catching up)
    // before the next scenario: every node again receives the others' heartbeats over NATS.
    const ids = [hub, sat1, sat2];
    const natsFrom = async (to: (typeof ids)[number], from: (typeof ids)[number]) =>
      metric(await to.metricsText(), 'fsb_events_in_total', { transport: 'nats', node: `fs-${from.id}` });
    const before = new Map<string, number>();
    for (const to of ids) for (const from of ids) if (to !== from) before.set(`${to.id}<${from.id}`, await natsFrom(to, from));
    for (const to of ids) {
      for (const from of ids) {
        if (to === from) continue;
        await eventually(() => natsFrom(to, from), (n) => n >= before.get(`${to.id}<${from.id}`)! + 2, `${to.id} hears ${from.id} over NATS again`, 30_000);
      }
    }
  });

  it('satellite 1 stops: the others see peerdown after the timeout and drop its rows', async () => {
    await sat1.fire(registerEvent('1001'));
    for (const node of [hub, sat2]) await eventually(() => node.location('1001'), (rows) => rows[0] === sat1.spec.ip, `${node.id} LOCATION_1001`);
    const stoppedAt = Date.now();
    expect(await sat1.stopBridge()).toBe(0);
    for (const node of [hub, sat2]) {
      await eventually(() => node.peers(), (peers) => peers.some((p) => p.name === 'fs-sat1' && !p.up), `${node.id} sees fs-sat1 down`, PEER_TIMEOUT_MS * 4);
      await eventually(() => node.location('1001'), (rows) => rows.length === 0, `${node.id} LOCATION_1001 removed`, PEER_TIMEOUT_MS * 4).catch(async (err: Error) => {
        throw new Error(`${err.message}\npeers ${JSON.stringify(await node.peers())}\nrows ${JSON.stringify(node.locationRows())}\nlog:\n${node.bridgeLog}`);
      });
      // 1000 lives on satellite 2 now and stays.
      expect(node.location('1000')).toEqual([sat2.spec.ip]);
    }
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(PEER_TIMEOUT_MS);
    const peerdown = hub.sendevents((e) => e.subclass === 'multicast::peerdown' && e.get('Peer') === 'fs-sat1');
    expect(peerdown.length).toBeGreaterThanOrEqual(1);
  });

  it('the hub restarts: locations and lamps come back from KV before it reports ready', async () => {
    const callId = 'e2e-call-2';
    const blfPuts = async () => metric(await sat2.metricsText(), 'fsb_state_writes_total', { bucket: 'fsb_blf', op: 'put' });
    const putsBefore = await blfPuts();
    await sat2.fire(presenceEvent('ringing', '1000', callId));
    await sat2.fire(presenceEvent('answered', '1000', callId));
    await eventually(() => hub.sendevents(lampEvent(callId, 'confirmed')).length, (n) => n === 1, 'hub lamp confirmed before the restart');
    // Satellite 2 writes its call to the BLF bucket (early, then confirmed); the hub may restart once the servers acknowledged both.
    await eventually(blfPuts, (n) => n >= putsBefore + 2, 'satellite 2 wrote the call to the BLF bucket');
    expect(await hub.stopBridge()).toBe(0);
    hub.clearDatabase();
    expect(hub.location('1000')).toEqual([]);
    const restartedAt = Date.now();
    hub.startBridge();
    await waitReady(hub, 30_000);
    const readyAt = Date.now();
    // The lamp was relit (from the BLF bucket) before /ready said 200.
    const relit = hub.agent.sendevents.filter((s) => s.at >= restartedAt && lampEvent(callId, 'confirmed')(s.event));
    const seen = hub.agent.sendevents.filter((s) => s.at >= restartedAt).map((s) => `${s.at - restartedAt} ms ${s.event.name} ${s.event.subclass ?? ''} ${modelNotify(s.event)?.state ?? ''}`);
    expect(relit, `sendevents after the restart: ${seen.join(', ')}; ready after ${readyAt - restartedAt} ms; log:\n${hub.bridgeLog}`).toHaveLength(1);
    expect(relit[0].at).toBeLessThanOrEqual(readyAt);
    // The location rows were loaded from the location bucket and committed before /ready said 200:
    // the database answers at once, without any new registration.
    expect(hub.location('1000')).toEqual([sat2.spec.ip]);
    expect(hub.location('2049')).toEqual([sat2.spec.ip]);
    // A stop, a start and a wait for ready of up to 30 s: more than the default test timeout on a loaded machine.
  }, 60_000);

  it('satellite 2 in legacy mode (raw mod_event_multicast datagrams, no NATS): the hub still sees its registrations', async () => {
    expect(await sat2.stopBridge()).toBe(0);
    await sat2.legacyHeartbeat(500);
    await sat2.legacyDatagram(registerEvent('1002'));
    await eventually(() => hub.location('1002'), (rows) => rows.length === 1 && rows[0] === sat2.spec.ip, 'hub LOCATION_1002 from the legacy node');
    await eventually(() => hub.sendevents(injectedRegister('1002')).length, (n) => n === 1, 'hub injected the legacy registration');
    // The legacy node's heartbeats keep it up at the hub.
    await sleep(PEER_TIMEOUT_MS + 500);
    expect((await hub.peers()).find((p) => p.name === 'fs-sat2')?.up).toBe(true);
    expect(hub.location('1002')).toEqual([sat2.spec.ip]);
    await sat2.legacyHeartbeat(0);
  });
});
