/**
 * The events the simulated phones cause, built from real FreeSWITCH 1.10.12 captures
 * (test/fixtures/multicast-plain) with only the user, realm and call changed. The
 * identity headers (Core-UUID, FreeSWITCH-*, dates, sequence, Multicast-Sender) are
 * left out: the simulated node that fires an event stamps its own.
 */
import { readFileSync } from 'node:fs';
import { FsEvent, type Header } from '../../bridge/event/event.js';
import { fixtureFile } from './paths.js';

const IDENTITY = new Set([
  'core-uuid', 'freeswitch-hostname', 'freeswitch-switchname', 'freeswitch-ipv4', 'freeswitch-ipv6', 'event-date-local',
  'event-date-gmt', 'event-date-timestamp', 'event-calling-file', 'event-calling-function', 'event-calling-line-number',
  'event-sequence', 'multicast-sender',
]);

const templates = new Map<string, Header[]>();

function template(file: string): Header[] {
  let headers = templates.get(file);
  if (!headers) {
    const decoded = JSON.parse(readFileSync(fixtureFile('multicast-plain', file), 'utf8')) as { headers: Header[] };
    headers = decoded.headers.filter(([name]) => !IDENTITY.has(name.toLowerCase()));
    templates.set(file, headers);
  }
  return headers;
}

/** Every value equal to a key of `replace` swapped for its value (users, realms and call ids repeat across many headers). */
function rewrite(headers: Header[], replace: Record<string, string>): FsEvent {
  return new FsEvent(headers.map(([name, value]) => [name, value.split('@').map((part) => replace[part] ?? part).join('@')]));
}

/** `CUSTOM sofia::register`, status `Registered(UDP)`: `user` registered at `realm` (capture 009, user 1001). */
export function registerEvent(user: string, realm = '127.0.0.1', expiresSeconds = 300): FsEvent {
  const event = rewrite(template('009-sofia-register.json'), { '1001': user, '127.0.0.1': realm });
  event.set('expires', String(expiresSeconds));
  return event;
}

/** `CUSTOM sofia::unregister` for `user` (no status header, as FreeSWITCH sends it). */
export function unregisterEvent(user: string, realm = '127.0.0.1'): FsEvent {
  const event = rewrite(template('009-sofia-register.json'), { '1001': user, '127.0.0.1': realm });
  event.set('Event-Subclass', 'sofia::unregister');
  event.delete('status');
  event.set('expires', '0');
  return event;
}

export type CallPhase = 'ringing' | 'answered' | 'hangup';

/** The PRESENCE_IN captures of one channel, the called leg (outbound) of 1001: CS_ROUTING (015), answered (016) and CS_HANGUP (023). */
const PRESENCE_FIXTURES: Record<CallPhase, { file: string; user: string; uuid: string }> = {
  ringing: { file: '015-PRESENCE_IN-CS_ROUTING.json', user: '1001', uuid: '861b40e6-5d57-456b-a996-62a152860415' },
  answered: { file: '016-PRESENCE_IN-answered.json', user: '1001', uuid: '861b40e6-5d57-456b-a996-62a152860415' },
  hangup: { file: '023-PRESENCE_IN-CS_HANGUP.json', user: '1001', uuid: '861b40e6-5d57-456b-a996-62a152860415' },
};

/** PRESENCE_IN of `user`'s channel `callId` in `phase`; Unique-ID and from name that leg. */
export function presenceEvent(phase: CallPhase, user: string, callId: string, realm = '127.0.0.1'): FsEvent {
  const fixture = PRESENCE_FIXTURES[phase];
  const event = rewrite(template(fixture.file), { [fixture.uuid]: callId, '127.0.0.1': realm });
  event.set('from', `${user}@${realm}`);
  event.set('Channel-Presence-ID', `${user}@${realm}`);
  event.set('Unique-ID', callId);
  return event;
}

/** The dialog state mod_sofia shows a remote watcher of the called user for each phase. */
export const DIALOG_STATE: Record<CallPhase, string> = { ringing: 'early', answered: 'confirmed', hangup: 'terminated' };
