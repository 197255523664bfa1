import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isLampSource, isRegistrationSource, type Lamp } from '../../bridge/consumer.js';
import { FsEvent } from '../../bridge/event/event.js';
import { MulticastSubclass } from '../../bridge/event/names.js';
import { Transport } from '../../bridge/pipeline/types.js';
import { presenceEvent, registerEvent } from '../../compose/local/events.js';
import { BlfConsumer } from '../../consumers/blf/blf-consumer.js';
import { LocationConsumer } from '../../consumers/location/location-consumer.js';
import { NODE_A, fakeContext, settle } from '../support/consumer-context.js';

/** What the cluster board reads from the consumers, through the LampSource and RegistrationSource interfaces only. */

function stamped(event: FsEvent, node: { switchname: string; hostname: string; ipv4: string }, seq: number): FsEvent {
  return event
    .add('Core-UUID', `uuid-${node.switchname}`)
    .add('Event-Sequence', String(seq))
    .add('Event-Date-Timestamp', `${Date.now()}000`)
    .add('FreeSWITCH-Switchname', node.switchname)
    .add('FreeSWITCH-Hostname', node.hostname)
    .add('FreeSWITCH-IPv4', node.ipv4);
}

const B = { switchname: 'fs-b', hostname: 'node-b', ipv4: '10.99.0.2' };
const A = { switchname: 'fs-a', hostname: 'node-a', ipv4: '10.99.0.1' };

describe('BLF consumer lamps (LampSource)', () => {
  it('follows remote and local calls as idle / ringing / busy with node and since, and reports each change once', async () => {
    const consumer = new BlfConsumer({ enabled: true, legacyParity: false });
    expect(isLampSource(consumer)).toBe(true);
    const context = fakeContext(NODE_A, { withState: false });
    await consumer.start(context);
    const changes: Lamp[] = [];
    consumer.onLampChange((lamp) => changes.push(lamp));

    context.events.emitFrom(stamped(presenceEvent('ringing', '1000', 'call-r'), B, 1), Transport.Nats, 'fs-b', 1_000);
    context.events.emitFrom(stamped(presenceEvent('ringing', '1000', 'call-r'), B, 1), Transport.Multicast, 'fs-b', 1_001);
    context.events.emitFrom(stamped(presenceEvent('answered', '1000', 'call-r'), B, 2), Transport.Nats, 'fs-b', 2_000);
    // A call on this node lights the lamp of its user too (FreeSWITCH shows it to local phones by itself).
    context.events.emitFrom(stamped(presenceEvent('ringing', '1001', 'call-l'), A, 1), Transport.Esl, 'fs-a', 3_000);
    expect(changes).toEqual([
      { user: '1000@127.0.0.1', state: 'ringing', node: 'fs-b', since: 1_000 },
      { user: '1000@127.0.0.1', state: 'busy', node: 'fs-b', since: 2_000 },
      { user: '1001@127.0.0.1', state: 'ringing', node: 'fs-a', since: 3_000 },
    ]);
    context.events.emitFrom(stamped(presenceEvent('hangup', '1000', 'call-r'), B, 3), Transport.Nats, 'fs-b', 4_000);
    expect(consumer.currentLamps()).toEqual([
      { user: '1001@127.0.0.1', state: 'ringing', node: 'fs-a', since: 3_000 },
      { user: '1000@127.0.0.1', state: 'idle', node: 'fs-b', since: 4_000 },
    ]);
    await consumer.stop();
  });

  it('puts the lamps of a node that went down out', async () => {
    const consumer = new BlfConsumer({ enabled: true, legacyParity: false });
    const context = fakeContext(NODE_A, { withState: false });
    await consumer.start(context);
    context.events.emitFrom(stamped(presenceEvent('answered', '1000', 'call-d'), B, 1), Transport.Multicast, 'fs-b');
    expect(consumer.currentLamps()[0].state).toBe('busy');
    context.events.emitFrom(FsEvent.create('CUSTOM', MulticastSubclass.PeerDown).add('Peer', 'fs-b'), Transport.Multicast, 'fs-b');
    await settle();
    expect(consumer.currentLamps()).toEqual([expect.objectContaining({ user: '1000@127.0.0.1', state: 'idle', node: 'fs-b' })]);
    await consumer.stop();
  });

  it('in legacy parity shows what the Lua made phones show: busy from the first ring to the hangup', async () => {
    const consumer = new BlfConsumer({ enabled: true, legacyParity: true });
    const context = fakeContext(NODE_A, { withState: false });
    await consumer.start(context);
    context.events.emitFrom(stamped(presenceEvent('ringing', '1000', 'call-p'), B, 1), Transport.Multicast, 'fs-b');
    expect(consumer.currentLamps()).toEqual([expect.objectContaining({ state: 'busy', node: 'fs-b' })]);
    context.events.emitFrom(stamped(presenceEvent('hangup', '1000', 'call-p'), B, 2), Transport.Multicast, 'fs-b');
    expect(consumer.currentLamps()).toEqual([expect.objectContaining({ state: 'idle' })]);
    await consumer.stop();
  });
});

describe('location consumer registrations (RegistrationSource)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `fsb-views-${process.pid}-`));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('lists the row lookups answer per user, with transport and the phone’s own expiry, filtered, and signals changes', async () => {
    const consumer = new LocationConsumer({ enabled: true, sink: 'sqlite', dbPath: join(dir, 'db'), flushMs: 5, flushMaxRows: 100, busyTimeoutMs: 20, peerDownGraceMs: 1_000, expiryMarginMs: 60_000 });
    expect(isRegistrationSource(consumer)).toBe(true);
    const context = fakeContext(NODE_A, { withState: false });
    await consumer.start(context);
    let changes = 0;
    consumer.onRegistrationChange(() => changes++);
    const before = Date.now();
    const tls = registerEvent('1001', 'example.com', 120);
    tls.set('status', 'Registered(TLS-NAT)');
    context.events.emitFrom(stamped(registerEvent('1000', 'example.com', 300), B, 1), Transport.Nats, 'fs-b');
    context.events.emitFrom(stamped(tls, A, 1), Transport.Esl, 'fs-a');
    expect(changes).toBe(2);
    const { rows, total } = consumer.currentRegistrations(10);
    expect(total).toBe(2);
    expect(rows.map((r) => [r.user, r.realm, r.node, r.hostname, r.address, r.transport])).toEqual([
      ['1000', 'example.com', 'fs-b', 'node-b', '10.99.0.2', 'UDP'],
      ['1001', 'example.com', 'fs-a', 'node-a', '10.99.0.1', 'TLS-NAT'],
    ]);
    expect(rows[0].expiresAt! - before).toBeGreaterThan(295_000);
    expect(rows[0].expiresAt! - before).toBeLessThanOrEqual(301_000);
    expect(consumer.currentRegistrations(10, 'tls').rows.map((r) => r.user)).toEqual(['1001']);
    expect(consumer.currentRegistrations(1)).toEqual({ rows: [rows[0]], total: 2 });
    await consumer.stop();
  });
});
