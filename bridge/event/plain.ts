import { FsEvent, type Header } from './event.js';
import { urlDecode, urlEncode } from './url-encoding.js';
import { ParseError } from '../errors.js';

/**
 * FreeSWITCH's "plain" serialization (switch_event_serialize with encode=true):
 * one `Name: url-encoded-value\n` per header, then either `Content-Length: N\n\n<body>`
 * or a lone `\n`. Empty values are written as `_undef_`, as FreeSWITCH does.
 */
export function serializePlainHeaders(event: FsEvent): string {
  let out = '';
  for (const [name, value] of event.headers) {
    out += name + ': ' + (value === '' ? '_undef_' : urlEncode(value)) + '\n';
  }
  return out;
}

/** The part after the headers: body framing or the lone blank line. */
export function serializePlainTail(body: string | null): string {
  if (body === null || body === '') return '\n';
  return `Content-Length: ${Buffer.byteLength(body, 'utf8')}\n\n${body}`;
}

export function serializePlain(event: FsEvent): string {
  return serializePlainHeaders(event) + serializePlainTail(event.body);
}

const CONTENT_LENGTH = 'Content-Length';

/**
 * Parse a plain-serialized event. Accepts a Buffer (the ESL frame body or a decoded
 * datagram) so the body length is counted in bytes, as FreeSWITCH counts it.
 */
export function parsePlain(data: Buffer | string, start = 0, end?: number): FsEvent {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const stop = end ?? buf.length;
  const headers: Header[] = [];
  let bodyLength = -1;
  let pos = start;
  while (pos < stop) {
    let eol = buf.indexOf(10, pos);
    if (eol < 0 || eol >= stop) eol = stop;
    if (eol === pos) {
      pos++;
      break; // blank line: end of the header block
    }
    const line = buf.toString('utf8', pos, eol);
    pos = eol + 1;
    const colon = line.indexOf(': ');
    if (colon <= 0) throw new ParseError(`malformed header line ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon);
    const raw = line.slice(colon + 2);
    if (name === CONTENT_LENGTH) {
      const n = Number(raw);
      if (!Number.isSafeInteger(n) || n < 0) throw new ParseError(`bad Content-Length ${JSON.stringify(raw)}`);
      bodyLength = n;
      continue;
    }
    headers.push([name, urlDecode(raw)]);
  }
  let body: string | null = null;
  if (bodyLength >= 0) {
    if (pos + bodyLength > stop) {
      throw new ParseError(`body of ${bodyLength} bytes truncated to ${stop - pos}`);
    }
    body = buf.toString('utf8', pos, pos + bodyLength);
  }
  return new FsEvent(headers, body);
}
