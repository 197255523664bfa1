import type { FsEvent } from '../event/event.js';

/**
 * A PRESENCE_IN that mod_sofia fires to answer one phone's SUBSCRIBE (its probe
 * answer: `call-id` names that subscription) concerns only that subscription on the
 * node that fired it. Elsewhere mod_sofia's multicast handler drops the `call-id` and
 * would send it to every watcher of the user, with the probing subscription's
 * direction: on real 1.10.12 nodes that showed as an extra "confirmed/recipient" or
 * "idle" on the other node's phones. Channel PRESENCE_IN never carries `call-id`.
 */
export function isSubscriptionAnswer(event: FsEvent): boolean {
  return event.name === 'PRESENCE_IN' && event.has('call-id');
}
