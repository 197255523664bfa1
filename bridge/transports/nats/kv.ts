import type { NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm, KvWatchInclude, type KV } from '@nats-io/kv';
import type { StateStore } from '../../consumer.js';
import { StateKeyError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import { explainPermission, permissionViolation } from './permissions.js';

/**
 * KV keys are subject tokens limited to [-/_=.a-zA-Z0-9]. Free-text keys (AORs like
 * `1000@example.com`, realms with spaces) are escaped: every UTF-8 byte outside
 * [-/_a-zA-Z0-9], including `.` and `=`, becomes `=XX` (uppercase hex). Escaping
 * every dot rules out empty tokens and leading/trailing dots, and `=` as the escape
 * character keeps the rule reversible. The empty key is a lone `=`.
 */
/**
 * The server's default max_control_line is 4096 bytes and a KV write's protocol line
 * holds `$KV.<bucket>.<key>`, a reply inbox and sizes: a longer key would make the
 * server close the whole connection, so it is refused here instead.
 */
export const MAX_ENCODED_KEY_BYTES = 3072;

export function encodeKvKey(key: string): string {
  if (key === '') return '=';
  if (/^[-/_a-zA-Z0-9]+$/.test(key)) {
    if (key.length > MAX_ENCODED_KEY_BYTES) throw new StateKeyError(key, `longer than ${MAX_ENCODED_KEY_BYTES} bytes`);
    return key;
  }
  if (!key.isWellFormed()) throw new StateKeyError(key, 'not well-formed UTF-16 (lone surrogate)');
  let out = '';
  for (const byte of Buffer.from(key, 'utf8')) {
    const plain = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || byte === 0x2d || byte === 0x2f || byte === 0x5f;
    out += plain ? String.fromCharCode(byte) : '=' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  if (out.length > MAX_ENCODED_KEY_BYTES) throw new StateKeyError(key, `longer than ${MAX_ENCODED_KEY_BYTES} bytes once escaped`);
  return out;
}

export function decodeKvKey(encoded: string): string {
  if (encoded === '=') return '';
  if (!encoded.includes('=')) return encoded;
  const bytes: number[] = [];
  for (let i = 0; i < encoded.length; i++) {
    if (encoded[i] === '=') {
      bytes.push(parseInt(encoded.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(encoded.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

export interface StateStoreOptions {
  /** Replicas when the bucket is created (ignored for an existing bucket). */
  replicas?: number;
  logger?: Logger;
  /** Counts acknowledged writes in fsb_state_writes_total{bucket,op}. */
  metrics?: Metrics;
}

const decoder = new TextDecoder();
const RECOVERY_ATTEMPTS = 10;

/** A StateStore on a NATS KV bucket (created when missing, one value per key). */
export class NatsStateStore implements StateStore {
  private readonly subjectPrefix: string;
  private readonly countWrite: (op: 'put' | 'delete') => void;

  constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    readonly bucket: string,
    private readonly logger?: Logger,
    metrics?: Metrics,
  ) {
    this.subjectPrefix = `$KV.${bucket}.`;
    const writes = metrics?.counter('fsb_state_writes_total', 'Writes to the cluster state (NATS KV) that the servers acknowledged, by bucket and operation', ['bucket', 'op']);
    this.countWrite = writes ? (op) => writes.inc({ bucket, op }) : () => undefined;
  }

  async put(key: string, value: string): Promise<void> {
    await throughRecovery(this.nc, () => this.kv.put(encodeKvKey(key), value), this.describe('put'));
    this.countWrite('put');
  }

  async delete(key: string): Promise<void> {
    await throughRecovery(this.nc, () => this.kv.delete(encodeKvKey(key)), this.describe('delete'));
    this.countWrite('delete');
  }

  private describe(operation: string): { bucket: string; operation: string; logger?: Logger } {
    return { bucket: this.bucket, operation, logger: this.logger };
  }

  /**
   * One ordered consumer over the bucket's stream with last-per-subject delivery,
   * pulled in large batches: a late joiner loads the whole table in one pass
   * instead of keys() followed by a get() per key.
   */
  async entries(): Promise<Map<string, string>> {
    return throughRecovery(this.nc, () => this.load(), this.describe('load'));
  }

  private async load(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const stream = `KV_${this.bucket}`;
    // Emptiness from the stream itself: a just-created consumer on a clustered
    // stream can report 0 pending before it has counted, which would load nothing.
    if ((await jetstreamManager(this.nc).then((jsm) => jsm.streams.info(stream))).state.messages === 0) return out;
    const consumer = await jetstream(this.nc).consumers.get(stream, {
      filter_subjects: `${this.subjectPrefix}>`,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
    const messages = await consumer.consume({ max_messages: 10_000 });
    try {
      for await (const msg of messages) {
        const key = decodeKvKey(msg.subject.slice(this.subjectPrefix.length));
        const op = msg.headers?.get('KV-Operation');
        if (op === 'DEL' || op === 'PURGE') out.delete(key);
        else out.set(key, decoder.decode(msg.data));
        if (msg.info.pending === 0) break;
      }
    } finally {
      messages.stop();
    }
    return out;
  }

  async watch(onChange: (key: string, value: string | null) => void): Promise<() => Promise<void>> {
    const iter = await throughRecovery(this.nc, () => this.kv.watch({ include: KvWatchInclude.UpdatesOnly }), this.describe('watch'));
    const done = (async () => {
      for await (const entry of iter) {
        const value = entry.operation === 'PUT' ? entry.string() : null;
        try {
          onChange(decodeKvKey(entry.key), value);
        } catch (err) {
          this.logger?.error({ component: 'nats_kv', bucket: this.bucket, err }, 'KV watch listener threw');
        }
      }
    })();
    return async () => {
      iter.stop();
      await done;
    };
  }
}

export async function openStateStore(nc: NatsConnection, bucket: string, options: StateStoreOptions = {}): Promise<NatsStateStore> {
  const kvm = new Kvm(nc);
  const kv = await throughRecovery(
    nc,
    async (): Promise<KV> => {
      try {
        const existing = await kvm.open(bucket);
        await existing.status();
        return existing;
      } catch {
        return kvm.create(bucket, { history: 1, replicas: options.replicas ?? 1 });
      }
    },
    { bucket, operation: 'open', logger: options.logger },
  );
  return new NatsStateStore(nc, kv, bucket, options.logger, options.metrics);
}

/**
 * While a NATS cluster starts or recovers from a lost member, JetStream answers
 * "jetstream is not enabled", times out or has no responders for several seconds
 * (a leader election). A state write or load must outlive that, or a lamp or a
 * location row would be missing from KV until its next change. Retries with
 * backoff for about 11 s, then lets the caller count the failure.
 */
async function throughRecovery<T>(nc: NatsConnection, call: () => Promise<T>, what: { bucket: string; operation: string; logger?: Logger }): Promise<T> {
  let delayMs = 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      // A refused permission is not a recovery: waiting 11 s would only delay saying so.
      if (permissionViolation(err)) throw explainPermission(err, `the KV bucket ${what.bucket} (${what.operation})`);
      if (attempt >= RECOVERY_ATTEMPTS || nc.isClosed()) throw err;
      if (attempt === 1) what.logger?.warn({ component: 'nats_kv', bucket: what.bucket, operation: what.operation, err: (err as Error).message }, 'KV operation failed; retrying');
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      delayMs = Math.min(delayMs * 2, 2_000);
    }
  }
}
