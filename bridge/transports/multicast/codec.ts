import { randomUUID } from 'node:crypto';
import { FsEvent, type Header } from '../../event/event.js';
import { parsePlain, serializePlainHeaders, serializePlainTail } from '../../event/plain.js';
import { urlEncode } from '../../event/url-encoding.js';
import { DatagramError, ParseError } from '../../errors.js';
import { blowfishDecryptor, blowfishEncryptor } from './blowfish.js';
import { isSecureDatagram, SECURE_OVERHEAD_BYTES, securePadding, type SecureOpener, type SecureSealer } from './secure.js';

/**
 * mod_event_multicast's datagram format, pure (no sockets), both directions.
 *
 *   plain:  text + MAGIC + 272 NULs
 *   psk:    36-char ASCII UUID + 220 NULs, then Blowfish-CBC(text + MAGIC), PKCS#7 padded
 *   secure: bridges only, AES-256-GCM(text + MAGIC + NULs) with a 32-byte header (secure.ts)
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

export type DatagramMode = 'plain' | 'psk' | 'secure';

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
  // Before the size rule: a secure datagram may be short, and its cause should say what it is.
  if (isSecureDatagram(buf)) throw new DatagramError('secure_without_key', 'secure (AES-256-GCM) datagram, but this node has no multicast secure-key');
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
 * A secure datagram (secure.ts): authenticated, fresh and first seen, or a
 * DatagramError whose reason says why not. What it carries is a plain datagram's body.
 */
export function decodeSecureDatagram(buf: Buffer, opener: SecureOpener, maxBytes = MAX_DATAGRAM_BYTES): DecodedDatagram {
  if (buf.length > maxBytes) throw new DatagramError('too_large', `datagram of ${buf.length} bytes exceeds ${maxBytes}`);
  if (!isSecureDatagram(buf)) throw new DatagramError('not_secure', `${buf.indexOf(MAGIC) >= 0 ? 'plaintext' : 'non-secure'} datagram while secure-key is set: not authenticated, not accepted`);
  return { mode: 'secure', event: parseText(opener.open(buf)) };
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
  const parts = eventText(event, sender, options);
  const maxBytes = options.maxBytes ?? MAX_DATAGRAM_BYTES;
  let datagram: Buffer;
  if (psk === null) {
    const textBytes = partsLength(parts);
    datagram = Buffer.allocUnsafe(textBytes + MAGIC.length + PLAIN_TRAILER_NULS);
    putParts(datagram, parts);
    MAGIC.copy(datagram, textBytes);
    PLAIN_TRAILER.copy(datagram, textBytes + MAGIC.length);
  } else {
    const header = Buffer.alloc(PSK_HEADER_BYTES);
    header.write(randomUUID(), 0, 'latin1');
    const cipher = blowfishEncryptor(psk, header.subarray(0, IV_BYTES));
    const update = (part: Buffer | string) => (typeof part === 'string' ? cipher.update(part, 'utf8') : cipher.update(part));
    datagram = Buffer.concat([header, ...parts.map(update), cipher.update(MAGIC), cipher.final()]);
  }
  if (datagram.length > maxBytes) throw new DatagramError('too_large', `event needs a datagram of ${datagram.length} bytes, more than ${maxBytes}`);
  return datagram;
}

type TextPart = Buffer | string;

/**
 * The event as the legacy module serializes it, with Multicast-Sender last (after
 * `extraHeaders`): own headers, trailer, body. An event straight from ESL still has the
 * bytes FreeSWITCH serialized: those are sent, not a re-encoding.
 */
function eventText(event: FsEvent, sender: string, options: EncodeOptions): TextPart[] {
  const own = event.has(SENDER_HEADER) ? withoutSender(event) : event;
  const trailer = serializePlainHeaders(new FsEvent([...(options.extraHeaders ?? []), [SENDER_HEADER, sender]]));
  const ownHeaders: TextPart = own.plainHeaderBytes ?? serializePlainHeaders(own);
  const whole = own.plainBytes;
  const tail: TextPart = whole !== null && typeof ownHeaders !== 'string' ? whole.subarray(ownHeaders.length) : serializePlainTail(event.body);
  return [ownHeaders, trailer, tail];
}

function partsLength(parts: readonly TextPart[]): number {
  let bytes = 0;
  for (const part of parts) bytes += typeof part === 'string' ? Buffer.byteLength(part, 'utf8') : part.length;
  return bytes;
}

/** Writes the parts one after the other from offset 0; returns where they end. */
function putParts(target: Buffer, parts: readonly TextPart[]): number {
  let at = 0;
  for (const part of parts) at += typeof part === 'string' ? target.write(part, at, 'utf8') : part.copy(target, at);
  return at;
}

/**
 * One secure datagram (secure.ts): the event text and MAGIC, as in a plain datagram,
 * padded with NULs to a multiple of 8 bytes, sealed. Legacy nodes drop it (see secure.ts).
 */
export function encodeSecureDatagram(event: FsEvent, sender: string, sealer: SecureSealer, options: EncodeOptions = {}): Buffer {
  const parts = eventText(event, sender, options);
  const textBytes = partsLength(parts);
  const length = textBytes + MAGIC.length;
  const plaintextBytes = length + securePadding(length);
  const maxBytes = options.maxBytes ?? MAX_DATAGRAM_BYTES;
  // Checked before sealing, so a refused event uses no counter value.
  if (plaintextBytes + SECURE_OVERHEAD_BYTES > maxBytes) {
    throw new DatagramError('too_large', `event needs a datagram of ${plaintextBytes + SECURE_OVERHEAD_BYTES} bytes, more than ${maxBytes}`);
  }
  const plaintext = Buffer.alloc(plaintextBytes);
  putParts(plaintext, parts);
  MAGIC.copy(plaintext, textBytes);
  return sealer.seal(plaintext);
}

function withoutSender(event: FsEvent): FsEvent {
  const copy = event.clone();
  copy.delete(SENDER_HEADER);
  return copy;
}
