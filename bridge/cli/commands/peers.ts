import type { PeerInfo } from '../../pipeline/peers.js';

/**
 * `fs-event-bridge peers`: the legacy `multicast_peers` lines ("Peer fs-b UP; last seen
 * 10 seconds ago") followed by our counters; "No multicast peers seen" when empty.
 */
export function formatPeers(list: readonly PeerInfo[], now = Date.now()): string {
  if (list.length === 0) return 'No multicast peers seen\n';
  let out = '';
  for (const peer of list) {
    const seen = peer.lastHeartbeat === null ? 'no heartbeat seen' : `last seen ${Math.floor((now - peer.lastHeartbeat) / 1000)} seconds ago`;
    const upperBound = peer.gapsUpperBound > 0 ? `, up to ${peer.gapsUpperBound} missed by Event-Sequence` : '';
    out += `Peer ${peer.name} ${peer.up ? 'UP' : 'DOWN'}; ${seen}; ${peer.eventsReceived} events received, ${peer.gapsLost} lost${upperBound}\n`;
  }
  return out;
}
