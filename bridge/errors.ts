/**
 * One class per failure, each with a stable `code` operators can grep for and
 * alert on. The table of codes is in docs/errors.md.
 */
export class BridgeError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A frame or event could not be parsed. */
export class ParseError extends BridgeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FSB_ERR_PARSE', message, options);
  }
}

/** An ESL frame or event exceeded the configured size cap. */
export class FrameTooLargeError extends BridgeError {
  constructor(readonly size: number, readonly limit: number) {
    super('FSB_ERR_FRAME_TOO_LARGE', `frame of ${size} bytes exceeds the limit of ${limit} bytes`);
  }
}

/** A header name or value would inject extra lines into an ESL command. */
export class HeaderInjectionError extends BridgeError {
  constructor(readonly headerName: string) {
    super('FSB_ERR_HEADER_INJECTION', `header ${JSON.stringify(headerName)} contains CR or LF in its name or value`);
  }
}

/** ESL authentication was refused. */
export class AuthError extends BridgeError {
  constructor(message: string) {
    super('FSB_ERR_AUTH', message);
  }
}

/**
 * The first line of an ESL command as errors and logs may show it: the secret of
 * `auth <password>` and `userauth <user>:<password>` never leaves the client.
 */
export function commandForDisplay(command: string): string {
  const line = command.split('\n')[0];
  const verb = /^(auth|userauth)\s/i.exec(line);
  return verb ? `${verb[1]} [redacted]` : line;
}

/** FreeSWITCH answered a command with `-ERR ...`. */
export class CommandError extends BridgeError {
  /** The command's first line, secrets redacted (commandForDisplay). */
  readonly command: string;
  constructor(command: string, readonly reply: string) {
    super('FSB_ERR_COMMAND', `${commandForDisplay(command)}: ${reply}`);
    this.command = commandForDisplay(command);
  }

  /** Map a `Reply-Text` to an error when FreeSWITCH refused, else undefined. */
  static fromReply(command: string, reply: string): CommandError | undefined {
    return reply.startsWith('-ERR') ? new CommandError(command, reply) : undefined;
  }
}

/** The ESL connection is not up (or went away while a command waited for its reply). */
export class NotConnectedError extends BridgeError {
  /**
   * `closedByFreeswitch`: FreeSWITCH closed the connection (it went away or killed the
   * listener), not us. mod_event_socket answers each command right after running it, so
   * a command it had not answered then was never read, and may be written again.
   */
  constructor(message = 'not connected to FreeSWITCH', readonly closedByFreeswitch = false) {
    super('FSB_ERR_NOT_CONNECTED', message);
  }
}

/** A config file or parameter is invalid; the message names file and param. */
export class ConfigError extends BridgeError {
  constructor(readonly file: string, readonly param: string, problem: string) {
    // Sections and whole-file problems are named as such, params as `param "x"`.
    super('FSB_ERR_CONFIG', param.startsWith('<') || param.startsWith('(') ? `${file}: ${param}: ${problem}` : `${file}: param "${param}": ${problem}`);
  }
}

/** The board would be served without credentials on a host other than loopback. */
export class BoardExposedError extends BridgeError {
  constructor(readonly file: string, readonly host: string) {
    super(
      'FSB_ERR_BOARD_EXPOSED',
      `${file}: the board would be open to anyone reaching ${host} (it shows users, addresses and calls): set metrics board-token or board-password, listen on 127.0.0.1, or set board-public to accept it`,
    );
  }
}

/** A multicast datagram was refused; `cause` says why (it is also the metrics label). */
export class DatagramError extends BridgeError {
  constructor(readonly reason: DatagramDropReason, message: string) {
    super(`FSB_ERR_DATAGRAM_${reason.toUpperCase()}`, message);
  }
}

export type DatagramDropReason =
  | 'too_short'
  | 'too_large'
  | 'no_magic'
  | 'bad_psk'
  | 'plaintext_with_psk'
  | 'malformed'
  // Secure multicast (bridge/transports/multicast/secure.ts, docs/security.md).
  | 'secure_without_key'
  | 'not_secure'
  | 'secure_malformed'
  | 'unknown_key_id'
  | 'bad_tag'
  | 'stale'
  | 'from_future'
  | 'replayed'
  | 'outside_window';

/** Every DatagramDropReason, for tests and docs that must cover them all. */
export const DATAGRAM_DROP_REASONS: readonly DatagramDropReason[] = [
  'too_short',
  'too_large',
  'no_magic',
  'bad_psk',
  'plaintext_with_psk',
  'malformed',
  'secure_without_key',
  'not_secure',
  'secure_malformed',
  'unknown_key_id',
  'bad_tag',
  'stale',
  'from_future',
  'replayed',
  'outside_window',
];

/** A psk is configured but this Node has no working Blowfish. */
export class CipherUnavailableError extends BridgeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FSB_ERR_CIPHER_UNAVAILABLE', message, options);
  }
}

/** The NATS servers have no room for the events stream as configured (size against their memory or file store limit). */
export class NatsStreamLimitError extends BridgeError {
  constructor(stream: string, storage: 'file' | 'memory', maxBytes: number, serverSays: string, options?: { cause?: unknown }) {
    const limit = storage === 'memory' ? 'max_memory_store' : 'max_file_store';
    super(
      'FSB_ERR_NATS_STREAM_LIMITS',
      `JetStream has no room for stream ${stream} (${storage} storage, nats/stream-max-bytes ${maxBytes} bytes): the server says "${serverSays}"; lower nats/stream-max-bytes or raise ${limit} in the servers' jetstream block`,
      options,
    );
  }
}

/** A NATS server refused the configured credentials (user/pass, token, NKey or creds file). */
export class NatsAuthError extends BridgeError {
  constructor(readonly servers: readonly string[], options?: { cause?: unknown }) {
    super('FSB_ERR_NATS_AUTH', `NATS authorization failed for ${servers.join(', ')}: check nats user/pass, token, nkey seed or creds file`, options);
  }
}

/**
 * A header ESL cannot carry as written: an empty name, a ':' in the name (FreeSWITCH
 * splits each sendevent line at its first ':') or a NUL byte (FreeSWITCH stops
 * reading the command there, dropping the headers and body after it).
 */
export class InvalidEslHeaderError extends BridgeError {
  constructor(readonly headerName: string, problem: string) {
    super('FSB_ERR_INVALID_HEADER', `header ${JSON.stringify(headerName)}: ${problem}`);
  }
}

/** A command waited longer than esl.commandTimeoutMs for its reply. */
export class CommandTimeoutError extends BridgeError {
  /** The command's first line, secrets redacted (commandForDisplay). */
  readonly command: string;
  constructor(command: string, readonly timeoutMs: number) {
    super('FSB_ERR_COMMAND_TIMEOUT', `${commandForDisplay(command)}: no reply within ${timeoutMs} ms`);
    this.command = commandForDisplay(command);
  }
}

/** A location row cannot be written through mod_db's `db insert/realm/key/value` API (a `/`, CR or LF in a part, or an empty part). */
export class LocationRowError extends BridgeError {
  constructor(readonly realm: string, readonly dataKey: string) {
    super('FSB_ERR_LOCATION_ROW', `realm ${JSON.stringify(realm)} / key ${JSON.stringify(dataKey)} cannot be written through the db API`);
  }
}

/**
 * The TLS handshake with every NATS server failed on our side (server certificate not
 * signed by the configured CA, name mismatch, TLS required on one end only); `reason`
 * is Node's or nats.js's own text. Like NatsAuthError it fails startup instead of retrying.
 */
export class NatsTlsError extends BridgeError {
  constructor(readonly servers: readonly string[], readonly reason: string, options?: { cause?: unknown }) {
    super('FSB_ERR_NATS_TLS', `NATS TLS with ${servers.join(', ')} failed: ${reason}: check nats tls-ca, tls-cert and tls-key against the server's tls block`, options);
  }
}

/**
 * A cluster-state key the KV store cannot hold as written: not well-formed UTF-16 (a
 * lone surrogate would be written as U+FFFD and collide with other keys) or longer
 * than a NATS subject may be (the server closes the connection on an over-long
 * protocol line).
 */
export class StateKeyError extends BridgeError {
  constructor(readonly key: string, problem: string) {
    super('FSB_ERR_STATE_KEY', `state key ${JSON.stringify(key.slice(0, 80))}${key.length > 80 ? '...' : ''}: ${problem}`);
  }
}

/**
 * The location consumer cannot use call_limit.db at startup (missing directory,
 * not a database or corrupt, read-only, locked by another process): the bridge must
 * exit so that its supervisor restarts it or an operator looks, instead of running
 * without a location table.
 */
export class LocationDbError extends BridgeError {
  constructor(readonly path: string, problem: string, options?: { cause?: unknown }) {
    super('FSB_ERR_LOCATION_DB', `<consumer name="location"> param "db-path" (${path}): ${problem}`, options);
  }
}

/** The inject queue (inject/queue-max-bytes) had no room for an event a consumer fired. */
export class InjectQueueFullError extends BridgeError {
  constructor(readonly limitBytes: number) {
    super('FSB_ERR_INJECT_QUEUE_FULL', `the inject queue is full (inject/queue-max-bytes ${limitBytes} bytes): FreeSWITCH takes events slower than they come`);
  }
}

/** The dedup journal (dedup/journal) cannot be opened or read. */
export class JournalError extends BridgeError {
  constructor(readonly path: string, cause: unknown) {
    super('FSB_ERR_JOURNAL', `param "dedup/journal" ${JSON.stringify(path)}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/**
 * A socket the config describes cannot be opened on this host (port in use, an address
 * this host does not have): names the params to look at, since only the host can tell.
 */
export class BindError extends BridgeError {
  constructor(what: string, address: string, readonly params: readonly string[], detail: string, options?: { cause?: unknown }) {
    super('FSB_ERR_BIND', `cannot open ${what} on ${address} (${detail}); check ${params.join(', ')}`, options);
  }
}

/**
 * The NATS server refused a publish or a JetStream/KV API call this node's user is not
 * allowed (its authorization block). `subject` is the one refused; `what` the operation.
 * Retried, since permissions can be changed on a running server (`nats-server --signal reload`).
 */
export class NatsPermissionError extends BridgeError {
  constructor(readonly subject: string, what: string, options?: { cause?: unknown }) {
    super(
      'FSB_ERR_NATS_PERMISSION',
      `NATS refused ${what}: this user may not publish to ${subject}; create the stream and buckets with \`fs-event-bridge nats-setup\` (admin user) and give the node the permissions \`fs-event-bridge nats-permissions\` prints (docs/security.md)`,
      options,
    );
  }
}
