import { FsEvent, toMulticastEvent, type Header } from '../../bridge/index.js';

/** RFC 4235 dialog states of a call as a lamp shows it. */
export const DialogState = { Early: 'early', Confirmed: 'confirmed', Terminated: 'terminated' } as const;
export type DialogState = (typeof DialogState)[keyof typeof DialogState];

/** Order of a call's life: a state never goes back (a late or replayed event must not relight a lamp). */
export const DIALOG_RANK: Record<DialogState, number> = { early: 0, confirmed: 1, terminated: 2 };

/** The channel states startup_script_1.lua reacts to. */
const LEGACY_STATUSES = new Set(['CS_EXECUTE', 'CS_ROUTING', 'CS_HANGUP']);

/**
 * What startup_script_1.lua fires for a remote PRESENCE_IN, header for header (FreeSWITCH
 * adds Core-UUID, dates and the rest when the event is fired), or null when the script
 * would ignore it. Kept exact for parity, including its mistakes: every call is
 * `outbound`, ringing shows as confirmed, `answered` is ignored.
 */
export function legacyPresence(remote: FsEvent): FsEvent | null {
  const status = remote.get('status');
  if (status === undefined || !LEGACY_STATUSES.has(status)) return null;
  const from = remote.get('from') ?? '';
  const event = FsEvent.create('PRESENCE_IN');
  event.add('proto', 'sip').add('login', from).add('from', from).add('status', status);
  // Lua's addHeader with a nil value adds nothing; so do we.
  const rpid = remote.get('rpid');
  if (rpid !== undefined) event.add('rpid', rpid);
  event.add('event_type', 'presence').add('alt_event_type', 'dialog').add('event_count', '1');
  const uuid = remote.get('Unique-ID');
  if (uuid !== undefined) event.add('unique-id', uuid);
  event.add('Presence-Call-Direction', 'outbound');
  event.add('answer-state', status === 'CS_HANGUP' ? 'terminated' : 'confirmed');
  return event;
}

const STATUS_TO_DIALOG: Record<string, DialogState> = {
  CS_ROUTING: DialogState.Early,
  answered: DialogState.Confirmed,
  // Older FreeSWITCH versions report a bridged call as CS_EXECUTE.
  CS_EXECUTE: DialogState.Confirmed,
  CS_HANGUP: DialogState.Terminated,
};

const ANSWER_STATE_TO_DIALOG: Record<string, DialogState> = {
  ringing: DialogState.Early,
  early: DialogState.Early,
  answered: DialogState.Confirmed,
  confirmed: DialogState.Confirmed,
  hangup: DialogState.Terminated,
  terminated: DialogState.Terminated,
};

/**
 * The headers mod_sofia copies from a `multicast::event` carrying a PRESENCE_IN before
 * running its presence code on it (sofia.c `event_handler`, 1.10.12), matched without
 * regard to case as FreeSWITCH does. A call's presence is kept as exactly these, so an
 * event rebuilt from them makes mod_sofia send what it sent for the original.
 */
export const MOD_SOFIA_PRESENCE_HEADERS: readonly string[] = [
  'alt_event_type',
  'answer-state',
  'astate',
  'call-direction',
  'Caller-Callee-ID-Number',
  'Caller-Caller-ID-Name',
  'Caller-Caller-ID-Number',
  'Caller-Destination-Number',
  'Caller-Direction',
  'Caller-Username',
  'channel-state',
  'force-status',
  'from',
  'login',
  'Other-Leg-Caller-ID-Name',
  'Other-Leg-Caller-ID-Number',
  'presence-call-direction',
  'presence-call-info-state',
  'Presence-Privacy',
  'proto',
  'register-source',
  'resub',
  'rpid',
  'status',
  'Unique-ID',
  'variable_sip_from_user',
  'variable_sip_to_user',
];

const COPIED = new Set(MOD_SOFIA_PRESENCE_HEADERS.map((name) => name.toLowerCase()));
/** A presence value beyond this is not a call's presence (bounded state per call). */
const MAX_HEADER_BYTES = 1_024;

/** Call presence reduced to what a lamp needs; null for presence that is not about a call (Registered, Unregistered, notes). */
export interface CallPresence {
  /** `from`: user@host. */
  user: string;
  /** The call's Unique-ID. */
  call: string;
  state: DialogState;
  /** The original's MOD_SOFIA_PRESENCE_HEADERS, in its order and spelling. */
  presence: Header[];
}

export function callPresence(event: FsEvent): CallPresence | null {
  const user = event.get('from');
  const call = event.get('Unique-ID');
  if (!user || !call) return null;
  const status = event.get('status') ?? '';
  // `status` first: a legacy Lua re-fire says CS_ROUTING with answer-state confirmed, and ringing is what it means.
  const state = STATUS_TO_DIALOG[status] ?? ANSWER_STATE_TO_DIALOG[(event.get('Answer-State') ?? '').toLowerCase()];
  if (state === undefined) return null;
  const presence = event.headers.filter(([name, value]) => COPIED.has(name.toLowerCase()) && value.length <= MAX_HEADER_BYTES);
  return { user, call, state, presence: presence.map(([name, value]) => [name, value]) };
}

function presenceEvent(headers: readonly Header[]): FsEvent {
  const event = FsEvent.create('PRESENCE_IN');
  for (const [name, value] of headers) event.add(name, value);
  return event;
}

/**
 * The `multicast::event` the call's own node would have delivered for this presence:
 * injected, mod_sofia runs the same code on it as on the original, so phones see what
 * they saw for the original.
 */
export function relightEvent(call: CallPresence, node: string, injectedBy: string): FsEvent {
  return toMulticastEvent(presenceEvent(call.presence), node, injectedBy);
}

/** The same call as its hangup: what mod_sofia would have shown had the dead node's CS_HANGUP arrived. */
export function hangupEvent(call: CallPresence, node: string, injectedBy: string): FsEvent {
  const ended = presenceEvent(call.presence);
  ended.set('status', 'CS_HANGUP').set('Answer-State', 'hangup').set('Channel-State', 'CS_HANGUP');
  ended.delete('astate');
  return toMulticastEvent(ended, node, injectedBy);
}

/**
 * The answer to one phone's PRESENCE_PROBE for a call on another node, shaped like
 * mod_sofia's own probe answer for a local call (sofia_presence.c
 * sofia_presence_resub_callback): `call-id` names the probing subscription, so only that
 * phone gets it. Without `Caller-Callee-ID-Number` and `Caller-Destination-Number` the
 * pidf note of an answered call is "On The Phone", as the call's own node answers.
 * `Caller-Username` keeps mod_sofia from reversing an inbound call's direction.
 */
export function probeAnswer(call: CallPresence, probe: FsEvent): FsEvent {
  const original = presenceEvent(call.presence);
  const event = FsEvent.create('PRESENCE_IN');
  event.add('proto', 'sip').add('login', probe.get('login') ?? 'fs-event-bridge').add('from', call.user);
  event.add('call-id', probe.get('sub-call-id') ?? '');
  event.add('status', original.get('status') ?? '').add('rpid', original.get('rpid') ?? 'unknown');
  event.add('event_type', 'presence').add('alt_event_type', 'dialog').add('event_count', '0');
  event.add('channel-state', 'CS_ROUTING').add('unique-id', call.call);
  // mod_sofia turns "ringing" into early for the callee and confirmed for the caller, as for a live call.
  const answerState = call.state === DialogState.Early ? 'ringing' : DialogState.Confirmed;
  event.add('answer-state', answerState).add('astate', answerState);
  const direction = original.get('presence-call-direction');
  if (direction !== undefined) event.add('presence-call-direction', direction);
  const caller = original.get('Caller-Username');
  if (caller !== undefined) event.add('Caller-Username', caller);
  return event;
}
