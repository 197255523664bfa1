import { FsEvent } from '../event/event.js';
import { MulticastSubclass } from '../event/names.js';
import type { BridgeEvent } from './types.js';

/** What `fs-event-bridge peers` shows for one remote node (the `multicast_peers` API plus counters). */
export interface PeerInfo {
  name: string;
  /** Heard a heartbeat within the timeout. */
  up: boolean;
  /** Date.now() of the last HEARTBEAT, null if none was ever received. */
  lastHeartbeat: number | null;
  eventsReceived: number;
  /** Events known lost (gaps in a bridge sender's datagram counter); meaningful when lossKnown. */
  gapsLost: number;
  /**
   * The peer's datagrams carry the bridge's own sequence header, so gapsLost is its
   * exact loss. False for a legacy sender (its Event-Sequence also skips every event
   * outside its bindings, so gaps there say nothing) and a peer heard over NATS only.
   */
  lossKnown: boolean;
  /** Upper bound of events missed from legacy senders (Event-Sequence gaps, which also count events outside its bindings). */
  gapsUpperBound: number;
  /** Heartbeats that arrived older than the timeout (replayed or badly delayed), ignored for liveness. */
  staleHeartbeats: number;
  /** The transports its events arrived on. */
  transports: string[];
  /** A mod_event_multicast node: its datagrams carry no bridge sequence header and it is never heard on NATS. */
  legacy: boolean;
  /** Its events the bridge dropped (injection backlog or failure). */
  dropped: number;
}

/** Where sources report gaps; the PeerTracker implements it. */
export interface GapRecorder {
  recordGap(node: string, lost: number, exact: boolean): void;
  /** A datagram from `node` arrived, numbered by a bridge sender or not (a legacy node). */
  heardFrom?(node: string, bridge: boolean): void;
}

export interface PeerTrackerOptions {
  /** A peer silent for longer than this is down (legacy: 60 s). */
  timeoutMs?: number;
  /** How often silence is checked (legacy checks on its own 20 s heartbeat). */
  checkIntervalMs?: number;
  /** Most peers held (anyone on the group can invent senders). Default DEFAULT_MAX_PEERS. */
  maxPeers?: number;
  /** A peer that is not up and has been silent this long is forgotten. Default DEFAULT_FORGET_AFTER_MS. */
  forgetAfterMs?: number;
  /** An event whose sender found the table full of peers that are up: delivered, but not tracked. */
  onUntracked?: (node: string) => void;
  now?: () => number;
}

export const DEFAULT_MAX_PEERS = 256;
export const DEFAULT_FORGET_AFTER_MS = 3_600_000;
const MAX_NODE_NAME_BYTES = 255;

/**
 * What is wrong with a node name taken from the wire (Multicast-Sender, NATS origin), or
 * undefined. It becomes the `Peer` header of peerup/peerdown, `Orig-Multicast-Sender` of
 * every injected event, a log field and a label: a CR, LF or NUL would make sendevent
 * drop the header, so such a sender is refused, not tracked. Config texts follow the
 * same rule (bridge/config/schema.ts, format `text`).
 */
export function nodeNameProblem(name: string): string | undefined {
  if (name === '') return 'is empty';
  // eslint-disable-next-line no-control-regex -- control characters are exactly what must be found
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'contains a control character (CR, LF, NUL, tab...)';
  if (Buffer.byteLength(name) > MAX_NODE_NAME_BYTES) return `is longer than ${MAX_NODE_NAME_BYTES} bytes`;
  return undefined;
}

/** peerup / peerdown, built like mod_event_multicast builds them. */
export type PeerEventListener = (event: FsEvent, peer: string) => void;

interface PeerState extends Omit<PeerInfo, 'transports' | 'legacy' | 'lossKnown'> {
  transports: Set<string>;
  unnumbered: boolean;
  numbered: boolean;
  /** Date.now() of the last event of any kind. */
  lastSeen: number;
}

/**
 * HEARTBEAT-based liveness of remote nodes, for any transport (the key is the origin
 * node, which for multicast is Multicast-Sender). Mirrors mod_event_multicast: a new
 * or returning peer fires `CUSTOM multicast::peerup` (`Peer`, `Lastseen: Never` or the
 * epoch second it was last seen), a peer silent for over the timeout fires
 * `multicast::peerdown` (`Peer`, `Lastseen: <epoch>`). Consumers react to peerdown
 * (e.g. the location table drops that node's rows).
 *
 * Bounded, unlike the legacy module (which keeps every sender forever): anyone on the
 * group can invent senders, and 20,000 invented ones made 20,000 peers, 40,000
 * peerup/peerdown and 84 MB. At most `maxPeers` are held; a peer that is not up is
 * forgotten after `forgetAfterMs` of silence, or sooner when a new sender needs its
 * place (the one silent longest goes). While every held peer is up, a new sender is
 * not tracked (`onUntracked`): its events still flow, it just gets no peerup.
 */
export class PeerTracker implements GapRecorder {
  /** In order of last activity, oldest first (an event moves its peer to the end). */
  private readonly peers = new Map<string, PeerState>();
  private readonly timeoutMs: number;
  private readonly checkIntervalMs: number;
  private readonly maxPeers: number;
  private readonly forgetAfterMs: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;
  /** Peers forgotten since start (silent too long, or making room). */
  forgotten = 0;

  constructor(
    private readonly onPeerEvent: PeerEventListener,
    private readonly options: PeerTrackerOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.checkIntervalMs = options.checkIntervalMs ?? 5_000;
    this.maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
    this.forgetAfterMs = Math.max(options.forgetAfterMs ?? DEFAULT_FORGET_AFTER_MS, this.timeoutMs);
    this.now = options.now ?? Date.now;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.checkIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Feed every remote event: counts it, and a HEARTBEAT marks its node as seen —
   * unless the heartbeat is older than the timeout by its own Event-Date-Timestamp.
   * JetStream replays what a subscriber missed, so a node that died can still
   * deliver old heartbeats after its peerdown; those must not bring it back up.
   */
  observe(item: BridgeEvent): void {
    const peer = this.entry(item.origin.node, true);
    if (!peer) return;
    peer.eventsReceived++;
    peer.transports.add(item.origin.transport);
    if (item.event.name !== 'HEARTBEAT') return;
    const firedAtMicros = Number(item.event.get('Event-Date-Timestamp'));
    if (Number.isFinite(firedAtMicros) && firedAtMicros > 0 && this.now() - firedAtMicros / 1000 > this.timeoutMs) {
      peer.staleHeartbeats++;
      return;
    }
    this.heartbeat(peer);
  }

  recordGap(node: string, lost: number, exact: boolean): void {
    const peer = this.entry(node, false);
    if (!peer) return;
    if (exact) peer.gapsLost += lost;
    else peer.gapsUpperBound += lost;
  }

  heardFrom(node: string, bridge: boolean): void {
    const peer = this.entry(node, false);
    if (!peer) return;
    if (bridge) peer.numbered = true;
    else peer.unnumbered = true;
  }

  /** One of `node`'s events was dropped on its way into the local node. */
  recordDrop(node: string, count = 1): void {
    const peer = this.entry(node, false);
    if (peer) peer.dropped += count;
  }

  /** Fire peerdown for every up peer silent for longer than the timeout; forget peers silent past forgetAfterMs. */
  check(): void {
    const now = this.now();
    for (const peer of this.peers.values()) {
      if (peer.up && peer.lastHeartbeat !== null && now - peer.lastHeartbeat > this.timeoutMs) {
        peer.up = false;
        this.onPeerEvent(peerEvent(MulticastSubclass.PeerDown, peer.name, epochSeconds(peer.lastHeartbeat)), peer.name);
      }
      if (!peer.up && now - peer.lastSeen > this.forgetAfterMs) this.forget(peer.name);
    }
  }

  /** Peers held now, and how many of them are up. */
  counts(): { held: number; up: number } {
    let up = 0;
    for (const peer of this.peers.values()) if (peer.up) up++;
    return { held: this.peers.size, up };
  }

  /** A config reload forgets every peer, as the legacy module does. */
  clear(): void {
    this.peers.clear();
  }

  list(): PeerInfo[] {
    return [...this.peers.values()]
      .map(({ name, up, lastHeartbeat, eventsReceived, gapsLost, gapsUpperBound, staleHeartbeats, transports, numbered, unnumbered, dropped }) => ({
        name,
        up,
        lastHeartbeat,
        eventsReceived,
        gapsLost,
        lossKnown: numbered,
        gapsUpperBound,
        staleHeartbeats,
        transports: [...transports].sort(),
        legacy: unnumbered && !numbered && !transports.has('nats'),
        dropped,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  private heartbeat(peer: PeerState): void {
    const now = this.now();
    if (!peer.up) {
      const lastseen = peer.lastHeartbeat === null ? 'Never' : epochSeconds(peer.lastHeartbeat);
      peer.up = true;
      peer.lastHeartbeat = now;
      this.onPeerEvent(peerEvent(MulticastSubclass.PeerUp, peer.name, lastseen), peer.name);
      return;
    }
    peer.lastHeartbeat = now;
  }

  /** The peer of `name`, created if there is room; `touch` marks it active now (an event, not a gap report). */
  private entry(name: string, touch: boolean): PeerState | undefined {
    if (nodeNameProblem(name) !== undefined) return undefined;
    let peer = this.peers.get(name);
    if (peer) {
      if (touch) {
        peer.lastSeen = this.now();
        // Re-inserted: the map stays ordered by last activity, so the front is the stalest.
        this.peers.delete(name);
        this.peers.set(name, peer);
      }
      return peer;
    }
    if (this.peers.size >= this.maxPeers && !this.makeRoom()) {
      if (touch) this.options.onUntracked?.(name);
      return undefined;
    }
    peer = { name, up: false, lastHeartbeat: null, lastSeen: this.now(), eventsReceived: 0, gapsLost: 0, gapsUpperBound: 0, staleHeartbeats: 0, transports: new Set(), numbered: false, unnumbered: false, dropped: 0 };
    this.peers.set(name, peer);
    return peer;
  }

  /** Forget the stalest peer that is not up; false when every peer is up. */
  private makeRoom(): boolean {
    for (const peer of this.peers.values()) {
      if (!peer.up) {
        this.forget(peer.name);
        return true;
      }
    }
    return false;
  }

  private forget(name: string): void {
    this.peers.delete(name);
    this.forgotten++;
  }
}

function epochSeconds(ms: number): string {
  return String(Math.floor(ms / 1000));
}

function peerEvent(subclass: string, peer: string, lastseen: string): FsEvent {
  return FsEvent.create('CUSTOM', subclass).add('Peer', peer).add('Lastseen', lastseen);
}
