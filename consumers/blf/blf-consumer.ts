import { Counter } from 'prom-client';
import { type Consumer, type ConsumerContext, type StateStore, type BlfConsumerConfig, type FsEvent, type Lamp, type LampSource, type LampState, MulticastSubclass, DropReporter, LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/index.js';
import { LampTable } from './lamps.js';
import { DIALOG_RANK, DialogState, callPresence, hangupEvent, legacyPresence, probeAnswer, relightEvent, type CallPresence } from './presence.js';

export type { LampState };

/** One call that lights a lamp, as kept in memory and in the state bucket. */
export interface TrackedCall extends CallPresence {
  /** Switchname of the node the call is on. */
  node: string;
  updatedAt: number;
  /** Put out because its node went down, not because it ended (memory only): a peerup may relight it. */
  lostWithNode?: boolean;
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

function isTrackedCall(value: unknown): value is TrackedCall {
  const call = value as Partial<TrackedCall> | null;
  return (
    typeof call === 'object' &&
    call !== null &&
    typeof call.user === 'string' &&
    typeof call.call === 'string' &&
    typeof call.node === 'string' &&
    typeof call.state === 'string' &&
    call.state in DIALOG_RANK &&
    Array.isArray(call.presence) &&
    call.presence.every((h) => Array.isArray(h) && h.length === 2 && typeof h[0] === 'string' && typeof h[1] === 'string')
  );
}

/**
 * BLF lamps on this node's phones for calls on other nodes.
 *
 * mod_sofia already lights them: the bridge injects every remote PRESENCE_IN as the
 * `multicast::event` mod_sofia consumes, and its presence code sends the phones what
 * the call's own node sends (measured on 1.10.12, docs/freeswitch.md). So in the
 * default mode this consumer fires nothing for a live call, and only does what
 * mod_sofia cannot do by itself, each time in the shape mod_sofia itself produces:
 *
 * - a phone that subscribes during a remote call: mod_sofia fires PRESENCE_PROBE and
 *   answers it from its own calls only; the consumer answers it for the remote ones,
 *   to that subscription only (`call-id`);
 * - a node that went down (peerdown): its calls' lamps are put out, by injecting the
 *   hangup its node can no longer send;
 * - a node that comes back (peerup), or this bridge (re)starting: calls still in the
 *   state bucket are relit, by injecting their last presence again.
 *
 * The node that owns a call keeps it in the state bucket (`<user>/<unique-id>`, deleted
 * at hangup; only the owner writes a key), and removes at start the entries of calls its
 * FreeSWITCH no longer has.
 *
 * Parity mode fires exactly what startup_script_1.lua fired; mod_sofia's own handling
 * comes on top, so lamps get doubled NOTIFYs as they did with the Lua.
 */
export class BlfConsumer implements Consumer, LampSource {
  readonly name = 'blf';
  readonly localBindings = 'PRESENCE_IN PRESENCE_PROBE';
  private context: ConsumerContext | null = null;
  private unsubscribe: (() => void) | null = null;
  private store: StateStore | null = null;
  private drops: DropReporter | null = null;
  private fired: Counter | null = null;
  private probesAnswered: Counter | null = null;
  /** Remote calls, by user/call. */
  private readonly remoteCalls = new Map<string, TrackedCall>();
  /** Last state written to the bucket for calls on this node, by user/call. */
  private readonly ownCalls = new Map<string, DialogState>();
  private readonly pending = new Set<Promise<unknown>>();
  private forgetTimer: NodeJS.Timeout | null = null;
  /** The lamp per user as phones see it, local and remote calls alike (for the cluster board). */
  private readonly lampTable = new LampTable();

  constructor(private readonly config: BlfConsumerConfig) {}

  async start(context: ConsumerContext): Promise<void> {
    this.context = context;
    this.drops = new DropReporter('blf', context.metrics, context.logger);
    this.fired = context.metrics.counter('fsb_blf_presence_fired_total', 'Events the BLF consumer fired into the local node (probe answers, lamps put out or relit; parity mode: the Lua PRESENCE_IN)');
    this.probesAnswered = context.metrics.counter('fsb_blf_probes_answered_total', 'PRESENCE_PROBE answers the BLF consumer fired for calls on other nodes');
    if (!this.config.legacyParity && context.openState) {
      this.store = await context.openState(this.config.stateBucket ?? DEFAULT_BLF_BUCKET);
      await this.loadState(context, this.store);
      // Ready means done: FreeSWITCH has acknowledged every relit lamp before start() resolves.
      await Promise.allSettled([...this.pending]);
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

  currentLamps(): Lamp[] {
    return this.lampTable.list();
  }

  onLampChange(listener: (lamp: Lamp) => void): () => void {
    return this.lampTable.subscribe(listener);
  }

  private onEvent(item: BridgeEvent): void {
    const event = item.event;
    if (event.has(LOOP_GUARD_HEADER)) return;
    const remote = item.origin.transport !== Transport.Esl;
    if (event.name === 'CUSTOM') {
      if (this.config.legacyParity) return;
      if (event.subclass === MulticastSubclass.PeerDown) this.onPeerDown(event.get('Peer'));
      else if (event.subclass === MulticastSubclass.PeerUp) this.onPeerUp(event.get('Peer'));
      return;
    }
    if (event.name === 'PRESENCE_PROBE') {
      if (!remote && !this.config.legacyParity) this.onProbe(event);
      return;
    }
    if (event.name !== 'PRESENCE_IN') return;
    if (this.config.legacyParity) {
      if (!remote) return;
      const out = legacyPresence(event);
      if (out) {
        // What the Lua made phones show: confirmed from the first ring to the hangup.
        this.lampTable.update(out.get('from')!, out.get('unique-id') ?? '', out.get('answer-state') === 'terminated' ? 'idle' : 'busy', item.origin.node, item.origin.receivedAt);
        this.fire(out);
      }
      return;
    }
    const call = callPresence(event);
    if (!call) return;
    this.lampTable.update(call.user, call.call, lampOf(call.state), item.origin.node, item.origin.receivedAt);
    if (remote) this.onRemoteCall(call, item.origin.node, item.origin.receivedAt);
    else this.onOwnCall(call);
  }

  /** mod_sofia shows it from the injected event: only remember it, for probes, peerdown and relighting. */
  private onRemoteCall(call: CallPresence, node: string, now: number): void {
    const key = stateKey(call.user, call.call);
    const known = this.remoteCalls.get(key);
    if (known && !known.lostWithNode && DIALOG_RANK[call.state] <= DIALOG_RANK[known.state]) return;
    if (!known && !this.roomForCall()) return;
    this.remoteCalls.set(key, { ...call, node, updatedAt: now });
    if (call.state === DialogState.Terminated) this.scheduleForget();
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

  /** A phone here subscribed: answer for the remote calls of its target, to that subscription only. */
  private onProbe(probe: FsEvent): void {
    const target = probe.get('to');
    if (!target || probe.get('expires') === '0' || !probe.get('sub-call-id')) return;
    if ((probe.get('proto') ?? 'sip') !== 'sip') return;
    for (const call of this.remoteCalls.values()) {
      if (call.user !== target || call.state === DialogState.Terminated) continue;
      this.probesAnswered?.inc();
      this.fire(probeAnswer(call, probe));
    }
  }

  /** A node that went silent has no calls left: put its lamps out as its hangup would have. */
  private onPeerDown(node: string | undefined): void {
    const context = this.context;
    if (!node || !context) return;
    for (const [key, call] of this.remoteCalls) {
      if (call.node !== node || call.state === DialogState.Terminated) continue;
      this.remoteCalls.set(key, { ...call, state: DialogState.Terminated, updatedAt: Date.now(), lostWithNode: true });
      this.lampTable.update(call.user, call.call, 'idle', node, Date.now());
      this.fire(hangupEvent(call, node, context.node.name));
    }
    this.scheduleForget();
  }

  /** A node that came back may still have calls up: relight those its bucket entries name. */
  private onPeerUp(node: string | undefined): void {
    const store = this.store;
    const context = this.context;
    if (!node || !store || !context) return;
    this.track(
      store.entries().then((entries) => {
        for (const [key, value] of entries) {
          const call = this.parseEntry(key, value);
          if (call && call.node === node) this.relight(key, call);
        }
      }),
      'state_read_failed',
    );
  }

  private relight(key: string, call: TrackedCall): void {
    const context = this.context;
    if (!context) return;
    const known = this.remoteCalls.get(key);
    // Lit already (its events arrived meanwhile), or really ended: nothing to relight.
    if (known && !known.lostWithNode) return;
    if (!known && !this.roomForCall()) return;
    this.remoteCalls.set(key, { ...call, updatedAt: Date.now() });
    this.lampTable.relight(call.user, call.call, lampOf(call.state), call.node, Date.now());
    this.fire(relightEvent(call, call.node, context.node.name));
  }

  private parseEntry(key: string, value: string): TrackedCall | null {
    let call: unknown;
    try {
      call = JSON.parse(value);
    } catch {
      call = null;
    }
    if (!isTrackedCall(call)) {
      this.drops?.drop('bad_state_entry', key);
      return null;
    }
    return call;
  }

  /** At start: relight the calls other nodes have up, and forget our own calls FreeSWITCH no longer has. */
  private async loadState(context: ConsumerContext, store: StateStore): Promise<void> {
    const entries = await store.entries();
    for (const [key, value] of entries) {
      const call = this.parseEntry(key, value);
      if (!call) continue;
      if (call.node !== context.node.name) {
        this.relight(key, call);
        continue;
      }
      // Our own call: still up (a bridge restart) or gone with a FreeSWITCH restart?
      const exists = await context.local.api(`uuid_exists ${call.call}`).then(
        (answer) => answer.trim() === 'true',
        () => true, // FreeSWITCH unreachable: keep the entry rather than guess
      );
      if (exists) {
        this.ownCalls.set(key, call.state);
        this.lampTable.update(call.user, call.call, lampOf(call.state), call.node, call.updatedAt);
      }
      else this.track(store.delete(key), 'state_write_failed');
    }
  }

  private roomForCall(): boolean {
    if (this.remoteCalls.size < MAX_TRACKED_CALLS) return true;
    for (const [key, call] of this.remoteCalls) if (call.state === DialogState.Terminated) this.remoteCalls.delete(key);
    if (this.remoteCalls.size < MAX_TRACKED_CALLS) return true;
    this.drops?.drop('too_many_calls');
    return false;
  }

  private fire(event: FsEvent): void {
    const context = this.context;
    if (!context) return;
    this.fired?.inc();
    this.track(context.local.sendEvent(event), 'send_failed');
  }

  /** Terminated calls are kept a while (late duplicates), then dropped so the table stays small. */
  private scheduleForget(): void {
    if (this.forgetTimer) return;
    this.forgetTimer = setTimeout(() => {
      this.forgetTimer = null;
      const cutoff = Date.now() - TERMINATED_MEMORY_MS;
      let left = false;
      for (const [key, call] of this.remoteCalls) {
        if (call.state !== DialogState.Terminated) continue;
        if (call.updatedAt <= cutoff) this.remoteCalls.delete(key);
        else left = true;
      }
      if (left) this.scheduleForget();
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
