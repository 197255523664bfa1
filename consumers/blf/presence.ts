import { FsEvent } from '../../bridge/index.js';

/** RFC 4235 dialog states, the values mod_sofia expects in `answer-state`. */
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

/** Call presence reduced to what a lamp needs; null for presence that is not about a call (Registered, Unregistered, notes). */
export interface CallPresence {
  user: string;
  call: string;
  state: DialogState;
  status: string;
  direction: string | undefined;
  rpid: string | undefined;
}

export function callPresence(event: FsEvent): CallPresence | null {
  const user = event.get('from');
  const call = event.get('Unique-ID');
  if (!user || !call) return null;
  const status = event.get('status') ?? '';
  // `status` first: a legacy Lua re-fire says CS_ROUTING with answer-state confirmed, and ringing is what it means.
  const state = STATUS_TO_DIALOG[status] ?? ANSWER_STATE_TO_DIALOG[(event.get('Answer-State') ?? '').toLowerCase()];
  if (state === undefined) return null;
  return {
    user,
    call,
    state,
    status,
    direction: event.get('Presence-Call-Direction') ?? event.get('Call-Direction'),
    rpid: event.get('rpid'),
  };
}

/** The PRESENCE_IN that lights a lamp on this node for a call on another node. */
export function dialogPresence(call: CallPresence): FsEvent {
  const event = FsEvent.create('PRESENCE_IN');
  event.add('proto', 'sip').add('login', call.user).add('from', call.user).add('status', call.status);
  if (call.rpid !== undefined) event.add('rpid', call.rpid);
  event.add('event_type', 'presence').add('alt_event_type', 'dialog').add('event_count', '1');
  event.add('unique-id', call.call);
  if (call.direction !== undefined) event.add('Presence-Call-Direction', call.direction);
  event.add('answer-state', call.state);
  return event;
}
