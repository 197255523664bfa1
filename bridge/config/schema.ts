import { isIP, isIPv4 } from 'node:net';
import { nodeNameProblem } from '../pipeline/peers.js';
import { isValidPrefix } from '../transports/nats/subjects.js';
import { parseMulticastKey } from './multicast-key.js';

/**
 * Every parameter of event_bridge.conf.xml, described once. The loader validates
 * against this table and docs/config-reference.md is generated from it, so the
 * reference cannot drift from the code (a test compares them).
 */
export type ParamType = 'string' | 'int' | 'bool' | 'duration' | 'bytes' | 'list' | 'map' | 'bindings' | 'enum' | 'secret';

export interface ParamSpec {
  /** XML section (`settings`, `esl`, ... or `consumer:blf`). */
  section: string;
  name: string;
  type: ParamType;
  /** Default as written in XML ('' = unset). */
  default: string;
  description: string;
  unit?: string;
  example?: string;
  /** Which mode it applies to, when not always. */
  appliesTo?: string;
  min?: number;
  max?: number;
  values?: readonly string[];
  /** What a string, secret, list entry or map value must look like (FORMATS). */
  format?: FormatName;
  /** 0 is accepted besides min..max and turns the feature off. */
  zeroDisables?: boolean;
}

/** The longest timer Node can run: setTimeout/setInterval above 2^31-1 ms fire after 1 ms instead. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
const DAY_MS = 86_400_000;
const GB = 1024 ** 3;

export interface StringFormat {
  /** Shown in docs/config-reference.md. */
  description: string;
  /** The problem with `value`, or undefined when it is acceptable. Only called on non-empty values. */
  check(value: string): string | undefined;
}

/** Control characters (C0, DEL, C1): CR, LF and NUL among them would cut or add lines in ESL commands, logs and headers. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be found
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const MAX_TEXT_BYTES = 255;
const HOSTNAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
const NATS_URL = /^(?:(nats|tls):\/\/)?(?:[^\s@/]+@)?(\[[0-9A-Fa-f:.]+\]|[^\s:/@[\]]+)(?::(\d{1,5}))?\/?$/;

/** The rule for node names from the wire (bridge/pipeline/peers.ts), for every short text. */
const text = nodeNameProblem;

function ipv4(value: string): string | undefined {
  return isIPv4(value) ? undefined : 'is not an IPv4 address (a.b.c.d)';
}

/** JetStream's own rule for stream and consumer names (nats.js minValidation, the nats CLI), plus no control characters. */
function jetstreamName(value: string): string | undefined {
  const bad = /[.*>/\\\s]/.exec(value);
  if (bad) return `cannot contain ${JSON.stringify(bad[0])} (JetStream names exclude '.', '*', '>', '/', '\\' and whitespace)`;
  return text(value);
}

export const FORMATS = {
  text: { description: `printable text, at most ${MAX_TEXT_BYTES} bytes, no control characters`, check: text },
  ipv4: { description: 'an IPv4 address (a.b.c.d)', check: ipv4 },
  'multicast-group': {
    description: 'an IPv4 multicast group, 224.0.0.0 to 239.255.255.255',
    check: (value) => (isIPv4(value) && Number(value.split('.')[0]) >= 224 && Number(value.split('.')[0]) <= 239 ? undefined : 'is not an IPv4 multicast group (224.0.0.0 to 239.255.255.255)'),
  },
  host: {
    description: 'an IPv4 or IPv6 address or a host name',
    check: (value) => (isIP(value) !== 0 || HOSTNAME.test(value) ? undefined : 'is not an IP address or a host name'),
  },
  /** db_data.data is what the dialplan dials (sofia/internal/1000@<data>): a node whose profile is not on 5060 needs its port there. */
  'host-port': {
    description: 'an IPv4 address or a host name, optionally with :port (1 to 65535), or an IPv6 address, [bracketed] with a port',
    check: (value) => {
      if (isIP(value) !== 0 || HOSTNAME.test(value)) return undefined;
      const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
      if (!match) return 'is not an IP address or a host name, with an optional :port';
      const host = match[1] ?? match[2];
      const valid = match[1] !== undefined ? isIP(host) === 6 : isIPv4(host) || HOSTNAME.test(host);
      if (!valid) return `has no valid host (${JSON.stringify(host)})`;
      const port = Number(match[3]);
      return port >= 1 && port <= 65535 ? undefined : `has port ${match[3]}, outside 1 to 65535`;
    },
  },
  'nats-url': {
    description: 'nats://host:port or tls://host:port (scheme and port optional, user:pass@ allowed)',
    check: (value) => {
      const match = NATS_URL.exec(value);
      if (!match) return 'is not a NATS server URL (nats://host:port)';
      const host = match[2].replace(/^\[|\]$/g, '');
      if (isIP(host) === 0 && !HOSTNAME.test(host)) return `has no valid host (${JSON.stringify(host)})`;
      if (match[3] !== undefined && (Number(match[3]) < 1 || Number(match[3]) > 65535)) return `has port ${match[3]}, outside 1 to 65535`;
      return undefined;
    },
  },
  'subject-prefix': {
    description: "one or more NATS subject tokens separated by '.', each printable ASCII without '*', '>' or '%'",
    check: (value) => (isValidPrefix(value) ? undefined : "is not dot-separated NATS subject tokens (printable ASCII, no empty token, no '*', '>', '%' or whitespace)"),
  },
  'jetstream-name': { description: "a JetStream name: no '.', '*', '>', '/', '\\', whitespace or control characters", check: jetstreamName },
  'kv-bucket': {
    description: 'a NATS KV bucket name: letters, digits, - and _',
    check: (value) => (/^[-\w]+$/.test(value) ? (Buffer.byteLength(value) > MAX_TEXT_BYTES ? `is longer than ${MAX_TEXT_BYTES} bytes` : undefined) : 'is not a KV bucket name (letters, digits, - and _ only)'),
  },
  path: {
    description: 'a file path (no control characters)',
    check: (value) => (CONTROL.test(value) ? 'contains a control character' : value === ':memory:' ? "is SQLite's in-memory database, which FreeSWITCH can never read" : undefined),
  },
  'pem-or-path': {
    description: 'a PEM text (-----BEGIN ...) or the path of a PEM file',
    check: (value) => (value.includes('-----BEGIN') ? (value.includes('\0') ? 'contains NUL' : undefined) : CONTROL.test(value) ? 'is neither a PEM text nor a file path (control character)' : undefined),
  },
  'multicast-key': {
    description: '<id>:<key>, id 0 to 255, the key 32 bytes as 64 hex digits or 44 base64 characters',
    check: (value) => {
      try {
        parseMulticastKey(value);
        return undefined;
      } catch (err) {
        return (err as Error).message;
      }
    },
  },
  secret: {
    description: 'any characters but CR, LF and NUL (they would end or cut the command that carries it)',
    check: (value) => (/[\r\n\0]/.test(value) ? 'contains CR, LF or NUL' : undefined),
  },
} satisfies Record<string, StringFormat>;

export type FormatName = keyof typeof FORMATS;

const DEFAULT_MULTICAST_BINDINGS =
  'HEARTBEAT RE_SCHEDULE PRESENCE_IN MESSAGE_WAITING CUSTOM sofia::register sofia::unregister sofia::expire';
const DEFAULT_NATS_BINDINGS =
  'HEARTBEAT PRESENCE_IN MESSAGE_WAITING CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE CUSTOM sofia::register sofia::unregister sofia::expire';

export const PARAMS: readonly ParamSpec[] = [
  // settings: who this node is
  { section: 'settings', name: 'node-name', type: 'string', format: 'text', default: '', description: "This node's name: FreeSWITCH's switchname, the value legacy nodes send as Multicast-Sender. Empty: the system hostname (FreeSWITCH's own default switchname).", example: 'fs-a' },
  { section: 'settings', name: 'hostname', type: 'string', format: 'text', default: '', description: 'The hostname FreeSWITCH reports (FreeSWITCH-Hostname); written as db_data.hostname for local registrations. Empty: the system hostname.', example: 'node-a' },
  { section: 'settings', name: 'ipv4', type: 'string', format: 'ipv4', default: '', description: "The address other nodes reach this node's SIP profile on; written as db_data.data for local registrations. Empty: the first non-loopback IPv4 address.", example: '10.99.0.1' },
  { section: 'settings', name: 'cluster', type: 'string', format: 'text', default: 'default', description: 'Cluster name: the second token of every NATS subject, so several clusters can share one NATS.', example: 'eu1' },
  { section: 'settings', name: 'stats-interval', type: 'duration', min: 1000, max: DAY_MS, zeroDisables: true, default: '60s', unit: 'ms', description: 'How often the bridge logs one line of traffic figures (events in/out per transport, injected, dropped). 0 turns it off.' },
  { section: 'settings', name: 'log-level', type: 'enum', default: 'info', values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], description: 'Log level (pino). The CLI --log-level overrides it.' },

  // esl
  { section: 'esl', name: 'host', type: 'string', format: 'host', default: '127.0.0.1', description: 'Event socket address of the local FreeSWITCH. Keep ESL on loopback: anyone who reaches it can inject events.' },
  { section: 'esl', name: 'port', type: 'int', default: '8021', min: 1, max: 65535, description: 'Event socket port.' },
  { section: 'esl', name: 'password', type: 'secret', format: 'secret', default: 'ClueCon', description: 'Event socket password (event_socket.conf.xml).' },
  { section: 'esl', name: 'reconnect-max', type: 'duration', default: '800ms', min: 100, max: 5000, unit: 'ms', description: 'Longest wait between reconnect attempts; the backoff doubles from 100 ms up to this. The 800 ms default puts the bridge back on a restarted FreeSWITCH within a second.' },
  { section: 'esl', name: 'queue-max-events', type: 'int', min: 100, max: 1_000_000, default: '1000', description: 'Events parsed but not yet handled before the bridge stops reading the socket (backpressure; FreeSWITCH then queues them). 1000 is 0.1 s at 10k events/s; a parsed event of 3.7 KB takes about 20 KB of heap, so 10000 would pin 200 MB while the sinks lag.' },
  { section: 'esl', name: 'queue-max-bytes', type: 'bytes', default: '16MB', min: 65536, max: 1024 ** 3, unit: 'bytes', description: 'Wire bytes of parsed events waiting to be handled before the bridge stops reading the socket, whichever of this and queue-max-events comes first. With 1 MB events the event count alone let the heap reach 600-700 MB; a parsed event takes about 5 times its wire size.' },
  { section: 'esl', name: 'max-frame-bytes', type: 'bytes', min: 65536, max: 256 * 1024 ** 2, default: '16MB', unit: 'bytes', description: 'Largest ESL frame accepted; a larger one is a protocol error (counted, connection reset).' },
  { section: 'esl', name: 'command-timeout', type: 'duration', min: 100, max: 600_000, default: '10s', unit: 'ms', description: 'How long api and sendevent wait for their reply.' },

  // inject: remote and consumer events into the local FreeSWITCH
  { section: 'inject', name: 'connections', type: 'int', default: '2', min: 1, max: 16, description: "ESL connections that carry injected events (sendevent), besides the one that reads events. mod_event_socket reads each connection's commands on its own thread, one byte per system call, so connections are what multiplies the rate FreeSWITCH ingests; events of one call or one user always take the same connection, so their order is kept." },
  { section: 'inject', name: 'queue-max-bytes', type: 'bytes', default: '128MB', min: 1024 ** 2, max: 4 * 1024 ** 3, unit: 'bytes', description: 'Bytes of sendevent commands waiting for FreeSWITCH to take them (remote events and consumer events), each counted with 256 bytes more for what the bridge keeps beside it, so this bounds the memory they take. Beyond it a multicast event is dropped (counted, inject_queue_full); NATS waits instead (its messages stay unacknowledged in JetStream). 128 MB holds a burst of 50,000 injected events of 2.5 KB.' },

  // bindings (mod_event_multicast grammar)
  { section: 'bindings', name: 'multicast', type: 'bindings', default: DEFAULT_MULTICAST_BINDINGS, description: 'Events sent to the multicast group, in mod_event_multicast grammar: event names, ALL, CUSTOM followed by subclasses.', appliesTo: 'multicast enabled' },
  { section: 'bindings', name: 'nats', type: 'bindings', default: DEFAULT_NATS_BINDINGS, description: 'Events published to NATS, same grammar.', appliesTo: 'nats enabled' },

  // multicast
  { section: 'multicast', name: 'enabled', type: 'bool', default: 'true', description: 'Send and receive native mod_event_multicast datagrams.' },
  { section: 'multicast', name: 'address', type: 'string', format: 'multicast-group', default: '225.1.1.1', description: 'Multicast group (IPv4).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'port', type: 'int', default: '4242', min: 1, max: 65535, description: 'UDP port of the group.', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'bind-address', type: 'string', format: 'ipv4', default: '0.0.0.0', description: 'Local address the socket binds to.', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'interface', type: 'string', format: 'ipv4', default: '', description: 'Address of the interface used to join the group and to send (empty: the kernel default route).', example: '10.99.0.1', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'ttl', type: 'int', default: '1', min: 0, max: 255, description: 'Multicast TTL (1 keeps datagrams on the LAN).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'loopback', type: 'bool', default: 'false', description: 'Deliver our own datagrams to sockets on this host (our own are ignored on receipt either way).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'psk', type: 'secret', format: 'secret', default: '', description: 'Pre-shared key: Blowfish-CBC exactly like mod_event_multicast (weak: no integrity, no replay protection). Empty: plaintext.', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'secure-key', type: 'secret', format: 'multicast-key', default: '', description: "Secure mode between bridges: AES-256-GCM with a per-sender counter, replay window and freshness bound (docs/security.md). Written <id>:<key>, id 0-255 and the key 32 bytes as 64 hex digits (echo 1:$(openssl rand -hex 32)). The same on every bridge of the group. Legacy nodes drop these datagrams (logging a warning or an error each); the bridge then refuses plain and psk datagrams. Not with psk. Empty: the legacy format.", example: '1:<64 hex digits>', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'secure-accept-key', type: 'secret', format: 'multicast-key', default: '', description: 'A second key accepted on receive and never sent with: the next key, then the old one, during a key rotation (docs/security.md). Needs secure-key, with another id.', example: '2:<64 hex digits>', appliesTo: 'secure-key set' },
  { section: 'multicast', name: 'secure-max-age', type: 'duration', default: '10s', min: 1000, max: 600_000, unit: 'ms', description: "A secure datagram stamped further than this from the receiver's clock (either way) is refused and counted (stale, from_future). It bounds how old a captured datagram may be to be replayed into a receiver that has just started; keep the nodes' clocks in NTP sync.", appliesTo: 'secure-key set' },
  { section: 'multicast', name: 'secure-replay-window', type: 'int', default: '1024', min: 64, max: 65_536, description: "Counters per sender remembered (rounded up to a multiple of 32): a datagram overtaken by fewer newer ones is accepted once, an older one is refused (outside_window).", appliesTo: 'secure-key set' },
  { section: 'multicast', name: 'receive-buffer', type: 'bytes', min: 65536, max: GB, default: '32MB', unit: 'bytes', description: 'Socket receive buffer requested (SO_RCVBUF). The kernel caps it at net.core.rmem_max (often 208 KB to 4 MB) and the bridge logs the size granted; set net.core.rmem_max=33554432 so a burst of 10,000 datagrams fits (docs/decisions.md).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'peer-timeout', type: 'duration', min: 100, max: DAY_MS, default: '60s', unit: 'ms', description: 'A peer whose HEARTBEAT has not been heard for this long is down (multicast::peerdown), as in the legacy module.' },
  { section: 'multicast', name: 'max-peers', type: 'int', min: 1, max: 10_000, default: '256', description: "Most remote nodes tracked as peers (any transport), and most distinct node label values in the metrics (the rest count as node=\"_other\"). Anyone on the group can invent senders; past the cap a peer that is not up makes room, and while all are up a new sender's events still flow but it gets no peerup (counted in fsb_peers_untracked_events_total)." },
  { section: 'multicast', name: 'peer-forget', type: 'duration', min: 1000, max: DAY_MS, default: '1h', unit: 'ms', description: 'A peer that is down (or never sent a HEARTBEAT) and silent this long is forgotten: it leaves the peers list, and if it returns its peerup says Lastseen: Never. A value below peer-timeout counts as peer-timeout.' },
  { section: 'multicast', name: 'max-datagram-bytes', type: 'bytes', default: '65507', min: 300, max: 65507, unit: 'bytes', description: 'Largest datagram accepted or sent.', appliesTo: 'multicast enabled' },

  // nats
  { section: 'nats', name: 'enabled', type: 'bool', default: 'false', description: 'Publish to and receive from NATS (JetStream).' },
  { section: 'nats', name: 'servers', type: 'list', format: 'nats-url', default: 'nats://127.0.0.1:4222', description: 'Comma-separated server URLs; the client fails over between them.', example: 'nats://10.0.0.1:4222,nats://10.0.0.2:4222', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'subject-prefix', type: 'string', format: 'subject-prefix', default: 'fs', description: 'First token of every subject: <prefix>.<cluster>.<node>.<EVENT>[.<subclass tokens>].', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-name', type: 'string', format: 'jetstream-name', default: 'FS_EVENTS', description: 'JetStream stream holding the events (created or updated at start).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-max-age', type: 'duration', min: 1000, max: 3650 * DAY_MS, default: '24h', unit: 'ms', description: 'How long events are kept for replay.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-max-bytes', type: 'bytes', min: 1024, max: 1024 * GB, default: '1GB', unit: 'bytes', description: 'Size cap of the stream (oldest events go first).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'duplicate-window', type: 'duration', min: 100, max: DAY_MS, default: '2m', unit: 'ms', description: 'JetStream dedup window for Nats-Msg-Id (Core-UUID:Event-Sequence).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'replicas', type: 'int', default: '1', min: 1, max: 5, description: 'Stream and KV replicas (3 on a 3-node NATS cluster).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-storage', type: 'enum', default: 'file', values: ['file', 'memory'], description: "Where the stream keeps events. file survives a restart of every NATS server; memory (with replicas 3 on a cluster) avoids the file store's write stalls, which put 5-25 ms into the NATS path's p999 (docs/benchmarks.md), and loses the replay window if every server restarts. With memory, stream-max-bytes must fit the servers' max_memory_store (FSB_ERR_NATS_STREAM_LIMITS otherwise). Fixed when the stream is created: changing it later logs a warning and keeps the stream as it is.", appliesTo: 'nats enabled' },
  { section: 'nats', name: 'payload-format', type: 'enum', default: 'plain', values: ['plain', 'json'], description: "How events are written into NATS messages. plain: FreeSWITCH's own `event plain` bytes, as ESL delivered them (the bridge forwards them without decoding; docs/nats.md). json: FreeSWITCH's `event json` shape, repeated headers as arrays, for readers that only parse JSON (every event is decoded and serialized: about twice the bridge's CPU per event). Each message says which in its Content-Type header; every bridge reads both.", appliesTo: 'nats enabled' },
  { section: 'nats', name: 'ack-wait', type: 'duration', default: '30s', min: 1000, max: 3_600_000, unit: 'ms', description: "How long JetStream waits for the bridge to acknowledge a message before delivering it again. A message is acknowledged once FreeSWITCH has answered its injection, so a bridge that dies before gets it again after this long (the dedup journal recognises what it had already written). Set when the durable consumer is created.", appliesTo: 'nats enabled' },
  { section: 'nats', name: 'peers', type: 'list', format: 'text', default: '', description: "The cluster's nodes (this node's own name may be in the list, so every node can carry the same one). Set, the bridge reads each other node's events through a durable consumer of its own and JetStream never sends it its own events back, which saves nats-server a delivery and an ack and the bridge a read and an ack per event it publishes; nats-permissions generates the users' rights for both ways. A node left out of the list is not heard over NATS. Empty: one consumer for the whole cluster. The first start with the list set begins where the cluster-wide consumer had got to and deletes it.", appliesTo: 'nats enabled', example: 'fs-a,fs-b,fs-c' },
  { section: 'nats', name: 'durable-prefix', type: 'string', format: 'jetstream-name', default: 'fsb-', description: "Durable consumer name prefix; the node name is appended, so a restarted bridge resumes where it stopped.", appliesTo: 'nats enabled' },
  { section: 'nats', name: 'buffer-max-events', type: 'int', min: 1, max: 10_000_000, default: '100000', description: 'Events held while NATS is unreachable; beyond it the oldest are dropped (counted).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'buffer-max-bytes', type: 'bytes', min: 1024, max: 4 * GB, default: '256MB', unit: 'bytes', description: 'Bytes held while NATS is unreachable.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'max-in-flight', type: 'int', min: 1, max: 65_536, default: '1024', description: 'JetStream publishes awaiting their ack.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'user', type: 'string', format: 'secret', default: '', description: 'User name (with pass).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'pass', type: 'secret', format: 'secret', default: '', description: 'Password (with user).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'token', type: 'secret', format: 'secret', default: '', description: 'Auth token.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'nkey-seed', type: 'secret', format: 'secret', default: '', description: 'NKey seed (SU...).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'creds-file', type: 'string', format: 'path', default: '', description: 'Path of a .creds file (JWT + NKey).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'tls-ca', type: 'string', format: 'pem-or-path', default: '', description: 'CA certificate file; setting any tls-* param enables TLS.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'tls-cert', type: 'string', format: 'pem-or-path', default: '', description: 'Client certificate file.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'tls-key', type: 'string', format: 'pem-or-path', default: '', description: 'Client key file.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'kv-location-bucket', type: 'string', format: 'kv-bucket', default: 'fsb_location', description: 'KV bucket with the cluster-wide location table.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'kv-blf-bucket', type: 'string', format: 'kv-bucket', default: 'fsb_blf', description: 'KV bucket with the lit BLF lamps.', appliesTo: 'nats enabled' },

  // dedup
  { section: 'dedup', name: 'max-entries', type: 'int', min: 100, max: 10_000_000, default: '100000', description: 'Remote event keys remembered to drop the copy that arrives by the other transport.' },
  { section: 'dedup', name: 'journal', type: 'string', format: 'path', default: '', description: "File that remembers which remote events were injected, so that after a crash (kill -9) the NATS messages JetStream redelivers are not injected a second time. Appended to as events are written to ESL (a process crash loses nothing written; a power loss may lose the last lines) and rotated at max-entries lines, so it stays under a few MB. Empty: dedup lives in memory only and a crash may inject up to the unacknowledged window again.", example: '/var/lib/fs-event-bridge/injected.journal' },
  { section: 'dedup', name: 'ttl', type: 'duration', min: 100, max: DAY_MS, default: '2m', unit: 'ms', description: 'How long a key is remembered.' },

  // consumers
  { section: 'consumer:blf', name: 'enabled', type: 'bool', default: 'false', description: 'Regenerate PRESENCE_IN (BLF lamps) for remote call states.' },
  { section: 'consumer:blf', name: 'legacy-parity', type: 'bool', default: 'false', description: "Behave exactly like startup_script_1.lua (CS_* statuses, confirmed/terminated) instead of the ringing/answered mapping.", appliesTo: 'blf enabled' },
  { section: 'consumer:location', name: 'enabled', type: 'bool', default: 'false', description: 'Keep the registration location table (db_data LOCATION_<user>).' },
  { section: 'consumer:location', name: 'sink', type: 'enum', default: 'sqlite', values: ['sqlite', 'esl'], description: "sqlite: write call_limit.db directly; esl: use the 'db insert/delete' API when the file is not reachable.", appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'db-path', type: 'string', format: 'path', default: '/var/lib/freeswitch/db/call_limit.db', description: "mod_db's sqlite file (call_limit.db in FreeSWITCH's db dir).", appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'legacy-parity', type: 'bool', default: 'false', description: 'Behave exactly like locationlocal.lua + locationforeign.lua (Registered(...) only, rows replaced, never removed).', appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'address-overrides', type: 'map', format: 'host-port', default: '', description: "db_data.data per node, as name=address pairs keyed by switchname or hostname, with :port when the node's SIP profile is not on 5060 (config/dialplan/); nodes not listed use the FreeSWITCH-IPv4 of their events.", example: 'fs-a=192.0.2.10,fs-b=192.0.2.11:5070', appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'expiry-margin', type: 'duration', min: 0, max: DAY_MS, default: '60s', unit: 'ms', description: 'A registration whose unregister/expire event was missed is removed this long after its own expiry.', appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'flush-interval', type: 'duration', min: 1, max: 10_000, default: '20ms', unit: 'ms', description: 'Writes are batched into one short transaction at most this often.', appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'flush-max-rows', type: 'int', min: 1, max: 100_000, default: '2000', description: 'A batch is written as soon as it holds this many rows.', appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'busy-timeout', type: 'duration', min: 1, max: 1_000, default: '20ms', unit: 'ms', description: "How long one write waits for a lock held by FreeSWITCH. Kept short because the wait blocks the bridge's event loop; a refused batch is kept and retried (10 ms doubling to 1 s).", appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'max-clock-skew', type: 'duration', default: '30s', min: 0, max: 3_600_000, unit: 'ms', description: "How far ahead of this node's clock another node's event timestamp may be. A later one (a wrong clock, a forged date) is replaced by the time it was received and counted (fsb_location_clock_skew_total), so it cannot outrank the events that follow it.", appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'peer-down-grace', type: 'duration', min: 0, max: DAY_MS, default: '30s', unit: 'ms', description: "Rows of a node that went down are removed after this grace period unless it comes back." , appliesTo: 'location enabled' },

  // metrics
  { section: 'metrics', name: 'enabled', type: 'bool', default: 'true', description: 'Serve Prometheus metrics and the health endpoint (/metrics, /health, /ready).' },
  { section: 'metrics', name: 'host', type: 'string', format: 'host', default: '127.0.0.1', description: 'Listen address.', appliesTo: 'metrics enabled' },
  { section: 'metrics', name: 'port', type: 'int', default: '9464', min: 0, max: 65535, description: 'Listen port (0: any free port).', appliesTo: 'metrics enabled' },
  { section: 'metrics', name: 'board', type: 'bool', default: 'false', description: 'Serve the cluster board (lamps, registrations, peers, traffic, drops; live over server-sent events) at /board/ on the same server. It shows user names and addresses: on a host other than loopback it needs board-token or board-password, or board-public.', appliesTo: 'metrics enabled' },
  { section: 'metrics', name: 'board-token', type: 'secret', format: 'secret', default: '', description: 'Token that opens the board: `Authorization: Bearer <token>`, or once as /board/?token=<token> (which sets a cookie). Empty: no token.', appliesTo: 'board enabled' },
  { section: 'metrics', name: 'board-user', type: 'string', format: 'text', default: 'operator', description: 'User name for HTTP basic auth on the board (with board-password).', appliesTo: 'board enabled' },
  { section: 'metrics', name: 'board-password', type: 'secret', format: 'secret', default: '', description: 'Password for HTTP basic auth on the board. Empty: no basic auth.', appliesTo: 'board enabled' },
  { section: 'metrics', name: 'board-public', type: 'bool', default: 'false', description: 'Serve the board without credentials on a host other than loopback. Refused unless set (FSB_ERR_BOARD_EXPOSED), and warned about at every start when set.', appliesTo: 'board enabled' },
];

/** The legacy event_multicast.conf.xml params (mod_event_multicast reads these and nothing else). */
export const LEGACY_PARAMS = ['address', 'port', 'bindings', 'ttl', 'loopback', 'psk', 'source_address', 'source_address_ipv6'] as const;

/** Environment variable that overrides a param: FSB_<SECTION>_<PARAM>, `settings` without section, consumers as FSB_CONSUMER_<NAME>_<PARAM>. */
export function envName(spec: Pick<ParamSpec, 'section' | 'name'>): string {
  const param = spec.name.toUpperCase().replace(/-/g, '_');
  if (spec.section === 'settings') return `FSB_${param}`;
  const section = spec.section.toUpperCase().replace(/[:-]/g, '_');
  return `FSB_${section}_${param}`;
}
