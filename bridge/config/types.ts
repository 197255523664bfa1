import type { MulticastKey } from './multicast-key.js';
import type { Bindings } from '../pipeline/bindings.js';

/** Who this node is. `name` is the FreeSWITCH switchname, the value legacy nodes put in Multicast-Sender. */
export interface NodeConfig {
  name: string;
  /** The system hostname FreeSWITCH reports (FreeSWITCH-Hostname), used as db_data.hostname. */
  hostname: string;
  /** The address other nodes reach this node's SIP on (db_data.data for local registrations). */
  ipv4: string;
  cluster: string;
}

export interface EslConfig {
  host: string;
  port: number;
  password: string;
  /** Longest wait between reconnect attempts (backoff doubles from 100 ms up to this). */
  reconnectMaxMs: number;
  /** Events held for the pipeline before the socket is paused (backpressure). */
  queueMaxEvents: number;
  /** Wire bytes of those events: the socket is paused at whichever limit comes first. */
  queueMaxBytes: number;

  maxFrameBytes: number;
  /** Timeout for api/sendevent replies. */
  commandTimeoutMs: number;
}

export interface SecureMulticastConfig {
  /** Sealed with, and accepted. */
  key: MulticastKey;
  /** Also accepted, never sealed with (rotation). */
  acceptKey: MulticastKey | null;
  maxAgeMs: number;
  replayWindow: number;
}

export interface MulticastConfig {
  enabled: boolean;
  address: string;
  port: number;
  /** Local address to bind (0.0.0.0 by default, as the legacy module). */
  bindAddress: string;
  /** Interface address used to join the group and send (empty: kernel default). */
  interface: string;
  ttl: number;
  loopback: boolean;
  psk: string | null;
  /** Secure mode between bridges (AES-256-GCM), or null for the legacy format (plain, or psk). */
  secure: SecureMulticastConfig | null;
  bindings: Bindings;
  receiveBufferBytes: number;
  /** A peer silent for longer than this is down (legacy: 60 s). */
  peerTimeoutMs: number;
  /** Most peers tracked, and most node label values in the metrics (default 256). */
  maxPeers?: number;
  /** A peer not up and silent this long is forgotten (default 1 h). */
  peerForgetMs?: number;
  /** Datagrams larger than this are refused (IPv4 UDP maximum payload by default). */
  maxDatagramBytes: number;
}

export interface NatsConfig {
  enabled: boolean;
  servers: string[];
  subjectPrefix: string;
  bindings: Bindings;
  stream: { name: string; maxAgeMs: number; maxBytes: number; duplicateWindowMs: number; replicas: number; storage: 'file' | 'memory' };
  /** How events are written into messages (readers take both, by the Content-Type header). */
  payloadFormat: 'plain' | 'json';
  /** Durable consumer name prefix; the node name is appended. */
  durablePrefix: string;
  /** The cluster's nodes: empty, one consumer for the whole cluster; else one per other node (no own events sent back). */
  peers: string[];
  /** JetStream redelivers a message not acknowledged within this (the bridge acknowledges after injection). */
  ackWaitMs: number;
  buffer: { maxEvents: number; maxBytes: number };
  maxInFlight: number;
  auth: { user?: string; pass?: string; token?: string; nkeySeed?: string; credsFile?: string };
  tls: { ca?: string; cert?: string; key?: string } | null;
  kv: { locationBucket: string; blfBucket: string };
}

/** How events reach the local FreeSWITCH (sendevent over command-only ESL connections). */
export interface InjectConfig {
  /** Command-only ESL connections carrying injected events. */
  connections: number;
  /** Bytes of sendevent commands queued for FreeSWITCH. */
  queueMaxBytes: number;
}

export interface DedupConfig {
  maxEntries: number;
  ttlMs: number;
  /** File recording injected event keys across a crash ('' = memory only). */
  journal: string;
}

export interface BlfConsumerConfig {
  enabled: boolean;
  /** Reproduce startup_script_1.lua exactly (CS_* statuses, confirmed/terminated) instead of the improved mapping. */
  legacyParity: boolean;
  /** KV bucket holding the calls that light lamps (improved mode, when NATS is configured). Default `fsb_blf`. */
  stateBucket?: string;
}

export interface LocationConsumerConfig {
  enabled: boolean;
  /** `sqlite` writes call_limit.db directly; `esl` uses the `db insert/delete` API. */
  sink: 'sqlite' | 'esl';
  dbPath: string;
  flushMs: number;
  flushMaxRows: number;
  busyTimeoutMs: number;
  /** Rows of a node that went down are removed after this grace period. */
  peerDownGraceMs: number;
  /** Reproduce locationlocal.lua + locationforeign.lua exactly (rows only ever replaced, never removed). Default false. */
  legacyParity?: boolean;
  /** KV bucket holding the cluster's registrations (when NATS is configured). Default `fsb_location`. */
  stateBucket?: string;
  /** db_data.data per node, keyed by switchname or hostname; nodes not listed use their FreeSWITCH-IPv4 header. */
  addressOverrides?: Record<string, string>;
  /** A registration whose unregister/expire was missed is removed this long after its own expiry. Default 60000 ms. */
  expiryMarginMs?: number;
  /** An origin timestamp further ahead of our clock than this is replaced by the receive time (and counted). Default 30000 ms. */
  maxClockSkewMs?: number;
}

export interface MetricsConfig {
  enabled: boolean;
  host: string;
  port: number;
  /** The cluster board at /board/ (null: off). */
  board: BoardConfig | null;
}

export interface BoardConfig {
  /** Bearer token (header, or ?token= once, which sets a cookie). */
  token?: string;
  /** HTTP basic auth, when `password` is set. */
  user: string;
  password?: string;
  /** Served without credentials on a non-loopback host (warned at start). */
  public: boolean;
}

export interface BridgeConfig {
  /** The file this was read from, for error messages. */
  file: string;
  node: NodeConfig;
  esl: EslConfig;
  inject: InjectConfig;
  multicast: MulticastConfig;
  nats: NatsConfig;
  dedup: DedupConfig;
  consumers: { blf: BlfConsumerConfig; location: LocationConsumerConfig };
  metrics: MetricsConfig;
  logLevel: string;
  /** Period of the traffic summary log line; 0 = off. */
  statsIntervalMs: number;
}
