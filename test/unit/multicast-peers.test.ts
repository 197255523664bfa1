import { describe, expect, it } from 'vitest';
import { FsEvent } from '../../bridge/event/event.js';
import { PeerTracker, nodeNameProblem } from '../../bridge/pipeline/peers.js';
import { Budget, Metrics, OTHER_NODE } from '../../bridge/observability/metrics.js';
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

  it('holds at most maxPeers: a sender that is not up makes room (the stalest first), while all are up a new one is not tracked', () => {
    let now = 1_000_000;
    const fired: string[] = [];
    const untracked: string[] = [];
    const peers = new PeerTracker((event, peer) => fired.push(`${event.subclass} ${peer}`), { maxPeers: 3, timeoutMs: 1_000, now: () => now, onUntracked: (node) => untracked.push(node) });
    peers.observe(remote('PRESENCE_IN', 'quiet-1'));
    now += 10;
    peers.observe(remote('PRESENCE_IN', 'quiet-2'));
    now += 10;
    peers.observe(remote('HEARTBEAT', 'up-1'));
    // quiet-1 is touched again, so quiet-2 is now the stalest that is not up.
    peers.observe(remote('PRESENCE_IN', 'quiet-1'));
    peers.observe(remote('HEARTBEAT', 'up-2'));
    expect(peers.list().map((p) => p.name)).toEqual(['quiet-1', 'up-1', 'up-2']);
    peers.observe(remote('HEARTBEAT', 'up-3'));
    expect(peers.list().map((p) => p.name)).toEqual(['up-1', 'up-2', 'up-3']);
    expect(peers.forgotten).toBe(2);
    // Full of peers that are up: the newcomer's events are not tracked (the caller still delivers them).
    peers.observe(remote('HEARTBEAT', 'up-4'));
    peers.recordGap('up-4', 5, true);
    expect(untracked).toEqual(['up-4']);
    expect(peers.counts()).toEqual({ held: 3, up: 3 });
    expect(fired).toEqual(['multicast::peerup up-1', 'multicast::peerup up-2', 'multicast::peerup up-3']);
  });

  it('forgets a peer that is down and silent for forgetAfterMs, and never one that is up', () => {
    let now = 1_000_000;
    const peers = new PeerTracker(() => undefined, { timeoutMs: 1_000, forgetAfterMs: 5_000, now: () => now });
    peers.observe(remote('HEARTBEAT', 'dies'));
    peers.observe(remote('HEARTBEAT', 'lives'));
    for (let t = 0; t < 10; t++) {
      now += 900;
      peers.observe(remote('HEARTBEAT', 'lives'));
      peers.check();
    }
    expect(peers.list().map((p) => p.name)).toEqual(['lives']);
    expect(peers.forgotten).toBe(1);
  });

  it('refuses sender names with CR, LF, NUL, empty or over 255 bytes: no peer, no peerup without Peer', () => {
    const fired: FsEvent[] = [];
    const peers = new PeerTracker((event) => fired.push(event));
    for (const name of ['evil\r\nPeer: fs-a', 'nul\0', '', 'x'.repeat(256)]) peers.observe(remote('HEARTBEAT', name));
    expect(peers.list()).toEqual([]);
    expect(fired).toEqual([]);
    expect(nodeNameProblem('fs-a')).toBeUndefined();
    expect(nodeNameProblem('é'.repeat(127))).toBeUndefined();
    expect(nodeNameProblem('é'.repeat(128))).toMatch(/longer than 255 bytes/);
  });
});

describe('Budget', () => {
  it('admits limit per interval and tells the next admitted one how many it refused', () => {
    let now = 0;
    const budget = new Budget(2, 1_000, () => now);
    expect([budget.admit(), budget.admit(), budget.admit(), budget.admit()]).toEqual([0, 0, -1, -1]);
    now = 999;
    expect(budget.admit()).toBe(-1);
    now = 1_000;
    expect(budget.admit()).toBe(3);
    expect(budget.admit()).toBe(0);
    expect(budget.admit()).toBe(-1);
  });
});

describe('Metrics.nodeLabel', () => {
  it('hands out at most maxNodeLabels node names, then _other', async () => {
    const metrics = new Metrics({ maxNodeLabels: 2 });
    expect(['a', 'b', 'c', 'a', 'd'].map((n) => metrics.nodeLabel(n))).toEqual(['a', 'b', OTHER_NODE, 'a', OTHER_NODE]);
  });
});

