import { randomUUID } from 'node:crypto';
import { FsEvent, type Header } from '../../event/event.js';
import { parsePlain, serializePlainHeaders, serializePlainTail } from '../../event/plain.js';
import { urlEncode } from '../../event/url-encoding.js';
import { DatagramError, ParseError } from '../../errors.js';
import { blowfishDecryptor, blowfishEncryptor } from './blowfish.js';

/**
 * mod_event_multicast's datagram format, pure (no sockets), both directions.
 *
 *   plain: text + MAGIC + 272 NULs
 *   psk:   36-char ASCII UUID + 220 NULs, then Blowfish-CBC(text + MAGIC), PKCS#7 padded
 *
 * `text` is the FreeSWITCH plain serialization with `Multicast-Sender` as the last
 * header. See docs/freeswitch.md §1.
 */

/** The 21-byte validation string the legacy module appends to every event. */
export const MAGIC = Buffer.from([226, 132, 177, 197, 152, 198, 142, 211, 172, 197, 158, 208, 169, 208, 135, 197, 166, 207, 154, 196, 166]);
/** SWITCH_UUID_FORMATTED_LENGTH: the psk header size, and the size at or below which legacy receivers drop a datagram. */
export const PSK_HEADER_BYTES = 256;
const UUID_CHARS = 36;
const IV_BYTES = 8;
/**
 * Legacy OpenSSL builds size the send buffer as text + 256 + EVP_MAX_IV_LENGTH (16) + MAGIC
 * even in plain mode, so every plain datagram carries 272 NULs after MAGIC. We send the
 * same so a legacy receiver (which drops anything of 256 bytes or less) never drops ours.
 */
export const PLAIN_TRAILER_NULS = 272;
/** Largest UDP payload over IPv4. */
export const MAX_DATAGRAM_BYTES = 65_507;
export const SENDER_HEADER = 'Multicast-Sender';
/**
 * Per-sender datagram counter our sink adds (`<stream id>:<n>`; the stream id is random
 * per sink instance, so a bridge restart starts a new stream). Legacy receivers just see
 * one more `Orig-` header; our receiver counts exact loss from its gaps.
 */
export const SEQ_HEADER = 'FSB-Multicast-Seq';

export type DatagramMode = 'plain' | 'psk';

export interface DecodedDatagram {
  mode: DatagramMode;
  /** Every header in packet order, URL-decoded, Multicast-Sender included. */
  event: FsEvent;
}

const BLANK_LINE = Buffer.from('\n\n');
const CONTENT_LENGTH_PREFIX = Buffer.from('Content-Length: ');
const PLAIN_TRAILER = Buffer.alloc(PLAIN_TRAILER_NULS);

export function decodeDatagram(buf: Buffer, psk: Buffer | null, maxBytes = MAX_DATAGRAM_BYTES): DecodedDatagram {
  if (buf.length > maxBytes) throw new DatagramError('too_large', `datagram of ${buf.length} bytes exceeds ${maxBytes}`);
  if (buf.length <= PSK_HEADER_BYTES) throw new DatagramError('too_short', `datagram of ${buf.length} bytes (legacy nodes send more than ${PSK_HEADER_BYTES})`);
  if (psk === null) {
    if (looksEncrypted(buf)) throw new DatagramError('no_magic', 'datagram has a psk header but no psk is configured');
    return { mode: 'plain', event: parseText(buf) };
  }
  if (!hasUuidHeader(buf)) {
    if (buf.indexOf(MAGIC) >= 0) throw new DatagramError('plaintext_with_psk', 'plaintext datagram while a psk is configured');
    throw new DatagramError('malformed', 'datagram does not start with a psk header (UUID)');
  }
  const ciphertext = buf.subarray(PSK_HEADER_BYTES);
  if (ciphertext.length % IV_BYTES !== 0) {
    throw new DatagramError('malformed', `ciphertext of ${ciphertext.length} bytes is not a whole number of Blowfish blocks`);
  }
  let plaintext: Buffer;
  try {
    const decipher = blowfishDecryptor(psk, buf.subarray(0, IV_BYTES));
    plaintext = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch (cause) {
    throw new DatagramError('bad_psk', `datagram does not decrypt with the configured psk (${(cause as Error).message})`);
  }
  if (plaintext.indexOf(MAGIC) < 0) throw new DatagramError('bad_psk', 'decrypted datagram has no MAGIC: wrong psk');
  return { mode: 'psk', event: parseText(plaintext) };
}

/**
 * Locate the event text by its own framing (header block, then Content-Length bytes of
 * body) and require MAGIC right after it. The legacy receiver instead stops at the first
 * 0xE2 byte and breaks headers on any ':' in the body; reading by length is what lets
 * any body, even one containing MAGIC, round-trip exactly.
 */
function parseText(data: Buffer): FsEvent {
  const blank = data.indexOf(BLANK_LINE);
  if (blank <= 0) throw missingText(data, 'no header block');
  let textEnd = blank + 2;
  const lastLine = data.lastIndexOf(10, blank - 1) + 1;
  if (data.subarray(lastLine, lastLine + CONTENT_LENGTH_PREFIX.length).equals(CONTENT_LENGTH_PREFIX)) {
    const length = Number(data.toString('latin1', lastLine + CONTENT_LENGTH_PREFIX.length, blank));
    if (!Number.isSafeInteger(length) || length < 0) throw new DatagramError('malformed', 'bad Content-Length');
    textEnd += length;
  }
  if (textEnd + MAGIC.length > data.length || data.compare(MAGIC, 0, MAGIC.length, textEnd, textEnd + MAGIC.length) !== 0) {
    throw missingText(data, 'MAGIC does not follow the event text');
  }
  let event: FsEvent;
  try {
    event = parsePlain(data, 0, textEnd);
  } catch (cause) {
    if (cause instanceof ParseError) throw new DatagramError('malformed', cause.message);
    throw cause;
  }
  if (event.name === '') throw new DatagramError('malformed', 'event has no Event-Name');
  return event;
}

function missingText(data: Buffer, problem: string): DatagramError {
  return data.indexOf(MAGIC) < 0 ? new DatagramError('no_magic', 'datagram has no MAGIC') : new DatagramError('malformed', problem);
}

/** The bytes isOwnPlainDatagram looks for: the sender line encodeDatagram writes for `sender`. */
export function senderLine(sender: string): Buffer {
  return Buffer.from(`\n${SENDER_HEADER}: ${urlEncode(sender)}\n`, 'utf8');
}

/**
 * True when a plain datagram's last header (before any Content-Length) is `line`, the
 * place encodeDatagram writes Multicast-Sender. Lets a receiver skip its own looped-back
 * datagrams with one byte search instead of a full decode (about 10 µs each for the
 * benchmark's 3.7 KB events). A false answer decides nothing: decode as usual.
 *
 * Self-contained (literals inline, no module constants): the receiver worker runs it
 * from its source text, so our own datagrams are dropped before they are copied.
 */
export function isOwnPlainDatagram(buf: Uint8Array, line: Uint8Array): boolean {
  const data = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const blank = data.indexOf('\n\n', 0, 'latin1');
  if (blank <= 0) return false;
  let end = blank + 1;
  const lastLine = data.lastIndexOf(10, blank - 1) + 1;
  if (data.toString('latin1', lastLine, Math.min(blank, lastLine + 16)) === 'Content-Length: ') end = lastLine;
  return end >= line.length && data.compare(line, 0, line.length, end - line.length, end) === 0;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

function hasUuidHeader(buf: Buffer): boolean {
  for (let i = 0; i < UUID_CHARS; i++) {
    const c = buf[i];
    if (i === 8 || i === 13 || i === 18 || i === 23 ? c !== 45 : !isHex(c)) return false;
  }
  return true;
}

function looksEncrypted(buf: Buffer): boolean {
  return hasUuidHeader(buf) && buf[UUID_CHARS] === 0 && buf.indexOf(MAGIC) < 0;
}

export interface EncodeOptions {
  /** Headers written after the event's own and before Multicast-Sender (e.g. the bridge's datagram counter). */
  extraHeaders?: readonly Header[];
  maxBytes?: number;
}

/**
 * One datagram a legacy node accepts. An existing Multicast-Sender header is replaced
 * by ours, written last as the legacy module does, so re-encoding a received datagram
 * with the same sender reproduces it byte for byte.
 */
export function encodeDatagram(event: FsEvent, sender: string, psk: Buffer | null, options: EncodeOptions = {}): Buffer {
  const own = event.has(SENDER_HEADER) ? withoutSender(event) : event;
  const trailer = serializePlainHeaders(new FsEvent([...(options.extraHeaders ?? []), [SENDER_HEADER, sender]]));
  // An event straight from ESL still has the bytes FreeSWITCH serialized: send them, not a re-encoding.
  const ownHeaders: Buffer | string = own.plainHeaderBytes ?? serializePlainHeaders(own);
  const whole = own.plainBytes;
  const tail: Buffer | string = whole !== null && typeof ownHeaders !== 'string' ? whole.subarray(ownHeaders.length) : serializePlainTail(event.body);
  const maxBytes = options.maxBytes ?? MAX_DATAGRAM_BYTES;
  let datagram: Buffer;
  if (psk === null) {
    const headerBytes = byteLength(ownHeaders);
    const trailerBytes = Buffer.byteLength(trailer, 'utf8');
    const textBytes = headerBytes + trailerBytes + byteLength(tail);
    datagram = Buffer.allocUnsafe(textBytes + MAGIC.length + PLAIN_TRAILER_NULS);
    put(datagram, ownHeaders, 0);
    datagram.write(trailer, headerBytes, 'utf8');
    put(datagram, tail, headerBytes + trailerBytes);
    MAGIC.copy(datagram, textBytes);
    PLAIN_TRAILER.copy(datagram, textBytes + MAGIC.length);
  } else {
    const header = Buffer.alloc(PSK_HEADER_BYTES);
    header.write(randomUUID(), 0, 'latin1');
    const cipher = blowfishEncryptor(psk, header.subarray(0, IV_BYTES));
    const update = (part: Buffer | string) => (typeof part === 'string' ? cipher.update(part, 'utf8') : cipher.update(part));
    datagram = Buffer.concat([header, update(ownHeaders), update(trailer), update(tail), cipher.update(MAGIC), cipher.final()]);
  }
  if (datagram.length > maxBytes) throw new DatagramError('too_large', `event needs a datagram of ${datagram.length} bytes, more than ${maxBytes}`);
  return datagram;
}

function byteLength(part: Buffer | string): number {
  return typeof part === 'string' ? Buffer.byteLength(part, 'utf8') : part.length;
}

function put(target: Buffer, part: Buffer | string, at: number): void {
  if (typeof part === 'string') target.write(part, at, 'utf8');
  else part.copy(target, at);
}

function withoutSender(event: FsEvent): FsEvent {
  const copy = event.clone();
  copy.delete(SENDER_HEADER);
  return copy;
}
