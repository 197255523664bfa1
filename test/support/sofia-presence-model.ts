/**
 * What mod_sofia 1.10.12 shows a phone watching a user's dialog for an event a node
 * receives (docs/freeswitch.md, "What mod_sofia does with injected events"): the ESL
 * simulator cannot run mod_sofia, so CI's consumer and end-to-end tests judge the
 * bridge by this model of it, checked against real nodes by `npm run test:freeswitch`.
 *
 * Modelled, from sofia.c `event_handler` and sofia_presence.c `sofia_presence_sub_callback`:
 * - `CUSTOM multicast::event` with `Orig-Event-Name: PRESENCE_IN` is handled as a
 *   PRESENCE_IN built from a fixed list of its `Orig-` headers (MOD_SOFIA_PRESENCE_HEADERS);
 *   a plain PRESENCE_IN (from `sendevent`) is handled as it is. Names match without case.
 * - No `unique-id`: no dialog (the watcher shows idle).
 * - Direction: `presence-call-direction` outbound is "recipient"; inbound is "initiator",
 *   except when `Caller-Username` is not the watched user, which reverses it.
 * - State: `answer-state`, else hangup for `channel-state: CS_HANGUP`, else `astate`;
 *   answered is confirmed, hangup is terminated, ringing is early for the recipient and
 *   confirmed for the initiator.
 * - `call-id` sends it to that one subscription only.
 * - `Orig-Event-Name: MESSAGE_WAITING` is an MWI NOTIFY for `MWI-Message-Account`.
 */
import type { FsEvent } from '../../bridge/event/event.js';
import { MOD_SOFIA_PRESENCE_HEADERS } from '../../consumers/blf/presence.js';

export interface ModelNotify {
  /** The watched user (user part of `from`). */
  user: string;
  uuid: string | null;
  /** RFC 4235 state; null when the NOTIFY carries no dialog (idle). */
  state: string | null;
  direction: 'initiator' | 'recipient' | null;
  /** Set when mod_sofia sends it to one subscription only. */
  subscription: string | null;
  /** How the event reached mod_sofia. */
  via: 'multicast::event' | 'PRESENCE_IN';
}

const COPIED = MOD_SOFIA_PRESENCE_HEADERS.map((name) => name.toLowerCase());

/** The PRESENCE_IN mod_sofia builds from an injected multicast::event, as header name -> value (lowercase names). */
function fromMulticastEvent(event: FsEvent): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of COPIED) {
    const value = event.get(`Orig-${name}`);
    if (value !== undefined && value !== '') out.set(name, value);
  }
  return out;
}

function fromPresenceIn(event: FsEvent): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, value] of event.headers) {
    const lower = name.toLowerCase();
    if (!out.has(lower)) out.set(lower, value);
  }
  return out;
}

export function modelNotify(event: FsEvent): ModelNotify | null {
  let headers: Map<string, string>;
  let via: ModelNotify['via'];
  if (event.name === 'CUSTOM' && event.subclass === 'multicast::event' && event.get('Orig-Event-Name') === 'PRESENCE_IN') {
    headers = fromMulticastEvent(event);
    via = 'multicast::event';
  } else if (event.name === 'PRESENCE_IN') {
    headers = fromPresenceIn(event);
    via = 'PRESENCE_IN';
  } else {
    return null;
  }
  const from = headers.get('from');
  if (!from || !from.includes('@')) return null;
  const user = from.slice(0, from.indexOf('@'));
  const subscription = via === 'PRESENCE_IN' ? (headers.get('call-id') ?? null) : null;
  const uuid = headers.get('unique-id') ?? null;
  if (!uuid) return { user, uuid: null, state: null, direction: null, subscription, via };
  let direction: 'initiator' | 'recipient' = (headers.get('presence-call-direction') ?? '').toLowerCase() === 'outbound' ? 'recipient' : 'initiator';
  if ((headers.get('presence-call-direction') ?? '').toLowerCase() === 'inbound' && headers.get('caller-username') !== user) direction = 'recipient';
  const hungUp = (headers.get('channel-state') ?? '').toUpperCase() === 'CS_HANGUP';
  let state = headers.get('answer-state') ?? (hungUp ? 'hangup' : headers.get('astate')) ?? (direction === 'initiator' ? 'confirmed' : 'early');
  state = state.toLowerCase();
  if (state === 'answered') state = 'confirmed';
  if (state === 'hangup') state = 'terminated';
  if (state === 'ringing') state = direction === 'recipient' ? 'early' : 'confirmed';
  return { user, uuid, state, direction, subscription, via };
}

/** Every dialog NOTIFY mod_sofia would send watchers for these events (all of a node's sendevents, say), in order. */
export function modelNotifies(events: Iterable<FsEvent>): ModelNotify[] {
  const out: ModelNotify[] = [];
  for (const event of events) {
    const notify = modelNotify(event);
    if (notify) out.push(notify);
  }
  return out;
}

export type ModelLamp = 'idle' | 'ringing' | 'busy';

const LAMP: Record<string, ModelLamp> = { early: 'ringing', confirmed: 'busy', terminated: 'idle' };

/** Lamp per watched user after these events, for watchers of every call (subscription-scoped answers left out). */
export function modelLamps(events: Iterable<FsEvent>): Map<string, ModelLamp> {
  const calls = new Map<string, { user: string; lamp: ModelLamp }>();
  for (const notify of modelNotifies(events)) {
    if (notify.subscription !== null || notify.uuid === null || notify.state === null) continue;
    calls.set(notify.uuid, { user: notify.user, lamp: LAMP[notify.state] ?? 'idle' });
  }
  const lamps = new Map<string, ModelLamp>();
  for (const { user, lamp } of calls.values()) {
    const current = lamps.get(user);
    // A user with one call up and one ended shows the call that is up.
    if (current === undefined || current === 'idle' || (current === 'ringing' && lamp === 'busy')) lamps.set(user, lamp);
  }
  return lamps;
}
