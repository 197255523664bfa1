/**
 * FreeSWITCH's header value escaping (switch_url_encode with SWITCH_URL_UNSAFE).
 *
 * Hand-written rather than encodeURIComponent because FreeSWITCH escapes a different
 * set: it leaves `/ , ( ) ! * ' $` and `~` alone and escapes `: @ + = ; & ? # %` and
 * every byte outside 0x20..0x7E, one %XX per UTF-8 byte, upper-case hex.
 *
 * One deliberate difference: FreeSWITCH does not re-escape a `%` that already starts
 * a `%XX` sequence, so a literal "%41" comes out of it as "A". We always escape `%`,
 * so every value survives a round trip through our serializer.
 */
const UNSAFE = '\r\n #%&+:;<=>?@[\\]^`{|}"';
const HEX = '0123456789ABCDEF';

const SAFE_ASCII: boolean[] = [];
for (let c = 0; c < 128; c++) SAFE_ASCII[c] = c >= 0x20 && c <= 0x7e && !UNSAFE.includes(String.fromCharCode(c));

export function urlEncode(value: string): string {
  let i = 0;
  const len = value.length;
  while (i < len) {
    const c = value.charCodeAt(i);
    if (c >= 128 || !SAFE_ASCII[c]) break;
    i++;
  }
  if (i === len) return value;
  let out = value.slice(0, i);
  for (; i < len; i++) {
    const c = value.charCodeAt(i);
    if (c < 128) {
      out += SAFE_ASCII[c] ? value[i] : '%' + HEX[c >> 4] + HEX[c & 15];
      continue;
    }
    // Encode the whole non-ASCII code point as UTF-8 bytes.
    const cp = value.codePointAt(i)!;
    const ch = String.fromCodePoint(cp);
    for (const b of Buffer.from(ch, 'utf8')) out += '%' + HEX[b >> 4] + HEX[b & 15];
    if (cp > 0xffff) i++;
  }
  return out;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Decoded bytes of one value; a value longer than this decodes through the general path. */
const scratch = Buffer.allocUnsafe(16 * 1024);

/**
 * Inverse of urlEncode; like switch_url_decode it leaves `+` alone and only decodes %XX.
 * %XX runs that are not UTF-8 (a Latin-1 display name: `caf%E9`) become U+FFFD.
 *
 * Values in FreeSWITCH's plain format are ASCII, so the common case writes the decoded
 * bytes into one scratch buffer and reads them back as one string: about a quarter of
 * the instructions of building the string piece by piece, which is what a full decode
 * of an event mostly spent (test/bench/esl-parse.ts).
 */
export function urlDecode(value: string): string {
  const first = value.indexOf('%');
  if (first < 0) return value;
  const len = value.length;
  if (len > scratch.length) return urlDecodeGeneral(value, first);
  let n = 0;
  let wide = false;
  for (let i = 0; i < len; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128) return urlDecodeGeneral(value, first);
    if (c === 37 && i + 2 < len) {
      const hi = hexVal(value.charCodeAt(i + 1));
      const lo = hexVal(value.charCodeAt(i + 2));
      if (hi >= 0 && lo >= 0) {
        const b = (hi << 4) | lo;
        if (b >= 128) wide = true;
        scratch[n++] = b;
        i += 2;
        continue;
      }
    }
    scratch[n++] = c;
  }
  return scratch.toString(wide ? 'utf8' : 'latin1', 0, n);
}

/** Any string, including non-ASCII text that is kept as it is (lone surrogates too). */
function urlDecodeGeneral(value: string, first: number): string {
  let i = first;
  let out = value.slice(0, i);
  const len = value.length;
  while (i < len) {
    const c = value.charCodeAt(i);
    if (c !== 37) {
      const next = value.indexOf('%', i);
      const end = next < 0 ? len : next;
      out += value.slice(i, end);
      i = end;
      continue;
    }
    let bytes: number[] | null = null;
    let ascii = '';
    let wide = false;
    while (i + 2 < len && value.charCodeAt(i) === 37) {
      const hi = hexVal(value.charCodeAt(i + 1));
      const lo = hexVal(value.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) break;
      const b = (hi << 4) | lo;
      if (b >= 128) wide = true;
      (bytes ??= []).push(b);
      if (!wide) ascii += String.fromCharCode(b);
      i += 3;
    }
    if (bytes === null) {
      out += '%';
      i++;
    } else {
      out += wide ? Buffer.from(bytes).toString('utf8') : ascii;
    }
  }
  return out;
}
