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
const BLANK_LINE = Buffer.from('\n\n');

/**
 * Parse a plain-serialized event. Accepts a Buffer (the ESL frame body or a decoded
 * datagram) so the body length is counted in bytes, as FreeSWITCH counts it.
 *
 * The header block is decoded to one string and cut with string indexOf: one
 * Buffer-to-string conversion per event instead of one per header line, which
 * was most of the cost (test/bench/esl-parse.ts).
 */
export function parsePlain(data: Buffer | string, start = 0, end?: number): FsEvent {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const stop = end ?? buf.length;
  // The header block ends at the first blank line: a leading LF, or the first LF LF.
  let textEnd = stop;
  let bodyStart = stop;
  if (start < stop && buf[start] === 10) {
    textEnd = start;
    bodyStart = start + 1;
  } else {
    const blank = buf.indexOf(BLANK_LINE, start);
    if (blank >= 0 && blank + 1 < stop) {
      textEnd = blank + 1;
      bodyStart = blank + 2;
    }
  }
  const text = buf.toString('utf8', start, textEnd);
  const headers: Header[] = [];
  let bodyLength = -1;
  /** Where the header lines end in `text` (before a final Content-Length line); -1 when they cannot be reused as they are. */
  let linesEnd = text.length > 0 && text.charCodeAt(text.length - 1) === 10 ? text.length : -1;
  let pos = 0;
  while (pos < text.length) {
    const lineStart = pos;
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = text.length;
    const colon = text.indexOf(': ', pos);
    if (colon <= pos || colon >= eol) throw new ParseError(`malformed header line ${JSON.stringify(text.slice(pos, Math.min(eol, pos + 80)))}`);
    const name = text.slice(pos, colon);
    const raw = text.slice(colon + 2, eol);
    pos = eol + 1;
    if (name === CONTENT_LENGTH) {
      const n = Number(raw);
      if (!Number.isSafeInteger(n) || n < 0) throw new ParseError(`bad Content-Length ${JSON.stringify(raw)}`);
      bodyLength = n;
      // serializePlain writes Content-Length after every header: only then are the lines before it the headers' own.
      linesEnd = pos >= text.length && linesEnd >= 0 ? lineStart : -1;
      continue;
    }
    headers.push([name, urlDecode(raw)]);
  }
  let body: string | null = null;
  if (bodyLength >= 0) {
    if (bodyStart + bodyLength > stop) {
      throw new ParseError(`body of ${bodyLength} bytes truncated to ${stop - bodyStart}`);
    }
    body = buf.toString('utf8', bodyStart, bodyStart + bodyLength);
  }
  const event = new FsEvent(headers, body);
  if (linesEnd >= 0) event.rememberPlainHeaders(linesEnd === text.length ? text : text.slice(0, linesEnd));
  return event;
}
