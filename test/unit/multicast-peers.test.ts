import { describe, expect, it } from 'vitest';
import { FsEvent } from '../../bridge/event/event.js';
import { PeerTracker } from '../../bridge/pipeline/peers.js';
import type { BridgeEvent } from '../../bridge/pipeline/types.js';
import { formatPeers } from '../../bridge/cli/commands/peers.js';

function remote(name: string, node: string): BridgeEvent {
  return { event: FsEvent.create(name), origin: { transport: 'multicast', node, receivedAt: 0 } };
}

describe('PeerTracker', () => {
  it('fires peerup (Lastseen Never), peerdown after the timeout, and peerup again with the last-seen epoch', () => {
    let now = 1_795_608_880_000;
    const fired: FsEvent[] = [];
    const peers = new PeerTracker((event) => fired.push(event), { timeoutMs: 60_000, now: () => now });

    peers.observe(remote('HEARTBEAT', 'fs-a'));
    peers.observe(remote('PRESENCE_IN', 'fs-a'));
    now += 20_000;
    peers.observe(remote('HEARTBEAT', 'fs-a'));
    expect(fired.map((e) => e.headers)).toEqual([
      [['Event-Name', 'CUSTOM'], ['Event-Subclass', 'multicast::peerup'], ['Peer', 'fs-a'], ['Lastseen', 'Never']],
    ]);

    now += 60_000;
    peers.check();
    expect(fired).toHaveLength(1);
    now += 1;
    peers.check();
    expect(fired[1].headers).toEqual([['Event-Name', 'CUSTOM'], ['Event-Subclass', 'multicast::peerdown'], ['Peer', 'fs-a'], ['Lastseen', '1795608900']]);
    peers.check();
    expect(fired).toHaveLength(2);

    now += 5_000;
    peers.observe(remote('HEARTBEAT', 'fs-a'));
    expect(fired[2].subclass).toBe('multicast::peerup');
    expect(fired[2].get('Lastseen')).toBe('1795608900');
  });

  it('a heartbeat older than the timeout (a JetStream replay after the node died) does not bring the peer back', () => {
    let now = 1_795_608_880_000;
    const fired: FsEvent[] = [];
    const peers = new PeerTracker((event) => fired.push(event), { timeoutMs: 2_000, now: () => now });
    const heartbeat = (firedAt: number) => {
      const item = remote('HEARTBEAT', 'fs-a');
      item.event.add('Event-Date-Timestamp', String(firedAt * 1000));
      return item;
    };
    peers.observe(heartbeat(now - 100));
    expect(fired.map((e) => e.subclass)).toEqual(['multicast::peerup']);
    now += 2_500;
    peers.check();
    expect(fired.map((e) => e.subclass)).toEqual(['multicast::peerup', 'multicast::peerdown']);
    // Delivered late: fired 3 s ago, before the node went silent.
    peers.observe(heartbeat(now - 3_000));
    expect(fired).toHaveLength(2);
    expect(peers.list()[0]).toMatchObject({ up: false, staleHeartbeats: 1 });
    // A fresh one does.
    peers.observe(heartbeat(now - 10));
    expect(fired.map((e) => e.subclass)).toEqual(['multicast::peerup', 'multicast::peerdown', 'multicast::peerup']);
  });

  it('lists peers with heartbeat, state, events and gaps; events without heartbeats do not fire peerup', () => {
    const now = 1_000_000;
    const fired: FsEvent[] = [];
    const peers = new PeerTracker((event) => fired.push(event), { now: () => now });
    peers.observe(remote('HEARTBEAT', 'fs-b'));
    peers.observe(remote('PRESENCE_IN', 'fs-b'));
    peers.observe(remote('PRESENCE_IN', 'legacy-c'));
    peers.recordGap('fs-b', 3, true);
    peers.recordGap('legacy-c', 7, false);
    peers.heardFrom('fs-b', true);
    peers.heardFrom('legacy-c', false);
    peers.recordDrop('fs-b', 2);
    expect(fired).toHaveLength(1);
    expect(peers.list()).toEqual([
      { name: 'fs-b', up: true, lastHeartbeat: now, eventsReceived: 2, gapsLost: 3, lossKnown: true, gapsUpperBound: 0, staleHeartbeats: 0, transports: ['multicast'], legacy: false, dropped: 2 },
      { name: 'legacy-c', up: false, lastHeartbeat: null, eventsReceived: 1, gapsLost: 0, lossKnown: false, gapsUpperBound: 7, staleHeartbeats: 0, transports: ['multicast'], legacy: true, dropped: 0 },
    ]);
    expect(formatPeers(peers.list(), now + 10_000)).toBe(
      'Peer fs-b UP; last seen 10 seconds ago; 2 events received, 3 lost\n' +
        'Peer legacy-c DOWN; no heartbeat seen; 1 events received, loss unknown (no bridge sequence header)\n',
    );
    peers.clear();
    expect(peers.list()).toEqual([]);
    expect(formatPeers([], now)).toBe('No multicast peers seen\n');
  });

  it('checks on its own timer', async () => {
    let now = 0;
    const fired: string[] = [];
    const peers = new PeerTracker((event, peer) => fired.push(`${event.subclass} ${peer}`), { timeoutMs: 50, checkIntervalMs: 10, now: () => now });
    peers.start();
    peers.observe(remote('HEARTBEAT', 'fs-a'));
    now = 100;
    await new Promise((resolve) => setTimeout(resolve, 40));
    peers.stop();
    expect(fired).toEqual(['multicast::peerup fs-a', 'multicast::peerdown fs-a']);
  });
});
