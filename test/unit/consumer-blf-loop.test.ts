import { describe, expect, it } from 'vitest';
import type { Consumer } from '../../bridge/consumer.js';
import { FsEvent } from '../../bridge/event/event.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { createBlfConsumer, type BlfConsumer } from '../../consumers/blf/blf-consumer.js';
import { legacyPresence } from '../../consumers/blf/presence.js';
import { fakeContext, settle, type FakeContext } from '../support/consumer-context.js';
import { datagramFixtures } from '../support/fixtures.js';

const DELIVERY_CAP = 5_000;

interface Cluster {
  nodes: FakeContext[];
  /** PRESENCE_IN events fired into any node by a consumer. */
  fired: number;
  deliveries: number;
  run(): void;
  /** A call's presence fired by FreeSWITCH on node i (a local ESL event there). */
  call(i: number, status: string, answerState: string): void;
}

/**
 * Three nodes wired the way the bridge wires them: what a consumer fires into its
 * node comes back as a local ESL event of that node, and local events are published
 * to the other nodes unless they carry the loop-guard header. `guard` false models
 * mod_event_multicast, which republishes everything.
 */
function cluster(guard: boolean): Cluster {
  const queue: { to: number; item: BridgeEvent }[] = [];
  const names = ['fs-1', 'fs-2', 'fs-3'];
  const nodes = names.map((name, i) => fakeContext({ name, hostname: `host-${i + 1}`, ipv4: `10.0.0.${i + 1}`, cluster: 'loop' }));
  const state: Cluster = {
    nodes,
    fired: 0,
    deliveries: 0,
    run() {
      while (queue.length > 0 && state.deliveries < DELIVERY_CAP) {
        const { to, item } = queue.shift()!;
        state.deliveries++;
        nodes[to].events.emit(item);
      }
    },
    call(i, status, answerState) {
      const event = FsEvent.create('PRESENCE_IN')
        .add('from', '1000@127.0.0.1')
        .add('Unique-ID', 'call-1')
        .add('status', status)
        .add('Answer-State', answerState)
        .add('Presence-Call-Direction', 'outbound');
      localEvent(i, event);
    },
  };
  function localEvent(i: number, event: FsEvent): void {
    queue.push({ to: i, item: { event, origin: { transport: Transport.Esl, node: names[i], receivedAt: Date.now() } } });
    if (guard && event.has(LOOP_GUARD_HEADER)) return;
    for (let j = 0; j < nodes.length; j++) {
      if (j !== i) queue.push({ to: j, item: { event: event.clone(), origin: { transport: Transport.Multicast, node: names[i], receivedAt: Date.now() } } });
    }
  }
  nodes.forEach((node, i) => {
    node.local.onSendEvent = (event) => {
      state.fired++;
      const delivered = event.clone();
      if (guard) delivered.add(LOOP_GUARD_HEADER, names[i]);
      localEvent(i, delivered);
    };
  });
  return state;
}

async function withConsumers(c: Cluster, make: () => Consumer): Promise<Consumer[]> {
  const consumers = c.nodes.map(() => make());
  await Promise.all(consumers.map((consumer, i) => consumer.start(c.nodes[i])));
  return consumers;
}

function oneCall(c: Cluster): void {
  c.call(0, 'CS_ROUTING', 'ringing');
  c.run();
  c.call(0, 'answered', 'answered');
  c.run();
  c.call(0, 'CS_HANGUP', 'hangup');
  c.run();
}

describe('BLF never loops', () => {
  it('the captured Lua experiment ping-pongs: the same call is re-fired again and again by both nodes', () => {
    const datagrams = datagramFixtures('loop-experiment').map((d) => d.decoded.headers);
    const header = (h: [string, string][], name: string) => h.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
    const refires = datagrams.filter((h) => header(h, 'Event-Calling-File') === 'switch_cpp.cpp');
    const senders = new Set(refires.map((h) => header(h, 'Multicast-Sender')));
    expect(refires.length).toBeGreaterThan(8);
    expect(senders.size).toBe(2);
  });

  it('three improved consumers behind the bridge fire nothing for one call (mod_sofia lights lamps from the injected event)', async () => {
    const c = cluster(true);
    const consumers = await withConsumers(c, () => createBlfConsumer({ enabled: true, legacyParity: false }));
    c.call(0, 'CS_ROUTING', 'ringing');
    c.run();
    c.call(0, 'answered', 'answered');
    c.run();
    // Every other node tracks the call (for probes and peerdown) without firing anything.
    for (const consumer of consumers.slice(1)) expect([...(consumer as BlfConsumer).lamps().values()].map((l) => l.state)).toEqual(['busy']);
    c.call(0, 'CS_HANGUP', 'hangup');
    c.run();
    await settle();
    expect(c.fired).toBe(0);
    expect(c.deliveries).toBeLessThan(DELIVERY_CAP);
    await Promise.all(consumers.map((x) => x.stop()));
  });

  it('parity mode behind the bridge is bounded too: the loop guard alone stops it', async () => {
    const c = cluster(true);
    await withConsumers(c, () => createBlfConsumer({ enabled: true, legacyParity: true }));
    oneCall(c);
    // CS_ROUTING and CS_HANGUP re-fired on the two other nodes; `answered` ignored as the Lua did.
    expect(c.fired).toBe(4);
  });

  it('improved mode stays bounded even if the guard header were lost (state only moves forward)', async () => {
    const c = cluster(false);
    await withConsumers(c, () => createBlfConsumer({ enabled: true, legacyParity: false }));
    oneCall(c);
    expect(c.deliveries).toBeLessThan(DELIVERY_CAP);
    expect(c.fired).toBe(0);
  });

  it('contrast: the Lua logic without a guard ping-pongs until the harness cap', async () => {
    const c = cluster(false);
    const lua: Consumer[] = c.nodes.map(() => ({
      name: 'lua',
      async start(context) {
        context.events.subscribe((item) => {
          if (item.origin.transport === Transport.Esl || item.event.name !== 'PRESENCE_IN') return;
          const out = legacyPresence(item.event);
          if (out) void context.local.sendEvent(out);
        });
      },
      async stop() {},
    }));
    await Promise.all(lua.map((consumer, i) => consumer.start(c.nodes[i])));
    c.call(0, 'CS_ROUTING', 'ringing');
    c.run();
    expect(c.deliveries).toBe(DELIVERY_CAP);
    expect(c.fired).toBeGreaterThan(1_000);
  });
});
