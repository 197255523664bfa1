import { PermissionViolationError } from '@nats-io/transport-node';
import type { NatsConfig } from '../../config/types.js';
import { NatsPermissionError } from '../../errors.js';
import { encodeToken, SubjectMapper } from './subjects.js';

/**
 * What one node's NATS user must be allowed, and nothing more (docs/security.md):
 *
 * - publish its own events: `<prefix>.<cluster>.<node>.>` only, so it cannot speak
 *   for another node (the receiver takes the origin from the subject);
 * - JetStream: read the events stream's info, create, read and pull its own durable
 *   consumers (the cluster-wide one and one per other node, nats/peers), ack what it
 *   pulled (`$JS.ACK.<stream>.<durable>.>`) and delete its cluster-wide one; never create,
 *   change, purge or delete the stream (`nats-setup` does that with an admin user);
 * - KV: read each bucket's stream info, write keys (`$KV.<bucket>.>`), and create, read,
 *   pull and delete the consumers a load or a watch uses, which nats.js names at random
 *   (so only the stream can be named), and answer their flow control (`$JS.FC...`);
 * - subscribe only under its own inbox prefix (nodeInboxPrefix), so no other node can
 *   read the replies to its requests, acks and pulls.
 *
 * The KV keys are not scoped per node: a location key ends with the registering node's
 * hostname and a BLF key holds no node at all, and NATS permissions match whole tokens
 * from the left, so any node with write access to a bucket can write any of its keys.
 */
export interface NatsPermissions {
  publish: string[];
  subscribe: string[];
}

/** The names that end up inside subjects: a wildcard there would widen a permission. */
function subjectName(value: string, what: string): string {
  if (value === '' || /[\s.*>]/.test(value)) throw new RangeError(`${what} ${JSON.stringify(value)} cannot be used in a NATS permission (empty, or contains whitespace, '.', '*' or '>')`);
  return value;
}

/** `_INBOX.<prefix>.<cluster>.<node>`: the node's replies live under a subject only its user may subscribe to. */
export function nodeInboxPrefix(subjectPrefix: string, cluster: string, node: string): string {
  return `_INBOX.${subjectPrefix}.${encodeToken(cluster)}.${encodeToken(node)}`;
}

/** JetStream consumer names may not contain `.`, `*`, `>` or whitespace. */
export function durableName(prefix: string, node: string): string {
  return (prefix + node).replace(/[^A-Za-z0-9_-]/g, '_');
}

/**
 * The durable consumer through which `node` reads `peer`'s events (nats/peers). Two
 * underscores keep it apart from every cluster-wide durable of a node whose name has none.
 */
export function peerDurableName(prefix: string, node: string, peer: string): string {
  return `${durableName(prefix, node)}__${durableName('', peer)}`;
}

/** The nodes `node` reads from with nats/peers set: every node listed but itself, once each. */
export function remotePeers(peers: readonly string[], node: string): string[] {
  return [...new Set(peers)].filter((peer) => peer !== node);
}

/** Every durable `node` may use: its cluster-wide one, then one per other node of `peers`, in their order. */
export function nodeDurables(prefix: string, node: string, peers: readonly string[]): string[] {
  return [durableName(prefix, node), ...remotePeers(peers, node).map((peer) => peerDurableName(prefix, node, peer))];
}

export type PermissionSettings = Pick<NatsConfig, 'subjectPrefix' | 'durablePrefix' | 'stream' | 'kv'>;

/**
 * `peers`: the cluster's nodes, so that the node may use one consumer per other node
 * (nats/peers) as well as its cluster-wide one, and delete the cluster-wide one when the
 * per-peer consumers take over. Deleting is allowed for its own consumers only.
 */
export function nodePermissions(nats: PermissionSettings, cluster: string, node: string, peers: readonly string[] = []): NatsPermissions {
  const subjects = new SubjectMapper(nats.subjectPrefix, cluster);
  const stream = subjectName(nats.stream.name, 'stream name');
  const durables = nodeDurables(nats.durablePrefix, node, peers);
  const api = '$JS.API';
  const publish = [`${subjects.base}.${encodeToken(node)}.>`, `${api}.INFO`, `${api}.STREAM.INFO.${stream}`, `${api}.CONSUMER.DELETE.${stream}.${durables[0]}`];
  for (const durable of durables) {
    publish.push(
      `${api}.CONSUMER.INFO.${stream}.${durable}`,
      // nats.js names the consumer, and its filter, in the subject on servers >= 2.9; older ones take the durable form.
      `${api}.CONSUMER.CREATE.${stream}.${durable}`,
      `${api}.CONSUMER.CREATE.${stream}.${durable}.>`,
      `${api}.CONSUMER.DURABLE.CREATE.${stream}.${durable}`,
      `${api}.CONSUMER.MSG.NEXT.${stream}.${durable}`,
      `$JS.ACK.${stream}.${durable}.>`,
    );
  }
  for (const bucket of [nats.kv.locationBucket, nats.kv.blfBucket]) {
    const kvStream = `KV_${subjectName(bucket, 'KV bucket')}`;
    publish.push(
      `$KV.${bucket}.>`,
      `${api}.STREAM.INFO.${kvStream}`,
      `${api}.CONSUMER.CREATE.${kvStream}`,
      `${api}.CONSUMER.CREATE.${kvStream}.>`,
      `${api}.CONSUMER.INFO.${kvStream}.*`,
      `${api}.CONSUMER.DELETE.${kvStream}.*`,
      `${api}.CONSUMER.MSG.NEXT.${kvStream}.*`,
      `$JS.FC.${kvStream}.>`,
    );
  }
  return { publish, subscribe: [`${nodeInboxPrefix(nats.subjectPrefix, cluster, node)}.>`] };
}

/** Environment variable the generated server config reads a node's password from. */
export function passwordVariable(node: string): string {
  return `FSB_NATS_PASSWORD_${node.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

export const ADMIN_USER = 'fsb-admin';
export const ADMIN_PASSWORD_VARIABLE = 'FSB_NATS_PASSWORD_ADMIN';

/** One quoted subject per line, indented under its key. */
function quoted(values: readonly string[], indent: string): string {
  return `[\n${values.map((v) => `${indent}  ${JSON.stringify(v)}`).join(',\n')}\n${indent}]`;
}

/**
 * A nats-server `authorization` block: one user per node with nodePermissions, named
 * after the node, its password read from the environment (passwordVariable), plus the
 * unrestricted admin user that `nats-setup`, `tail` and `replay` use.
 */
export function renderAuthorization(nats: PermissionSettings, cluster: string, nodes: readonly string[]): string {
  const durables = new Map<string, string>();
  for (const node of nodes) {
    for (const durable of nodeDurables(nats.durablePrefix, node, nodes)) {
      const other = durables.get(durable);
      // Two nodes sharing a durable could pull and ack each other's messages.
      if (other !== undefined) throw new RangeError(`nodes ${JSON.stringify(other)} and ${JSON.stringify(node)} share the durable consumer name ${durable}`);
      durables.set(durable, node);
    }
  }
  const lines = [
    `# Generated by: fs-event-bridge nats-permissions --node ${nodes.join(' --node ')}`,
    `# Subjects ${nats.subjectPrefix}.${encodeToken(cluster)}.<node>.>, stream ${nats.stream.name}, durables ${nats.durablePrefix}<node> and ${nats.durablePrefix}<node>__<peer>, buckets ${nats.kv.locationBucket} and ${nats.kv.blfBucket}.`,
    '# Passwords come from the environment of nats-server (docs/security.md).',
    'authorization {',
    '  users: [',
    `    { user: ${JSON.stringify(ADMIN_USER)}, password: $${ADMIN_PASSWORD_VARIABLE} }`,
  ];
  for (const node of nodes) {
    const permissions = nodePermissions(nats, cluster, node, nodes);
    lines.push(
      `    { user: ${JSON.stringify(node)}, password: $${passwordVariable(node)}, permissions: {`,
      `        publish: { allow: ${quoted(permissions.publish, '        ')} }`,
      `        subscribe: { allow: ${quoted(permissions.subscribe, '        ')} }`,
      '    } }',
    );
  }
  lines.push('  ]', '}');
  return lines.join('\n') + '\n';
}

/** The server's refusal inside a nats.js error (a request fails with it as the cause), if that is what it is. */
export function permissionViolation(err: unknown): PermissionViolationError | undefined {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof PermissionViolationError) return e;
  return undefined;
}

/** A refused JetStream or KV call says which subject and what to do; anything else goes through as it is. */
export function explainPermission(err: unknown, what: string): unknown {
  const violation = permissionViolation(err);
  return violation ? new NatsPermissionError(violation.subject, what, { cause: err }) : err;
}
