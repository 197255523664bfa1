import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { MulticastKey } from '../../config/multicast-key.js';
import { DatagramError } from '../../errors.js';

/**
 * Secure multicast between bridges: AES-256-GCM (node:crypto, OpenSSL) with a cluster
 * key, a per-sender counter, a replay window and a freshness bound. docs/security.md
 * has the threat model; this is the datagram:
 *
 *   offset size
 *   0      5    00 'F' 'S' 'B' 'G'   format tag; the leading NUL is for legacy receivers (below)
 *   5      1    version (1)
 *   6      1    key id (0-255), so two keys can be accepted while one replaces the other
 *   7      1    0 (reserved)
 *   8      8    sender epoch: random per sender start
 *   16     8    counter, 1, 2, ... per epoch (big-endian)
 *   24     8    sender clock, ms since the Unix epoch (big-endian)
 *   32     n    ciphertext of a plain legacy datagram body: event text + MAGIC + 0-7 NULs
 *   32+n   16   GCM tag; bytes 0-31 are authenticated as additional data
 *
 * Nonces: the AES key of a datagram is HKDF-SHA256(cluster key, salt = epoch), so each
 * sender start gets its own key and the 96-bit nonce is just the counter. A restarted
 * sender draws a new epoch (64 random bits) instead of persisting its counter: it can
 * never reuse a (key, nonce) pair, and a collision of two epochs under one cluster key
 * needs about 2^32 sender starts.
 *
 * Legacy mod_event_multicast receivers (spec/freeswitch-wire-facts.md section 1):
 * - without psk they search MAGIC with strchr() from byte 0; byte 0 is NUL, so the
 *   search ends at once and the datagram is dropped ("Failed to validate inbound event
 *   packet"), never parsed;
 * - with a psk they Blowfish-decrypt bytes 256 onwards, which yields noise without
 *   MAGIC (a 2^-168 chance per position), and drop it. Their decrypt writes a NUL at
 *   `outl + tmplen` and leaves tmplen unset when the padding check fails, so the
 *   plaintext is padded to a multiple of 8 bytes: with a datagram of 256 + 8k bytes
 *   that index stays inside their buffer for any tmplen a previous packet left (0-7).
 */

export const SECURE_TAG = Buffer.from([0x00, 0x46, 0x53, 0x42, 0x47]);
const VERSION = 1;
export const SECURE_HEADER_BYTES = 32;
const TAG_BYTES = 16;
export const SECURE_OVERHEAD_BYTES = SECURE_HEADER_BYTES + TAG_BYTES;
const EPOCH_BYTES = 8;
const HKDF_INFO = Buffer.from('fs-event-bridge multicast aes-256-gcm v1');
const TWO_32 = 0x1_0000_0000;
/** Senders and AES keys remembered by a receiver; only authenticated datagrams add to them. */
const MAX_SESSIONS = 1024;

export function isSecureDatagram(buf: Uint8Array): boolean {
  return buf.length >= SECURE_TAG.length && Buffer.from(buf.buffer, buf.byteOffset, SECURE_TAG.length).equals(SECURE_TAG);
}

function aeadKey(key: MulticastKey, epoch: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', key.key, epoch, HKDF_INFO, 32));
}

function nonceOf(counter: number): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32BE(Math.floor(counter / TWO_32), 4);
  nonce.writeUInt32BE(counter % TWO_32, 8);
  return nonce;
}

function readUint64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * TWO_32 + buf.readUInt32BE(offset + 4);
}

function writeUint64(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buf.writeUInt32BE(value % TWO_32, offset + 4);
}

/** Bytes of NUL padding that make a plaintext of `length` bytes a multiple of 8 (see the legacy psk note above). */
export function securePadding(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** One sender: its epoch, counter and current key. */
export class SecureSealer {
  private epoch = randomBytes(EPOCH_BYTES);
  private counter = 0;
  private aesKey: Buffer;

  constructor(private key: MulticastKey) {
    this.aesKey = aeadKey(key, this.epoch);
  }

  /** The next datagram sent uses `key`; epoch and counter go on, so receivers' replay windows keep working. */
  setKey(key: MulticastKey): void {
    this.key = key;
    this.aesKey = aeadKey(key, this.epoch);
  }

  get keyId(): number {
    return this.key.id;
  }

  seal(plaintext: Buffer, now = Date.now()): Buffer {
    if (this.counter >= Number.MAX_SAFE_INTEGER) {
      // Never reached in practice (2^53 datagrams); a new epoch keeps nonces unique if it were.
      this.epoch = randomBytes(EPOCH_BYTES);
      this.counter = 0;
      this.aesKey = aeadKey(this.key, this.epoch);
    }
    const counter = ++this.counter;
    const header = Buffer.alloc(SECURE_HEADER_BYTES);
    SECURE_TAG.copy(header, 0);
    header[5] = VERSION;
    header[6] = this.key.id;
    this.epoch.copy(header, 8);
    writeUint64(header, 16, counter);
    writeUint64(header, 24, now);
    const cipher = createCipheriv('aes-256-gcm', this.aesKey, nonceOf(counter), { authTagLength: TAG_BYTES });
    cipher.setAAD(header);
    return Buffer.concat([header, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }
}

/**
 * Which counters of one sender epoch have been accepted: the highest, and a bitmap of
 * the `size` counters below it, so a datagram overtaken by a few others (reordered) is
 * still accepted once, and one older than the window is refused.
 */
class ReplayWindow {
  private readonly bits: Uint32Array;
  private highest = 0;

  constructor(readonly size: number) {
    this.bits = new Uint32Array(size / 32);
  }

  /** null when `counter` is new and within the window. */
  refusal(counter: number): 'replayed' | 'outside_window' | null {
    if (counter > this.highest) return null;
    if (this.highest - counter >= this.size) return 'outside_window';
    return this.isSet(counter) ? 'replayed' : null;
  }

  accept(counter: number): void {
    if (counter > this.highest) {
      if (counter - this.highest >= this.size) this.bits.fill(0);
      else for (let c = this.highest + 1; c < counter; c++) this.clear(c);
      this.highest = counter;
    }
    const slot = counter % this.size;
    this.bits[slot >>> 5] |= 1 << (slot & 31);
  }

  private isSet(counter: number): boolean {
    const slot = counter % this.size;
    return (this.bits[slot >>> 5] & (1 << (slot & 31))) !== 0;
  }

  private clear(counter: number): void {
    const slot = counter % this.size;
    this.bits[slot >>> 5] &= ~(1 << (slot & 31));
  }
}

export interface SecureOpenerOptions {
  /** A datagram stamped further than this from the receiver's clock, either way, is refused. */
  maxAgeMs: number;
  /** Counters per sender epoch kept for replay detection (rounded up to a multiple of 32). */
  replayWindow: number;
}

/** Keeps insertion order as recency: `touch` moves a key to the end, the oldest is first. */
function touch<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_SESSIONS) map.delete(map.keys().next().value!);
}

/**
 * One receiver: authenticates, then refuses what is stale, replayed or outside the
 * replay window. Every refusal is a DatagramError whose reason is the metrics cause.
 * Nothing is remembered for a datagram that does not authenticate, so forged datagrams
 * cost CPU but cannot fill memory or move a window.
 */
export class SecureOpener {
  private keys = new Map<number, MulticastKey>();
  private readonly aesKeys = new Map<string, Buffer>();
  private readonly windows = new Map<string, ReplayWindow>();
  private maxAgeMs = 0;
  private windowSize = 0;

  constructor(keys: readonly MulticastKey[], options: SecureOpenerOptions) {
    this.setKeys(keys);
    this.setLimits(options);
  }

  /**
   * New limits on a running receiver (SIGHUP). The replay windows stay: dropping them
   * would make every datagram still within max-age acceptable once more. A new window
   * size applies to senders seen from now on.
   */
  setLimits(options: SecureOpenerOptions): void {
    this.maxAgeMs = options.maxAgeMs;
    this.windowSize = Math.max(32, Math.ceil(options.replayWindow / 32) * 32);
  }

  /** Replaces the accepted keys (rotation). Replay windows stay: they belong to senders, not keys. */
  setKeys(keys: readonly MulticastKey[]): void {
    this.keys = new Map(keys.map((k) => [k.id, k]));
    this.aesKeys.clear();
  }

  /** The plaintext (event text + MAGIC + padding) of an authentic, fresh, first-seen datagram. */
  open(buf: Buffer, now = Date.now()): Buffer {
    if (buf.length < SECURE_OVERHEAD_BYTES || !isSecureDatagram(buf)) throw new DatagramError('secure_malformed', `secure datagram of ${buf.length} bytes is shorter than its ${SECURE_OVERHEAD_BYTES}-byte header and tag`);
    if (buf[5] !== VERSION) throw new DatagramError('secure_malformed', `secure datagram version ${buf[5]} (this bridge reads ${VERSION})`);
    const key = this.keys.get(buf[6]);
    if (key === undefined) throw new DatagramError('unknown_key_id', `secure datagram under key id ${buf[6]}, which is not configured (secure-key / secure-accept-key)`);
    const header = buf.subarray(0, SECURE_HEADER_BYTES);
    const epoch = buf.subarray(8, 16);
    const counter = readUint64(buf, 16);
    const sentAt = readUint64(buf, 24);
    const session = epoch.toString('latin1');
    const cacheKey = `${key.id}:${session}`;
    const aesKey = this.aesKeys.get(cacheKey) ?? aeadKey(key, Buffer.from(epoch));
    let plaintext: Buffer;
    try {
      const decipher = createDecipheriv('aes-256-gcm', aesKey, nonceOf(counter), { authTagLength: TAG_BYTES });
      decipher.setAAD(header);
      decipher.setAuthTag(buf.subarray(buf.length - TAG_BYTES));
      plaintext = decipher.update(buf.subarray(SECURE_HEADER_BYTES, buf.length - TAG_BYTES));
      // GCM returns nothing from final(); it is where the tag is checked.
      decipher.final();
    } catch {
      throw new DatagramError('bad_tag', `secure datagram does not authenticate under key id ${key.id}: altered on the way, or another key with that id`);
    }
    // Authentic from here on: what follows may use its header.
    if (now - sentAt > this.maxAgeMs) throw new DatagramError('stale', `secure datagram sent ${now - sentAt} ms ago by the sender's clock (limit ${this.maxAgeMs} ms)`);
    if (sentAt - now > this.maxAgeMs) throw new DatagramError('from_future', `secure datagram stamped ${sentAt - now} ms ahead of this node's clock (limit ${this.maxAgeMs} ms)`);
    const window = this.windows.get(session) ?? new ReplayWindow(this.windowSize);
    const refusal = window.refusal(counter);
    if (refusal === 'replayed') throw new DatagramError('replayed', `secure datagram ${epoch.toString('hex')}:${counter} was already accepted`);
    if (refusal === 'outside_window') throw new DatagramError('outside_window', `secure datagram ${epoch.toString('hex')}:${counter} is older than the replay window of ${window.size}`);
    window.accept(counter);
    touch(this.windows, session, window);
    touch(this.aesKeys, cacheKey, aesKey);
    return plaintext;
  }
}
