import { FsEvent, type Header } from '../event/event.js';
import { MulticastSubclass } from '../event/names.js';
import { LOOP_GUARD_HEADER } from './types.js';

/**
 * The event mod_event_multicast fires for a received packet: `CUSTOM` /
 * `multicast::event`, `Multicast: yes`, then every original header as
 * `Orig-<Name>` (case kept, value decoded). mod_sofia consumes exactly this shape,
 * so remote registrations and presence work natively whichever transport carried
 * the event. Unlike the legacy module we copy the body as is (it prepends "\n").
 *
 * `sender` becomes Orig-Multicast-Sender when the original lacks it (events that
 * came over NATS), so both paths look the same to mod_sofia and to consumers.
 */
export function toMulticastEvent(original: FsEvent, sender: string, injectedBy: string): FsEvent {
  const headers: Header[] = [
    ['Event-Name', 'CUSTOM'],
    ['Event-Subclass', MulticastSubclass.Event],
    ['Multicast', 'yes'],
  ];
  let hasSender = false;
  for (const [name, value] of original.headers) {
    if (name === 'Multicast-Sender') hasSender = true;
    headers.push(['Orig-' + name, value]);
  }
  if (!hasSender) headers.push(['Orig-Multicast-Sender', sender]);
  headers.push([LOOP_GUARD_HEADER, injectedBy]);
  return new FsEvent(headers, original.body);
}

/** The original event back from a multicast::event (Orig- headers stripped), e.g. one a legacy module fired. */
export function fromMulticastEvent(injected: FsEvent): FsEvent {
  const headers: Header[] = [];
  for (const [name, value] of injected.headers) {
    if (name.startsWith('Orig-')) headers.push([name.slice(5), value]);
  }
  return new FsEvent(headers, injected.body);
}

/** An event fit for `sendevent`, and what was removed to make it so (each counted in fsb_filtered_total). */
export interface Sanitized {
  event: FsEvent;
  /** Headers whose name or value held CR or LF (SDP variables do, by nature). */
  crlf: number;
  /** Headers whose name or value held a NUL, which ends the line inside FreeSWITCH. */
  nul: number;
  /** Headers FreeSWITCH would split elsewhere than meant: empty names, names with ':'. */
  badName: number;
  /** The names removed, first 64 characters of at most 16, for the log. */
  names: string[];
}

/**
 * A copy of a remote event that is safe to write with `sendevent`: mod_event_socket
 * reads each line raw, so a CR or LF in a name or value would add headers of the
 * sender's choosing, a NUL would cut the line, and an empty name or one holding ':'
 * would be split elsewhere than meant. Those headers are left out (the rest of the
 * event is still worth delivering). A body with a NUL cannot be carried: the caller
 * drops the event. Returns the event itself when nothing had to go.
 */
export function sanitizeForInjection(event: FsEvent): Sanitized {
  const result: Sanitized = { event, crlf: 0, nul: 0, badName: 0, names: [] };
  let kept: Header[] | null = null;
  const headers = event.headers;
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i];
    let cause: 'crlf' | 'nul' | 'badName' | null = null;
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) cause = 'crlf';
    else if (name.includes('\0') || value.includes('\0')) cause = 'nul';
    else if (name === '' || name.includes(':')) cause = 'badName';
    if (cause === null) {
      kept?.push(headers[i]);
      continue;
    }
    kept ??= headers.slice(0, i);
    result[cause]++;
    if (result.names.length < 16) result.names.push(name.slice(0, 64));
  }
  if (kept) result.event = new FsEvent(kept, event.body);
  return result;
}

/**
 * Events whose relative order matters to FreeSWITCH share an order key, and the
 * injector sends events with one key over one connection. A user's registrations,
 * presence and message-waiting go together (mod_sofia keeps one state per user);
 * other events of a call go by its Unique-ID. Null: order does not matter (HEARTBEAT,
 * RE_SCHEDULE), any connection will do.
 */
export function injectionOrderKey(event: FsEvent): string | null {
  const presence = event.get('from');
  if (presence !== undefined && presence !== '') return `user:${presence}`;
  const user = event.get('from-user') ?? event.get('user');
  if (user !== undefined) return `user:${user}@${event.get('from-host') ?? event.get('host') ?? ''}`;
  const mwi = event.get('MWI-Message-Account');
  if (mwi !== undefined) return `user:${mwi.replace(/^sips?:/, '')}`;
  const call = event.get('Unique-ID') ?? event.get('Channel-Call-UUID');
  if (call !== undefined) return `call:${call}`;
  return null;
}
