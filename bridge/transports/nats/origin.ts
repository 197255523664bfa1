import type { FsEvent } from '../../event/event.js';
import { ORIGIN_NODE_HEADER } from './stream.js';
import { encodeToken, type SubjectMapper } from './subjects.js';

/**
 * Headers in which an event names the node that fired it. FreeSWITCH sets
 * FreeSWITCH-Switchname on every event; Multicast-Sender only appears on events that
 * went through multicast, which a bridge never publishes to NATS, but consumers read
 * it as a fallback, so it is held to the same rule.
 */
export const SENDER_CLAIM_HEADERS: readonly string[] = ['FreeSWITCH-Switchname', 'Multicast-Sender'];
const CLAIMS_LOWER = SENDER_CLAIM_HEADERS.map((name) => name.toLowerCase());

/**
 * The node a message published on `subject` speaks for, or undefined when the subject
 * does not name one: not under this prefix and cluster, an empty node, or a node token
 * in a spelling the publisher would not produce (`fs%2Da` for `fs-a`, lowercase hex).
 *
 * The subject is the one thing a NATS server authorizes (docs/security.md: each
 * node's user may publish only under its own node token), so the origin is read from
 * it and from nothing the publisher writes inside the message. Only the canonical
 * spelling is accepted so that the token a permission names is the only one that
 * decodes to that node.
 */
export function subjectOrigin(subjects: SubjectMapper, subject: string): string | undefined {
  const parts = subjects.parse(subject);
  if (!parts || parts.node === '') return undefined;
  const token = subject.slice(subjects.base.length + 1, subject.indexOf('.', subjects.base.length + 1));
  return encodeToken(parts.node) === token ? parts.node : undefined;
}

/**
 * The first header whose value names another node than the subject's, or undefined
 * when every claim agrees. An absent claim is no claim: consumers then fall back to
 * the origin, which is the subject's node. Every occurrence of a repeated header is
 * checked, since different readers take different ones.
 */
export function conflictingClaim(event: FsEvent, origin: string, headerOrigin: string | undefined): string | undefined {
  if (headerOrigin !== undefined && headerOrigin !== '' && headerOrigin !== origin) return ORIGIN_NODE_HEADER;
  // One pass over the headers, names compared case-insensitively as FreeSWITCH does;
  // a name shorter than the shortest claim header ('Multicast-Sender') is skipped unread.
  for (const [name, value] of event.headers) {
    if (value === origin || name.length < 16) continue;
    const index = CLAIMS_LOWER.indexOf(name.toLowerCase());
    if (index >= 0) return SENDER_CLAIM_HEADERS[index];
  }
  return undefined;
}
