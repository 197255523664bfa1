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
