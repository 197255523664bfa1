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
}

const DEFAULT_MULTICAST_BINDINGS =
  'HEARTBEAT RE_SCHEDULE PRESENCE_IN MESSAGE_WAITING CUSTOM sofia::register sofia::unregister sofia::expire';
const DEFAULT_NATS_BINDINGS =
  'HEARTBEAT PRESENCE_IN MESSAGE_WAITING CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE CUSTOM sofia::register sofia::unregister sofia::expire';

export const PARAMS: readonly ParamSpec[] = [
  // settings: who this node is
  { section: 'settings', name: 'node-name', type: 'string', default: '', description: "This node's name: FreeSWITCH's switchname, the value legacy nodes send as Multicast-Sender. Empty: the system hostname (FreeSWITCH's own default switchname).", example: 'fs-a' },
  { section: 'settings', name: 'hostname', type: 'string', default: '', description: 'The hostname FreeSWITCH reports (FreeSWITCH-Hostname); written as db_data.hostname for local registrations. Empty: the system hostname.', example: 'node-a' },
  { section: 'settings', name: 'ipv4', type: 'string', default: '', description: "The address other nodes reach this node's SIP profile on; written as db_data.data for local registrations. Empty: the first non-loopback IPv4 address.", example: '10.99.0.1' },
  { section: 'settings', name: 'cluster', type: 'string', default: 'default', description: 'Cluster name: the second token of every NATS subject, so several clusters can share one NATS.', example: 'eu1' },
  { section: 'settings', name: 'stats-interval', type: 'duration', default: '60s', min: 0, unit: 'ms', description: 'How often the bridge logs one line of traffic figures (events in/out per transport, injected, dropped). 0 turns it off.' },
  { section: 'settings', name: 'log-level', type: 'enum', default: 'info', values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], description: 'Log level (pino). The CLI --log-level overrides it.' },

  // esl
  { section: 'esl', name: 'host', type: 'string', default: '127.0.0.1', description: 'Event socket address of the local FreeSWITCH. Keep ESL on loopback: anyone who reaches it can inject events.' },
  { section: 'esl', name: 'port', type: 'int', default: '8021', min: 1, max: 65535, description: 'Event socket port.' },
  { section: 'esl', name: 'password', type: 'secret', default: 'ClueCon', description: 'Event socket password (event_socket.conf.xml).' },
  { section: 'esl', name: 'reconnect-max', type: 'duration', default: '800ms', min: 100, max: 5000, unit: 'ms', description: 'Longest wait between reconnect attempts; the backoff doubles from 100 ms up to this. The 800 ms default puts the bridge back on a restarted FreeSWITCH within a second.' },
  { section: 'esl', name: 'queue-max-events', type: 'int', default: '1000', min: 100, description: 'Events parsed but not yet handled before the bridge stops reading the socket (backpressure; FreeSWITCH then queues them). 1000 is 0.1 s at 10k events/s; a parsed event of 3.7 KB takes about 20 KB of heap, so 10000 would pin 200 MB while the sinks lag.' },
  { section: 'esl', name: 'max-frame-bytes', type: 'bytes', default: '16MB', min: 65536, unit: 'bytes', description: 'Largest ESL frame accepted; a larger one is a protocol error (counted, connection reset).' },
  { section: 'esl', name: 'command-timeout', type: 'duration', default: '10s', min: 100, unit: 'ms', description: 'How long api and sendevent wait for their reply.' },

  // bindings (mod_event_multicast grammar)
  { section: 'bindings', name: 'multicast', type: 'bindings', default: DEFAULT_MULTICAST_BINDINGS, description: 'Events sent to the multicast group, in mod_event_multicast grammar: event names, ALL, CUSTOM followed by subclasses.', appliesTo: 'multicast enabled' },
  { section: 'bindings', name: 'nats', type: 'bindings', default: DEFAULT_NATS_BINDINGS, description: 'Events published to NATS, same grammar.', appliesTo: 'nats enabled' },

  // multicast
  { section: 'multicast', name: 'enabled', type: 'bool', default: 'true', description: 'Send and receive native mod_event_multicast datagrams.' },
  { section: 'multicast', name: 'address', type: 'string', default: '225.1.1.1', description: 'Multicast group (IPv4).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'port', type: 'int', default: '4242', min: 1, max: 65535, description: 'UDP port of the group.', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'bind-address', type: 'string', default: '0.0.0.0', description: 'Local address the socket binds to.', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'interface', type: 'string', default: '', description: 'Address of the interface used to join the group and to send (empty: the kernel default route).', example: '10.99.0.1', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'ttl', type: 'int', default: '1', min: 0, max: 255, description: 'Multicast TTL (1 keeps datagrams on the LAN).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'loopback', type: 'bool', default: 'false', description: 'Deliver our own datagrams to sockets on this host (our own are ignored on receipt either way).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'psk', type: 'secret', default: '', description: 'Pre-shared key: Blowfish-CBC exactly like mod_event_multicast (weak: no integrity, no replay protection). Empty: plaintext.', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'receive-buffer', type: 'bytes', default: '32MB', min: 65536, unit: 'bytes', description: 'Socket receive buffer requested (SO_RCVBUF). The kernel caps it at net.core.rmem_max (often 208 KB to 4 MB) and the bridge logs the size granted; set net.core.rmem_max=33554432 so a burst of 10,000 datagrams fits (docs/decisions.md).', appliesTo: 'multicast enabled' },
  { section: 'multicast', name: 'peer-timeout', type: 'duration', default: '60s', min: 100, unit: 'ms', description: 'A peer whose HEARTBEAT has not been heard for this long is down (multicast::peerdown), as in the legacy module.' },
  { section: 'multicast', name: 'max-datagram-bytes', type: 'bytes', default: '65507', min: 300, max: 65507, unit: 'bytes', description: 'Largest datagram accepted or sent.', appliesTo: 'multicast enabled' },

  // nats
  { section: 'nats', name: 'enabled', type: 'bool', default: 'false', description: 'Publish to and receive from NATS (JetStream).' },
  { section: 'nats', name: 'servers', type: 'list', default: 'nats://127.0.0.1:4222', description: 'Comma-separated server URLs; the client fails over between them.', example: 'nats://10.0.0.1:4222,nats://10.0.0.2:4222', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'subject-prefix', type: 'string', default: 'fs', description: 'First token of every subject: <prefix>.<cluster>.<node>.<EVENT>[.<subclass tokens>].', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-name', type: 'string', default: 'FS_EVENTS', description: 'JetStream stream holding the events (created or updated at start).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-max-age', type: 'duration', default: '24h', min: 1000, unit: 'ms', description: 'How long events are kept for replay.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-max-bytes', type: 'bytes', default: '1GB', min: 1024, unit: 'bytes', description: 'Size cap of the stream (oldest events go first).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'duplicate-window', type: 'duration', default: '2m', min: 100, unit: 'ms', description: 'JetStream dedup window for Nats-Msg-Id (Core-UUID:Event-Sequence).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'replicas', type: 'int', default: '1', min: 1, max: 5, description: 'Stream and KV replicas (3 on a 3-node NATS cluster).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'stream-storage', type: 'enum', default: 'file', values: ['file', 'memory'], description: "Where the stream keeps events. file survives a restart of every NATS server; memory (with replicas 3 on a cluster) avoids the file store's write stalls, which put 5-25 ms into the NATS path's p999 (docs/benchmarks.md), and loses the replay window if every server restarts. With memory, stream-max-bytes must fit the servers' max_memory_store (FSB_ERR_NATS_STREAM_LIMITS otherwise). Fixed when the stream is created: changing it later logs a warning and keeps the stream as it is.", appliesTo: 'nats enabled' },
  { section: 'nats', name: 'durable-prefix', type: 'string', default: 'fsb-', description: "Durable consumer name prefix; the node name is appended, so a restarted bridge resumes where it stopped.", appliesTo: 'nats enabled' },
  { section: 'nats', name: 'buffer-max-events', type: 'int', default: '100000', min: 1, description: 'Events held while NATS is unreachable; beyond it the oldest are dropped (counted).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'buffer-max-bytes', type: 'bytes', default: '256MB', min: 1024, unit: 'bytes', description: 'Bytes held while NATS is unreachable.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'max-in-flight', type: 'int', default: '1024', min: 1, description: 'JetStream publishes awaiting their ack.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'user', type: 'string', default: '', description: 'User name (with pass).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'pass', type: 'secret', default: '', description: 'Password (with user).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'token', type: 'secret', default: '', description: 'Auth token.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'nkey-seed', type: 'secret', default: '', description: 'NKey seed (SU...).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'creds-file', type: 'string', default: '', description: 'Path of a .creds file (JWT + NKey).', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'tls-ca', type: 'string', default: '', description: 'CA certificate file; setting any tls-* param enables TLS.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'tls-cert', type: 'string', default: '', description: 'Client certificate file.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'tls-key', type: 'string', default: '', description: 'Client key file.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'kv-location-bucket', type: 'string', default: 'fsb_location', description: 'KV bucket with the cluster-wide location table.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'kv-blf-bucket', type: 'string', default: 'fsb_blf', description: 'KV bucket with the lit BLF lamps.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'kv-peers-bucket', type: 'string', default: 'fsb_peers', description: 'KV bucket with node heartbeats.', appliesTo: 'nats enabled' },
  { section: 'nats', name: 'heartbeat', type: 'duration', default: '10s', min: 100, unit: 'ms', description: 'How often this node writes its heartbeat to KV.', appliesTo: 'nats enabled' },

  // dedup
  { section: 'dedup', name: 'max-entries', type: 'int', default: '100000', min: 100, description: 'Remote event keys remembered to drop the copy that arrives by the other transport.' },
  { section: 'dedup', name: 'ttl', type: 'duration', default: '2m', min: 100, unit: 'ms', description: 'How long a key is remembered.' },

  // consumers
  { section: 'consumer:blf', name: 'enabled', type: 'bool', default: 'false', description: 'Regenerate PRESENCE_IN (BLF lamps) for remote call states.' },
  { section: 'consumer:blf', name: 'legacy-parity', type: 'bool', default: 'false', description: "Behave exactly like startup_script_1.lua (CS_* statuses, confirmed/terminated) instead of the ringing/answered mapping.", appliesTo: 'blf enabled' },
  { section: 'consumer:location', name: 'enabled', type: 'bool', default: 'false', description: 'Keep the registration location table (db_data LOCATION_<user>).' },
  { section: 'consumer:location', name: 'sink', type: 'enum', default: 'sqlite', values: ['sqlite', 'esl'], description: "sqlite: write call_limit.db directly; esl: use the 'db insert/delete' API when the file is not reachable.", appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'db-path', type: 'string', default: '/var/lib/freeswitch/db/call_limit.db', description: "mod_db's sqlite file (call_limit.db in FreeSWITCH's db dir).", appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'legacy-parity', type: 'bool', default: 'false', description: 'Behave exactly like locationlocal.lua + locationforeign.lua (Registered(...) only, rows replaced, never removed).', appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'address-overrides', type: 'map', default: '', description: "db_data.data per node, as name=address pairs keyed by switchname or hostname; nodes not listed use the FreeSWITCH-IPv4 of their events.", example: 'fs-a=192.0.2.10,fs-b=192.0.2.11', appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'expiry-margin', type: 'duration', default: '60s', min: 0, unit: 'ms', description: 'A registration whose unregister/expire event was missed is removed this long after its own expiry.', appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'flush-interval', type: 'duration', default: '20ms', min: 1, unit: 'ms', description: 'Writes are batched into one short transaction at most this often.', appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'flush-max-rows', type: 'int', default: '2000', min: 1, description: 'A batch is written as soon as it holds this many rows.', appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'busy-timeout', type: 'duration', default: '20ms', min: 1, unit: 'ms', description: "How long one write waits for a lock held by FreeSWITCH. Kept short because the wait blocks the bridge's event loop; a refused batch is kept and retried (10 ms doubling to 1 s).", appliesTo: 'sink sqlite' },
  { section: 'consumer:location', name: 'max-clock-skew', type: 'duration', default: '30s', min: 0, max: 3_600_000, unit: 'ms', description: "How far ahead of this node's clock another node's event timestamp may be. A later one (a wrong clock, a forged date) is replaced by the time it was received and counted (fsb_location_clock_skew_total), so it cannot outrank the events that follow it.", appliesTo: 'location enabled' },
  { section: 'consumer:location', name: 'peer-down-grace', type: 'duration', default: '30s', min: 0, unit: 'ms', description: "Rows of a node that went down are removed after this grace period unless it comes back." , appliesTo: 'location enabled' },

  // metrics
  { section: 'metrics', name: 'enabled', type: 'bool', default: 'true', description: 'Serve Prometheus metrics and the health endpoint (/metrics, /health, /ready).' },
  { section: 'metrics', name: 'host', type: 'string', default: '127.0.0.1', description: 'Listen address.', appliesTo: 'metrics enabled' },
  { section: 'metrics', name: 'port', type: 'int', default: '9464', min: 0, max: 65535, description: 'Listen port (0: any free port).', appliesTo: 'metrics enabled' },
  { section: 'metrics', name: 'board', type: 'bool', default: 'false', description: 'Serve the cluster board (lamps, registrations, peers, traffic, drops; live over server-sent events) at /board/ on the same server. It shows user names and addresses: on a host other than loopback it needs board-token or board-password, or board-public.', appliesTo: 'metrics enabled' },
  { section: 'metrics', name: 'board-token', type: 'secret', default: '', description: 'Token that opens the board: `Authorization: Bearer <token>`, or once as /board/?token=<token> (which sets a cookie). Empty: no token.', appliesTo: 'board enabled' },
  { section: 'metrics', name: 'board-user', type: 'string', default: 'operator', description: 'User name for HTTP basic auth on the board (with board-password).', appliesTo: 'board enabled' },
  { section: 'metrics', name: 'board-password', type: 'secret', default: '', description: 'Password for HTTP basic auth on the board. Empty: no basic auth.', appliesTo: 'board enabled' },
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
