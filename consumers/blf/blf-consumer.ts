import { Counter } from 'prom-client';
import { type Consumer, type ConsumerContext, type StateStore, type BlfConsumerConfig, type FsEvent, MulticastSubclass, DropReporter, LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/index.js';
import { DIALOG_RANK, DialogState, callPresence, dialogPresence, legacyPresence, type CallPresence } from './presence.js';

export type LampState = 'idle' | 'ringing' | 'busy';

/** One call that lights a lamp, as kept in memory and in the state bucket. */
export interface TrackedCall extends CallPresence {
  /** Switchname of the node the call is on. */
  node: string;
  updatedAt: number;
}

export const DEFAULT_BLF_BUCKET = 'fsb_blf';
/** Calls tracked at once; beyond this new calls are dropped (counted) rather than growing without bound. */
const MAX_TRACKED_CALLS = 100_000;
/** A terminated call is remembered this long so late or repeated events for it stay ignored. */
const TERMINATED_MEMORY_MS = 60_000;

function stateKey(user: string, call: string): string {
  return `${user}/${call}`;
}

function lampOf(state: DialogState): LampState {
  return state === DialogState.Early ? 'ringing' : state === DialogState.Confirmed ? 'busy' : 'idle';
}

/**
 * Lights BLF lamps on this node for calls on other nodes.
 *
 * Parity mode fires exactly what startup_script_1.lua fired. The improved mode maps
 * the call's real state (ringing -> early, answered -> confirmed, hangup ->
 * terminated), keeps its direction and Unique-ID, never fires the same or an older
 * state of a call twice, and keeps the calls of this node in the state bucket so a
 * restarted node can relight the lamps of calls that are still up elsewhere.
 *
 * Loop safety has two layers: only remote events without the loop-guard header are
 * acted on (what we fire carries the guard, so the bridge never republishes it), and
 * in improved mode the per-call state only moves forward, so even a republished copy
 * would be ignored.
 */
export class BlfConsumer implements Consumer {
  readonly name = 'blf';
  private context: ConsumerContext | null = null;
  private unsubscribe: (() => void) | null = null;
  private store: StateStore | null = null;
  private drops: DropReporter | null = null;
  private fired: Counter | null = null;
  /** Remote calls whose lamps we drive, by user/call. */
  private readonly remoteCalls = new Map<string, TrackedCall>();
  /** Last state written to the bucket for calls on this node, by user/call. */
  private readonly ownCalls = new Map<string, DialogState>();
  private readonly pending = new Set<Promise<unknown>>();

  constructor(private readonly config: BlfConsumerConfig) {}

  async start(context: ConsumerContext): Promise<void> {
    this.context = context;
    this.drops = new DropReporter('blf', context.metrics, context.logger);
    this.fired = context.metrics.counter('fsb_blf_presence_fired_total', 'PRESENCE_IN events the BLF consumer fired into the local node');
    if (!this.config.legacyParity && context.openState) {
      this.store = await context.openState(this.config.stateBucket ?? DEFAULT_BLF_BUCKET);
      await this.relightFromState(context, this.store);
    }
    this.unsubscribe = context.events.subscribe((item) => this.onEvent(item));
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.forgetTimer) clearTimeout(this.forgetTimer);
    this.forgetTimer = null;
    await Promise.allSettled([...this.pending]);
  }

  /** Lamp per user from the calls seen on other nodes (busy beats ringing). */
  lamps(): Map<string, { state: LampState; call: string }> {
    const out = new Map<string, { state: LampState; call: string }>();
    for (const call of this.remoteCalls.values()) {
      const lamp = lampOf(call.state);
      if (lamp === 'idle') continue;
      const current = out.get(call.user);
      if (!current || (current.state === 'ringing' && lamp === 'busy')) out.set(call.user, { state: lamp, call: call.call });
    }
    return out;
  }

  private onEvent(item: BridgeEvent): void {
    const event = item.event;
    if (event.has(LOOP_GUARD_HEADER)) return;
    if (event.name === 'CUSTOM' && event.subclass === MulticastSubclass.PeerDown) {
      if (!this.config.legacyParity) this.onPeerDown(event.get('Peer'));
      return;
    }
    if (event.name !== 'PRESENCE_IN') return;
    const remote = item.origin.transport !== Transport.Esl;
    if (this.config.legacyParity) {
      if (!remote) return;
      const out = legacyPresence(event);
      if (out) this.fire(out);
      return;
    }
    const call = callPresence(event);
    if (!call) return;
    if (remote) this.onRemoteCall(call, item.origin.node, item.origin.receivedAt);
    else this.onOwnCall(call);
  }

  private onRemoteCall(call: CallPresence, node: string, now: number): void {
    const key = stateKey(call.user, call.call);
    const known = this.remoteCalls.get(key);
    if (known && DIALOG_RANK[call.state] <= DIALOG_RANK[known.state]) return;
    if (!known && this.remoteCalls.size >= MAX_TRACKED_CALLS) {
      this.forgetTerminated();
      if (this.remoteCalls.size >= MAX_TRACKED_CALLS) {
        this.drops?.drop('too_many_calls');
        return;
      }
    }
    this.remoteCalls.set(key, { ...call, node, updatedAt: now });
    this.fire(dialogPresence(call));
  }

  /** Calls on this node: nothing to fire (FreeSWITCH serves its own phones), only the shared state to keep. */
  private onOwnCall(call: CallPresence): void {
    const store = this.store;
    const context = this.context;
    if (!store || !context) return;
    const key = stateKey(call.user, call.call);
    const known = this.ownCalls.get(key);
    if (known !== undefined && DIALOG_RANK[call.state] <= DIALOG_RANK[known]) return;
    if (call.state === DialogState.Terminated) {
      this.ownCalls.delete(key);
      this.track(store.delete(key), 'state_write_failed');
      return;
    }
    this.ownCalls.set(key, call.state);
    const tracked: TrackedCall = { ...call, node: context.node.name, updatedAt: Date.now() };
    this.track(store.put(key, JSON.stringify(tracked)), 'state_write_failed');
  }

  /** A node that went silent has no calls left: put its lamps out. */
  private onPeerDown(node: string | undefined): void {
    if (!node) return;
    for (const call of this.remoteCalls.values()) {
      if (call.node !== node || call.state === DialogState.Terminated) continue;
      const ended: CallPresence = { ...call, state: DialogState.Terminated, status: 'CS_HANGUP' };
      this.remoteCalls.set(stateKey(call.user, call.call), { ...call, state: DialogState.Terminated, updatedAt: Date.now() });
      this.fire(dialogPresence(ended));
    }
  }

  private async relightFromState(context: ConsumerContext, store: StateStore): Promise<void> {
    const entries = await store.entries();
    for (const [key, value] of entries) {
      let call: TrackedCall;
      try {
        call = JSON.parse(value) as TrackedCall;
      } catch {
        this.drops?.drop('bad_state_entry', key);
        continue;
      }
      if (typeof call.user !== 'string' || typeof call.call !== 'string' || !(call.state in DIALOG_RANK)) {
        this.drops?.drop('bad_state_entry', key);
        continue;
      }
      if (call.node === context.node.name) {
        // Our own calls: remember what the bucket holds so the next event for them is compared with it.
        this.ownCalls.set(key, call.state);
        continue;
      }
      this.remoteCalls.set(key, call);
      this.fire(dialogPresence(call));
    }
  }

  private forgetTerminated(): void {
    for (const [key, call] of this.remoteCalls) {
      if (call.state === DialogState.Terminated) this.remoteCalls.delete(key);
    }
  }

  private fire(event: FsEvent): void {
    const context = this.context;
    if (!context) return;
    this.fired?.inc();
    this.track(context.local.sendEvent(event), 'send_failed');
    this.scheduleForget();
  }

  private forgetTimer: NodeJS.Timeout | null = null;

  /** Terminated calls are kept a while (late duplicates), then dropped so the table stays small. */
  private scheduleForget(): void {
    if (this.forgetTimer) return;
    this.forgetTimer = setTimeout(() => {
      this.forgetTimer = null;
      const cutoff = Date.now() - TERMINATED_MEMORY_MS;
      for (const [key, call] of this.remoteCalls) {
        if (call.state === DialogState.Terminated && call.updatedAt <= cutoff) this.remoteCalls.delete(key);
      }
    }, TERMINATED_MEMORY_MS);
    this.forgetTimer.unref();
  }

  private track(promise: Promise<unknown>, cause: string): void {
    const tracked = promise.catch((error: unknown) => this.drops?.drop(cause, error instanceof Error ? error.message : String(error)));
    this.pending.add(tracked);
    void tracked.finally(() => this.pending.delete(tracked));
  }
}

export function createBlfConsumer(config: BlfConsumerConfig): Consumer {
  return new BlfConsumer(config);
}
