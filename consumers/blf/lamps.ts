import type { Lamp, LampState } from '../../bridge/index.js';

/** Users remembered at once; beyond this the longest-idle one is forgotten. */
const MAX_USERS = 10_000;
/** Calls remembered per user (a user rarely has more than a few at once). */
const MAX_CALLS_PER_USER = 16;

interface CallLamp {
  state: LampState;
  node: string;
  at: number;
}

/**
 * The lamp per user, from the calls the BLF consumer tracks (local and remote, in the
 * states it decided a phone sees): busy beats ringing beats idle, and the lamp's node
 * and "since" are those of the call that sets it. Read by the cluster board through
 * the LampSource interface; bounded in users and calls per user.
 */
export class LampTable {
  private readonly users = new Map<string, { calls: Map<string, CallLamp>; lamp: Lamp }>();
  private readonly listeners = new Set<(lamp: Lamp) => void>();

  /**
   * A call of `user` is now in `state` (idle once it ended). A call only moves forward
   * (ringing, busy, ended): an older state arriving late changes nothing.
   */
  update(user: string, call: string, state: LampState, node: string, at: number): void {
    let entry = this.users.get(user);
    const known = entry?.calls.get(call);
    if (known && LIFE[state] <= LIFE[known.state]) return;
    if (!entry) {
      if (this.users.size >= MAX_USERS) this.forgetOneIdle();
      entry = { calls: new Map(), lamp: { user, state: 'idle', node, since: at } };
      this.users.set(user, entry);
    }
    // Ended calls are kept too (so a late copy cannot relight them), the oldest forgotten first.
    entry.calls.delete(call);
    entry.calls.set(call, { state, node, at });
    if (entry.calls.size > MAX_CALLS_PER_USER) entry.calls.delete(entry.calls.keys().next().value!);
    const next = strongest(entry.calls.values()) ?? { state: 'idle' as const, node, at };
    const lamp = entry.lamp;
    if (lamp.state === next.state && lamp.node === next.node) return;
    entry.lamp = { user, state: next.state, node: next.node, since: next.state === lamp.state ? lamp.since : at };
    // Re-inserting keeps the map in order of last change, so the oldest idle user is found first.
    this.users.delete(user);
    this.users.set(user, entry);
    for (const listener of this.listeners) listener(entry.lamp);
  }

  /** A call put out with its node is up again (the node came back): set it whatever it was. */
  relight(user: string, call: string, state: LampState, node: string, at: number): void {
    this.users.get(user)?.calls.delete(call);
    this.update(user, call, state, node, at);
  }

  /** Every call on `node` ended (the node went down). */
  nodeDown(node: string, at: number): void {
    for (const [user, entry] of [...this.users]) {
      for (const [call, lamp] of [...entry.calls]) if (lamp.node === node && lamp.state !== 'idle') this.update(user, call, 'idle', node, at);
    }
  }

  list(): Lamp[] {
    return [...this.users.values()].map((entry) => entry.lamp);
  }

  subscribe(listener: (lamp: Lamp) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private forgetOneIdle(): void {
    for (const [user, entry] of this.users) {
      if (entry.lamp.state === 'idle') {
        this.users.delete(user);
        return;
      }
    }
    // Every remembered user has a call up: forget the oldest change.
    this.users.delete(this.users.keys().next().value!);
  }
}

/** What a lamp shows when a user has several calls: busy beats ringing. */
const RANK: Record<LampState, number> = { idle: 0, ringing: 1, busy: 2 };
/** The order of a call's life: ringing, answered, ended. */
const LIFE: Record<LampState, number> = { ringing: 0, busy: 1, idle: 2 };

/** The call that sets the lamp, undefined when none is up. */
function strongest(calls: Iterable<CallLamp>): CallLamp | undefined {
  let best: CallLamp | undefined;
  for (const call of calls) if (call.state !== 'idle' && (!best || RANK[call.state] > RANK[best.state] || (RANK[call.state] === RANK[best.state] && call.at > best.at))) best = call;
  return best;
}
