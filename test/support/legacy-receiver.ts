/**
 * What mod_event_multicast (FreeSWITCH 1.10.12, process_packet() and its runtime loop)
 * does with one received datagram, step by step as its C source does it, so a test can
 * show what a legacy node makes of a datagram without running FreeSWITCH. Checked
 * against the real captures: every fixture datagram fires with its recorded headers.
 *
 * Read from src/mod/event_handlers/mod_event_multicast/mod_event_multicast.c:
 * - the runtime loop zeroes its buffer, receives, and calls process_packet only when
 *   the length is above SWITCH_UUID_FORMATTED_LENGTH (256);
 * - with a psk: len -= 256; tmp = malloc(len) zeroed; the IV is the first 8 bytes of
 *   uuid_str, a switch_copy_string of the first 256 bytes (it stops at a NUL, so the
 *   rest of that stack array is whatever was there); EVP bf-cbc decrypt of the rest;
 *   then `tmp[outl + tmplen] = 0`, where tmplen is not written when EVP_DecryptFinal
 *   fails (bad padding or length): the value a previous call left, 0-7 in practice;
 * - then strchr(packet, MAGIC[0]) on the NUL-terminated text: no 0xE2 before the first
 *   NUL is "Failed to validate inbound event packet", a 0xE2 not starting MAGIC is
 *   "missing the complete validation string"; otherwise the text before MAGIC is split
 *   into `Name: value` lines, each fired as `Orig-Name`.
 */
import { createDecipheriv } from 'node:crypto';
import { MAGIC } from '../../bridge/transports/multicast/codec.js';

export type LegacyOutcome =
  | { fired: false; why: 'silently_short' | 'no_validation_string' | 'incomplete_validation_string'; nulWriteInBounds: boolean }
  | { fired: true; headers: [string, string][]; nulWriteInBounds: boolean };

const HEADER_BYTES = 256;

export function legacyReceive(datagram: Buffer, psk: Buffer | null, staleTmplen = 7): LegacyOutcome {
  if (datagram.length <= HEADER_BYTES) return { fired: false, why: 'silently_short', nulWriteInBounds: true };
  let text: Buffer;
  let nulWriteInBounds = true;
  if (psk) {
    const len = datagram.length - HEADER_BYTES;
    const uuidStr = Buffer.alloc(HEADER_BYTES);
    const stop = datagram.indexOf(0);
    datagram.copy(uuidStr, 0, 0, Math.min(stop < 0 ? HEADER_BYTES - 1 : stop, HEADER_BYTES - 1));
    const decipher = createDecipheriv('bf-cbc', psk, uuidStr.subarray(0, 8));
    const updated = decipher.update(datagram.subarray(HEADER_BYTES));
    let tmplen = staleTmplen;
    let final = Buffer.alloc(0);
    try {
      final = decipher.final();
      tmplen = final.length;
    } catch {
      // EVP_DecryptFinal failed: tmplen keeps its stale value.
    }
    const tmp = Buffer.alloc(len);
    Buffer.concat([updated, final]).copy(tmp, 0, 0, len);
    const nulAt = updated.length + tmplen;
    nulWriteInBounds = nulAt < len;
    if (nulWriteInBounds) tmp[nulAt] = 0;
    text = tmp;
  } else {
    text = datagram;
  }
  const end = text.indexOf(0);
  const cString = end < 0 ? text : text.subarray(0, end);
  const m = cString.indexOf(MAGIC[0]);
  if (m < 0) return { fired: false, why: 'no_validation_string', nulWriteInBounds };
  if (!cString.subarray(m, m + MAGIC.length).equals(MAGIC)) return { fired: false, why: 'incomplete_validation_string', nulWriteInBounds };
  const headers: [string, string][] = [];
  for (const line of cString.subarray(0, m).toString('latin1').split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) break;
    // Values stay URL-encoded here: switch_url_decode is not what these tests look at.
    headers.push([`Orig-${line.slice(0, colon)}`, line.slice(colon + 1).replace(/^ +/, '')]);
  }
  return { fired: true, headers, nulWriteInBounds };
}
