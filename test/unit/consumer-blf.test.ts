import { describe, expect, it } from 'vitest';
import { createBlfConsumer, type BlfConsumer } from '../../consumers/blf/blf-consumer.js';
import type { BlfConsumerConfig } from '../../bridge/config/types.js';
import { FsEvent } from '../../bridge/event/event.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { NODE_A, NODE_B, fakeContext, settle, type FakeContext } from '../support/consumer-context.js';
import { asPipeline, chosenHeaders, eslEvents, referenceEvents } from '../support/consumer-fixtures.js';

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

describe('BLF improved mode', () => {
  it('maps ringing to early, answered to confirmed and hangup to terminated', async () => {
    const { context } = await run(IMPROVED, nodeBStream());
    const states = context.local.sent.map((e) => `${e.get('from')} ${e.get('status')} ${e.get('answer-state')}`);
    expect(states).toEqual([
      '1000@127.0.0.1 CS_ROUTING early',
      '1001@127.0.0.1 CS_ROUTING early',
      '1001@127.0.0.1 answered confirmed',
      '1000@127.0.0.1 answered confirmed',
      '1001@127.0.0.1 CS_HANGUP terminated',
      '1000@127.0.0.1 CS_HANGUP terminated',
      '1001@127.0.0.1 CS_ROUTING early',
      '1001@127.0.0.1 answered confirmed',
      '1001@127.0.0.1 CS_HANGUP terminated',
    ]);
  });

  it('uses Answer-State when the status is not a channel state', async () => {
    const { context } = await run(IMPROVED, [remotePresence({ ...CALL, status: 'Talking', 'Answer-State': 'answered' })]);
    expect(context.local.sent.map((e) => e.get('answer-state'))).toEqual(['confirmed']);
  });

  it('keeps the call direction of the original (inbound stays inbound)', async () => {
    const { context } = await run(IMPROVED, nodeBStream());
    const directions = new Map(context.local.sent.map((e) => [e.get('from'), e.get('Presence-Call-Direction')]));
    expect(directions.get('1000@127.0.0.1')).toBe('inbound');
    expect(directions.get('1001@127.0.0.1')).toBe('outbound');
    const fallback = await run(IMPROVED, [remotePresence({ from: '1002@x', 'Unique-ID': 'c9', status: 'CS_ROUTING', 'Call-Direction': 'inbound' })]);
    expect(fallback.context.local.sent[0].get('Presence-Call-Direction')).toBe('inbound');
  });

  it("carries the call's Unique-ID", async () => {
    const { context } = await run(IMPROVED, nodeBStream());
    const remoteCalls = new Set(nodeBStream().filter((i) => i.event.name === 'PRESENCE_IN' && i.event.get('Unique-ID')).map((i) => i.event.get('Unique-ID')));
    expect(new Set(context.local.sent.map((e) => e.get('unique-id')))).toEqual(remoteCalls);
    expect(remoteCalls.size).toBe(3);
  });

  it('never fires the same state of a call twice, nor an older state', async () => {
    const ringing = remotePresence({ ...CALL, status: 'CS_ROUTING', 'Answer-State': 'ringing' });
    const answered = remotePresence({ ...CALL, status: 'answered', 'Answer-State': 'answered' });
    // The same call seen again (another transport, a legacy Lua re-fire) and a late ringing after the answer.
    const luaRefire = remotePresence({ ...CALL, status: 'CS_ROUTING', 'answer-state': 'confirmed' }, 'fs-legacy');
    const { context } = await run(IMPROVED, [ringing, ringing, luaRefire, answered, answered, ringing]);
    expect(context.local.sent.map((e) => e.get('answer-state'))).toEqual(['early', 'confirmed']);
  });

  it('reacts only to remote events and never to events carrying the loop-guard header', async () => {
    const local: BridgeEvent = { ...remotePresence({ ...CALL, status: 'CS_ROUTING' }), origin: { transport: Transport.Esl, node: NODE_B.name, receivedAt: 0 } };
    const guarded = remotePresence({ ...CALL, 'Unique-ID': 'call-2', status: 'CS_ROUTING', [LOOP_GUARD_HEADER]: 'fs-c' });
    const plain = remotePresence({ ...CALL, 'Unique-ID': 'call-3', status: 'CS_ROUTING' }, 'fs-c');
    const { context } = await run(IMPROVED, [local, guarded, plain]);
    expect(context.local.sent.map((e) => e.get('unique-id'))).toEqual(['call-3']);
  });

  it('ignores presence that is not about a call (Registered, Unregistered)', async () => {
    const { context } = await run(IMPROVED, [remotePresence({ from: '1000@127.0.0.1', status: 'Unregistered', rpid: 'away' })]);
    expect(context.local.sent).toHaveLength(0);
  });

  it('keeps a lamp table: user -> ringing/busy/idle and which call', async () => {
    const { consumer } = await run(IMPROVED, [
      remotePresence({ ...CALL, status: 'CS_ROUTING' }),
      remotePresence({ ...CALL, from: '1001@127.0.0.1', 'Unique-ID': 'call-9', status: 'answered' }),
    ]);
    expect(Object.fromEntries(consumer.lamps())).toEqual({
      '1000@127.0.0.1': { state: 'ringing', call: 'call-1' },
      '1001@127.0.0.1': { state: 'busy', call: 'call-9' },
    });
  });

  it('puts out the lamps of a node that went down', async () => {
    const peerDown = FsEvent.create('CUSTOM', 'multicast::peerdown').add('Peer', 'fs-a');
    const { context, consumer } = await run(IMPROVED, [
      remotePresence({ ...CALL, status: 'answered' }),
      { event: peerDown, origin: { transport: Transport.Esl, node: NODE_B.name, receivedAt: 0 } },
    ]);
    expect(context.local.sent.map((e) => e.get('answer-state'))).toEqual(['confirmed', 'terminated']);
    expect(consumer.lamps().size).toBe(0);
  });
});

describe('BLF state in the cluster bucket', () => {
  it('the node owning a call keeps it in the bucket until it ends', async () => {
    const own = (status: string): BridgeEvent => ({ ...remotePresence({ ...CALL, status }), origin: { transport: Transport.Esl, node: NODE_A.name, receivedAt: 0 } });
    const context = fakeContext(NODE_A);
    await run(IMPROVED, [own('CS_ROUTING'), own('CS_ROUTING'), own('answered')], context);
    const bucket = context.buckets.get('blf-test')!;
    expect(bucket.puts).toBe(2);
    expect(JSON.parse(bucket.data.get('1000@127.0.0.1/call-1')!)).toMatchObject({ state: 'confirmed', node: 'fs-a', direction: 'inbound' });
    context.events.emit(own('CS_HANGUP'));
    await settle();
    expect(bucket.data.size).toBe(0);
    // Calls on this node are never fired back into it: FreeSWITCH serves its own phones.
    expect(context.local.sent).toHaveLength(0);
  });

  it('a restarted node relights the lamps of calls still up elsewhere, and only those', async () => {
    const buckets = new Map();
    const nodeA = fakeContext(NODE_A, { buckets });
    const own = (headers: Record<string, string>): BridgeEvent => ({ ...remotePresence(headers), origin: { transport: Transport.Esl, node: NODE_A.name, receivedAt: 0 } });
    await run(IMPROVED, [
      own({ ...CALL, status: 'answered' }),
      own({ ...CALL, 'Unique-ID': 'call-2', from: '1001@127.0.0.1', status: 'CS_ROUTING' }),
      own({ ...CALL, 'Unique-ID': 'call-3', from: '1002@127.0.0.1', status: 'CS_ROUTING' }),
      own({ ...CALL, 'Unique-ID': 'call-3', from: '1002@127.0.0.1', status: 'CS_HANGUP' }),
    ], nodeA);
    const nodeB = fakeContext(NODE_B, { buckets });
    const { context, consumer } = await run(IMPROVED, [], nodeB);
    const relit = context.local.sent.map((e) => `${e.get('from')} ${e.get('unique-id')} ${e.get('answer-state')} ${e.get('Presence-Call-Direction')}`).sort();
    expect(relit).toEqual(['1000@127.0.0.1 call-1 confirmed inbound', '1001@127.0.0.1 call-2 early inbound']);
    // The relit state counts as seen: the next copy of the same state is not fired again.
    context.events.emit(remotePresence({ ...CALL, status: 'answered' }));
    await settle();
    expect(context.local.sent).toHaveLength(2);
    expect(consumer.lamps().get('1000@127.0.0.1')).toEqual({ state: 'busy', call: 'call-1' });
  });

  it('skips a corrupt bucket entry and counts it', async () => {
    const context = fakeContext(NODE_B);
    const bucket = await context.openState!('blf-test');
    await bucket.put('x/y', '{not json');
    await run(IMPROVED, [], context);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'bad_state_entry')?.value).toBe(1);
  });

  it('works without NATS (no state bucket)', async () => {
    const { context } = await run(IMPROVED, [remotePresence({ ...CALL, status: 'CS_ROUTING' })], fakeContext(NODE_B, { withState: false }));
    expect(context.local.sent).toHaveLength(1);
  });

  it('counts a failed sendevent instead of throwing', async () => {
    const context = fakeContext(NODE_B);
    context.local.sendEvent = async () => {
      throw new Error('not connected');
    };
    await run(IMPROVED, [remotePresence({ ...CALL, status: 'CS_ROUTING' })], context);
    const drops = await context.metrics.drops.get();
    expect(drops.values.find((v) => v.labels.cause === 'send_failed')?.value).toBe(1);
  });
});
