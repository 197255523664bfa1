import { describe, expect, it } from 'vitest';
import { createBlfConsumer, type BlfConsumer } from '../../consumers/blf/blf-consumer.js';
import type { BlfConsumerConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { NODE_A, NODE_B, fakeContext, settle, type FakeContext } from '../support/consumer-context.js';
import { asPipeline, chosenHeaders, eslEvents, referenceEvents } from '../support/consumer-fixtures.js';
import { modelNotifies } from '../support/sofia-presence-model.js';
import { toMulticastEvent } from '../../bridge/pipeline/inject.js';

const PARITY: BlfConsumerConfig = { enabled: true, legacyParity: true };
const IMPROVED: BlfConsumerConfig = { enabled: true, legacyParity: false, stateBucket: 'blf-test' };

/** What node B's bridge would hand its consumers during the plain scenario. */
function nodeBStream(): BridgeEvent[] {
  return asPipeline(eslEvents('b-multicast-event.raw'), NODE_B.name);
}

async function run(config: BlfConsumerConfig, items: BridgeEvent[], context: FakeContext = fakeContext(NODE_B)): Promise<{ context: FakeContext; consumer: BlfConsumer }> {
  const consumer = createBlfConsumer(config) as BlfConsumer;
  await consumer.start(context);
  for (const item of items) context.events.emit(item);
  await settle();
  return { context, consumer };
}

function remotePresence(headers: Record<string, string>, node = 'fs-a'): BridgeEvent {
  const event = FsEvent.create('PRESENCE_IN');
  for (const [n, v] of Object.entries(headers)) event.add(n, v);
  return { event, origin: { transport: Transport.Multicast, node, receivedAt: Date.now() } };
}

const CALL = { from: '1000@127.0.0.1', 'Unique-ID': 'call-1', 'Presence-Call-Direction': 'inbound', rpid: 'unknown' };

describe('BLF parity with startup_script_1.lua', () => {
  it('fires the same PRESENCE_IN events as the Lua did on node B, header by header', async () => {
    const reference = referenceEvents('b-presence-in.raw').filter((e) => e.get('Event-Calling-File') === 'switch_cpp.cpp');
    expect(reference).toHaveLength(6);
    const { context } = await run(PARITY, nodeBStream());
    expect(context.local.sent.map(chosenHeaders)).toEqual(reference.map(chosenHeaders));
  });

  it('ignores local events, as the Lua only read multicast::event', async () => {
    const local = nodeBStream().map((item) => ({ event: item.event, origin: { ...item.origin, transport: Transport.Esl } }));
    const { context } = await run(PARITY, local);
    expect(context.local.sent).toHaveLength(0);
  });
});

/** What mod_sofia on node B shows watchers: the bridge's injection of each remote event, plus whatever the consumer fired. */
function shownOnB(items: BridgeEvent[], fired: FsEvent[]): ReturnType<typeof modelNotifies> {
  const injected = items.filter((i) => i.origin.transport !== Transport.Esl && i.event.name === 'PRESENCE_IN').map((i) => toMulticastEvent(i.event, i.origin.node, NODE_B.name));
  return modelNotifies([...injected, ...fired]);
}

const own = (headers: Record<string, string>, node = NODE_A.name): BridgeEvent => ({ ...remotePresence(headers), origin: { transport: Transport.Esl, node, receivedAt: 0 } });

function probe(to: string, extra: Record<string, string> = {}): BridgeEvent {
  const event = FsEvent.create('PRESENCE_PROBE');
  for (const [n, v] of Object.entries({ proto: 'sip', login: 'internal', from: '1009@127.0.0.1', to, expires: '600', 'sub-call-id': 'sub-1@10.99.0.3', ...extra })) event.add(n, v);
  return { event, origin: { transport: Transport.Esl, node: NODE_B.name, receivedAt: 0 } };
}

const RINGING = { ...CALL, status: 'CS_ROUTING', 'Answer-State': 'ringing', 'Channel-State': 'CS_ROUTING', 'Caller-Username': '1000' };
const ANSWERED = { ...RINGING, status: 'answered', 'Answer-State': 'answered', 'Channel-State': 'CS_EXECUTE' };

describe('BLF improved mode: mod_sofia lights remote lamps from the injected event', () => {
  it('fires nothing for a live remote call: phones on B see each state of the real capture once', async () => {
    const items = nodeBStream();
    const { context } = await run(IMPROVED, items);
    expect(context.local.sent).toHaveLength(0);
    const shown = shownOnB(items, context.local.sent).filter((n) => n.uuid !== null);
    const byCall = new Map<string, string[]>();
    for (const n of shown) byCall.set(n.uuid!, [...(byCall.get(n.uuid!) ?? []), `${n.user} ${n.state}/${n.direction}`]);
    // The captured call: 1000 calls 1001 on A (two legs), then a second call to 1001.
    expect([...byCall.values()]).toEqual([
      ['1000 confirmed/initiator', '1000 confirmed/initiator', '1000 terminated/initiator'],
      ['1001 early/recipient', '1001 confirmed/recipient', '1001 terminated/recipient'],
      ['1001 early/recipient', '1001 confirmed/recipient', '1001 terminated/recipient'],
    ]);
  });

  it('uses Answer-State when the status is not a channel state', async () => {
    const { consumer } = await run(IMPROVED, [remotePresence({ ...CALL, status: 'Talking', 'Answer-State': 'answered' })]);
    expect(consumer.lamps().get('1000@127.0.0.1')).toEqual({ state: 'busy', call: 'call-1' });
  });

  it('a call only moves forward: a late or repeated state does not change the lamp', async () => {
    const ringing = remotePresence(RINGING);
    const answered = remotePresence(ANSWERED);
    const luaRefire = remotePresence({ ...CALL, status: 'CS_ROUTING', 'answer-state': 'confirmed' }, 'fs-legacy');
    const { consumer } = await run(IMPROVED, [ringing, answered, ringing, luaRefire]);
    expect(consumer.lamps().get('1000@127.0.0.1')?.state).toBe('busy');
  });

  it('keeps a lamp table: user -> ringing/busy/idle and which call', async () => {
    const { consumer } = await run(IMPROVED, [remotePresence({ ...CALL, status: 'CS_ROUTING' }), remotePresence({ ...CALL, from: '1001@127.0.0.1', 'Unique-ID': 'call-9', status: 'answered' })]);
    expect(Object.fromEntries(consumer.lamps())).toEqual({
      '1000@127.0.0.1': { state: 'ringing', call: 'call-1' },
      '1001@127.0.0.1': { state: 'busy', call: 'call-9' },
    });
  });

  it('ignores presence that is not about a call, and events carrying the loop-guard header', async () => {
    const { consumer } = await run(IMPROVED, [remotePresence({ from: '1000@127.0.0.1', status: 'Unregistered', rpid: 'away' }), remotePresence({ ...RINGING, [LOOP_GUARD_HEADER]: 'fs-c' })]);
    expect(consumer.lamps().size).toBe(0);
  });
});

describe('BLF improved mode: PRESENCE_PROBE of a phone subscribing during a remote call', () => {
  it('answers the probing subscription only, with the state mod_sofia showed for the call', async () => {
    const items = [remotePresence(RINGING), remotePresence(ANSWERED), remotePresence({ ...ANSWERED, from: '1001@127.0.0.1', 'Unique-ID': 'call-2', 'Presence-Call-Direction': 'outbound' }), probe('1000@127.0.0.1')];
    const { context } = await run(IMPROVED, items);
    expect(context.local.sent).toHaveLength(1);
    const answer = context.local.sent[0];
    expect(answer.name).toBe('PRESENCE_IN');
    expect(answer.get('call-id')).toBe('sub-1@10.99.0.3');
    expect(modelNotifies([answer])).toEqual([{ user: '1000', uuid: 'call-1', state: 'confirmed', direction: 'initiator', subscription: 'sub-1@10.99.0.3', via: 'PRESENCE_IN' }]);
    // "On The Phone" as on the call's own node: mod_sofia writes "Talk <number>" only when it has the number.
    expect(answer.has('Caller-Callee-ID-Number') || answer.has('Caller-Destination-Number')).toBe(false);
    const metrics = await context.metrics.registry.getSingleMetricAsString('fsb_blf_probes_answered_total');
    expect(metrics).toMatch(/fsb_blf_probes_answered_total 1/);
  });

  it('answers a probe while the remote call rings: the callee shows early, the caller confirmed', async () => {
    const callee = { ...RINGING, from: '1001@127.0.0.1', 'Unique-ID': 'call-2', 'Presence-Call-Direction': 'outbound' };
    const { context } = await run(IMPROVED, [remotePresence(RINGING), remotePresence(callee), probe('1000@127.0.0.1'), probe('1001@127.0.0.1', { 'sub-call-id': 'sub-2' })]);
    expect(modelNotifies(context.local.sent).map((n) => `${n.user} ${n.state}/${n.direction} ${n.subscription}`)).toEqual(['1000 confirmed/initiator sub-1@10.99.0.3', '1001 early/recipient sub-2']);
  });

  it('does not answer an unsubscribe, a user without a remote call, an ended call, nor its own node', async () => {
    const items = [
      remotePresence(ANSWERED),
      remotePresence({ ...ANSWERED, from: '1002@127.0.0.1', 'Unique-ID': 'call-3' }),
      remotePresence({ ...ANSWERED, from: '1002@127.0.0.1', 'Unique-ID': 'call-3', status: 'CS_HANGUP', 'Answer-State': 'hangup' }),
      probe('1000@127.0.0.1', { expires: '0' }),
      probe('1005@127.0.0.1'),
      probe('1002@127.0.0.1'),
      { ...probe('1000@127.0.0.1'), origin: { transport: Transport.Multicast, node: 'fs-a', receivedAt: 0 } },
    ];
    const { context } = await run(IMPROVED, items);
    expect(context.local.sent).toHaveLength(0);
  });
});

describe('BLF improved mode: nodes that die and come back', () => {
  it('puts out the lamps of a node that went down, as its hangup would have', async () => {
    const peerDown = FsEvent.create('CUSTOM', 'multicast::peerdown').add('Peer', 'fs-a');
    const items = [remotePresence(ANSWERED), remotePresence({ ...ANSWERED, 'Unique-ID': 'call-x' }, 'fs-c'), { event: peerDown, origin: { transport: Transport.Esl, node: NODE_B.name, receivedAt: 0 } }];
    const { context, consumer } = await run(IMPROVED, items);
    expect(context.local.sent).toHaveLength(1);
    expect(context.local.sent[0].subclass).toBe('multicast::event');
    expect(modelNotifies(context.local.sent).map((n) => `${n.uuid} ${n.state}/${n.direction}`)).toEqual(['call-1 terminated/initiator']);
    expect(consumer.lamps().get('1000@127.0.0.1')).toEqual({ state: 'busy', call: 'call-x' });
  });
});

describe('BLF state in the cluster bucket', () => {
  it('the node owning a call keeps it (with the presence mod_sofia uses) until it ends', async () => {
    const context = fakeContext(NODE_A);
    await run(IMPROVED, [own(RINGING), own(RINGING), own(ANSWERED)], context);
    const bucket = context.buckets.get('blf-test')!;
    expect(bucket.puts).toBe(2);
    const entry = JSON.parse(bucket.data.get('1000@127.0.0.1/call-1')!);
    expect(entry).toMatchObject({ state: 'confirmed', node: 'fs-a' });
    expect(Object.fromEntries(entry.presence)).toMatchObject({ 'Presence-Call-Direction': 'inbound', 'Caller-Username': '1000', 'Answer-State': 'answered' });
    context.events.emit(own({ ...ANSWERED, status: 'CS_HANGUP' }));
    await settle();
    expect(bucket.data.size).toBe(0);
    // Calls on this node are never fired back into it: FreeSWITCH serves its own phones.
    expect(context.local.sent).toHaveLength(0);
  });

  it('a restarted node relights the calls still up elsewhere, and only those, as mod_sofia showed them', async () => {
    const buckets = new Map();
    await run(IMPROVED, [own(ANSWERED), own({ ...RINGING, 'Unique-ID': 'call-2', from: '1001@127.0.0.1', 'Presence-Call-Direction': 'outbound' }), own({ ...RINGING, 'Unique-ID': 'call-3', from: '1002@127.0.0.1' }), own({ ...RINGING, 'Unique-ID': 'call-3', from: '1002@127.0.0.1', status: 'CS_HANGUP' })], fakeContext(NODE_A, { buckets }));
    const { context, consumer } = await run(IMPROVED, [], fakeContext(NODE_B, { buckets }));
    expect(context.local.sent.every((e) => e.subclass === 'multicast::event')).toBe(true);
    const relit = modelNotifies(context.local.sent).map((n) => `${n.user} ${n.uuid} ${n.state}/${n.direction}`).sort();
    expect(relit).toEqual(['1000 call-1 confirmed/initiator', '1001 call-2 early/recipient']);
    expect(consumer.lamps().get('1000@127.0.0.1')).toEqual({ state: 'busy', call: 'call-1' });
  });

  it('relights the calls of a node that comes back up after a peerdown', async () => {
    const buckets = new Map();
    await run(IMPROVED, [own(ANSWERED)], fakeContext(NODE_A, { buckets }));
    const peer = (subclass: string): BridgeEvent => ({ event: FsEvent.create('CUSTOM', subclass).add('Peer', 'fs-a'), origin: { transport: Transport.Esl, node: NODE_B.name, receivedAt: 0 } });
    const context = fakeContext(NODE_B, { buckets });
    const { consumer } = await run(IMPROVED, [], context);
    context.events.emit(peer('multicast::peerdown'));
    await settle();
    expect(consumer.lamps().size).toBe(0);
    context.events.emit(peer('multicast::peerup'));
    await settle();
    expect(modelNotifies(context.local.sent).map((n) => n.state)).toEqual(['confirmed', 'terminated', 'confirmed']);
    expect(consumer.lamps().get('1000@127.0.0.1')?.state).toBe('busy');
  });

  it("forgets at start its own calls FreeSWITCH no longer has (restarted under the bridge), keeps the live ones", async () => {
    const buckets = new Map();
    await run(IMPROVED, [own(ANSWERED), own({ ...ANSWERED, 'Unique-ID': 'call-gone' })], fakeContext(NODE_A, { buckets }));
    const context = fakeContext(NODE_A, { buckets });
    context.local.apiReply = async (command) => (command === 'uuid_exists call-1' ? 'true' : 'false');
    await run(IMPROVED, [], context);
    expect([...buckets.get('blf-test')!.data.keys()]).toEqual(['1000@127.0.0.1/call-1']);
    expect(context.local.sent).toHaveLength(0);
  });

  it('skips a corrupt bucket entry and counts it', async () => {
    const context = fakeContext(NODE_B);
    const bucket = await context.openState!('blf-test');
    await bucket.put('x/y', '{not json');
    await bucket.put('x/z', JSON.stringify({ user: 'x', call: 'z', node: 'fs-a', state: 'confirmed', presence: [['from', 7]] }));
    await run(IMPROVED, [], context);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'bad_state_entry')?.value).toBe(2);
    expect(context.local.sent).toHaveLength(0);
  });

  it('works without NATS (no state bucket): probes are still answered', async () => {
    const { context } = await run(IMPROVED, [remotePresence(ANSWERED), probe('1000@127.0.0.1')], fakeContext(NODE_B, { withState: false }));
    expect(context.local.sent).toHaveLength(1);
  });

  it('counts a failed sendevent instead of throwing', async () => {
    const context = fakeContext(NODE_B);
    context.local.sendEvent = async () => {
      throw new Error('not connected');
    };
    await run(IMPROVED, [remotePresence(ANSWERED), probe('1000@127.0.0.1')], context);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'send_failed')?.value).toBe(1);
  });
});
