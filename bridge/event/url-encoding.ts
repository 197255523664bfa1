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

/** Inverse of urlEncode; like switch_url_decode it leaves `+` alone and only decodes %XX. */
export function urlDecode(value: string): string {
  let i = value.indexOf('%');
  if (i < 0) return value;
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
