import { isAscii } from 'node:buffer';
import { FsEvent } from './event.js';
import { urlEncode } from './url-encoding.js';
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
const LF = 10;
const SPACE = 32;
/** Line offsets of the event being parsed; each event keeps an exact-size copy (one allocation, not a growing array). */
const scratchLines: number[] = [];

/**
 * Parse a plain-serialized event. Accepts a Buffer (the ESL frame body or a decoded
 * datagram) so the body length is counted in bytes, as FreeSWITCH counts it.
 *
 * Every line is checked here (so nothing that decodes later can fail), but names and
 * values are not cut out until something asks for them (FsEvent.fromPlain): the
 * forwarding path reads a few routing headers and sends the bytes themselves. The
 * bytes are read as one Latin-1 string, one char per byte, so offsets found in the
 * string are byte offsets as well; the search is string indexOf, two per line, which
 * is most of what remains (test/bench/esl-parse.ts, docs/benchmarks.md).
 */
export function parsePlain(data: Buffer | string, start = 0, end?: number): FsEvent {
  const whole = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const stop = end ?? whole.length;
  const bytes = start === 0 && stop === whole.length ? whole : whole.subarray(start, stop);
  let text = bytes.toString('latin1');
  const length = text.length;
  let count = 0;
  let bodyLength = -1;
  /** Where the header lines end (before a final Content-Length line); -1 when they cannot be reused as they are. */
  let linesEnd = -1;
  let pos = 0;
  let blockEnd = length;
  let bodyStart = length;
  while (pos < length) {
    if (text.charCodeAt(pos) === LF) {
      blockEnd = pos;
      bodyStart = pos + 1;
      break;
    }
    const lineStart = pos;
    let eol = text.indexOf('\n', pos);
    if (eol < 0) eol = length;
    // A search for ':' alone, then a check for the space, is quicker than one for ': ' (measured).
    let colon = text.indexOf(':', pos);
    while (colon >= 0 && colon < eol && text.charCodeAt(colon + 1) !== SPACE) colon = text.indexOf(':', colon + 1);
    if (colon <= pos || colon >= eol) throw new ParseError(`malformed header line ${JSON.stringify(bytes.toString('utf8', pos, Math.min(eol, pos + 80)))}`);
    pos = eol + 1;
    if (colon - lineStart === CONTENT_LENGTH.length && text.startsWith(CONTENT_LENGTH, lineStart)) {
      const raw = text.slice(colon + 2, eol);
      const n = Number(raw);
      if (!Number.isSafeInteger(n) || n < 0) throw new ParseError(`bad Content-Length ${JSON.stringify(raw)}`);
      bodyLength = n;
      // serializePlain writes Content-Length after every header: only then are the lines before it the headers' own.
      linesEnd = linesEnd !== -2 && eol < length && (pos >= length || text.charCodeAt(pos) === LF) ? lineStart : -2;
      continue;
    }
    scratchLines[count++] = lineStart;
    scratchLines[count++] = colon;
    scratchLines[count++] = eol;
  }
  const lines = scratchLines.slice(0, count);
  // A huge header block must not pin its offsets' memory after it is parsed.
  if (count > 3 * 4096) scratchLines.length = 0;
  // Lines end in LF up to the block's end (or the Content-Length line): only then can they be sent on as they are.
  if (linesEnd === -1) linesEnd = blockEnd > 0 && text.charCodeAt(blockEnd - 1) === LF ? blockEnd : -1;
  else if (linesEnd === -2) linesEnd = -1;
  if (bodyLength >= 0 && bodyStart + bodyLength > length) {
    throw new ParseError(`body of ${bodyLength} bytes truncated to ${length - bodyStart}`);
  }
  const ascii = isAscii(bytes) || isAscii(bytes.subarray(0, blockEnd));
  // A large body need not stay resident as Latin-1 text: keep only the header block's.
  if (length - blockEnd > 1024) text = bytes.toString('latin1', 0, blockEnd);
  const tailEnd = bodyLength >= 0 ? bodyStart + bodyLength : bodyStart;
  const canonical = linesEnd >= 0 && tailEnd === length && (bodyLength > 0 || (bodyLength < 0 && blockEnd === linesEnd && bodyStart === length && bodyStart > blockEnd)) && canonicalLength(text, linesEnd, bodyLength);
  return FsEvent.fromPlain({ bytes, text, ascii, lines, linesEnd, bodyStart: bodyLength >= 0 ? bodyStart : -1, bodyLength, canonical });
}

/** Whether the Content-Length line (if any) reads exactly as serializePlain writes it. */
function canonicalLength(text: string, linesEnd: number, bodyLength: number): boolean {
  if (bodyLength < 0) return true;
  const line = `${CONTENT_LENGTH}: ${bodyLength}\n\n`;
  return text.startsWith(line, linesEnd);
}
