import { FrameTooLargeError, ParseError } from '../errors.js';

/** ESL Content-Type values the bridge handles. */
export const ContentType = {
  AuthRequest: 'auth/request',
  CommandReply: 'command/reply',
  ApiResponse: 'api/response',
  EventPlain: 'text/event-plain',
  EventJson: 'text/event-json',
  EventXml: 'text/event-xml',
  DisconnectNotice: 'text/disconnect-notice',
  RudeRejection: 'text/rude-rejection',
} as const;
export type ContentType = (typeof ContentType)[keyof typeof ContentType];

export interface EslFrame {
  /** Outer frame headers as sent (ESL does not URL-encode these). */
  readonly headers: Record<string, string>;
  /** The Content-Length bytes, or null for a header-only frame. */
  readonly body: Buffer | null;
}

export interface FrameParserOptions {
  /** Largest body accepted; a bigger Content-Length is a protocol error. */
  maxFrameBytes?: number;
  /** Largest header block accepted before its terminating blank line. */
  maxHeaderBytes?: number;
}

const NEWLINE = 10;

/**
 * Incremental ESL framing: `push(chunk)` in, complete frames out. It never touches a
 * socket, so it is tested byte by byte and at every split offset of real captures.
 *
 * Written by hand: modesl and drachtio-modesl re-scan the whole buffer on every
 * read, which makes their cost grow with event size (docs/decisions.md has the
 * measurements). Here a body is copied at most once, when it is complete, and a
 * header search resumes where the previous one stopped.
 */
export class EslFrameParser {
  private chunks: Buffer[] = [];
  private size = 0;
  private scanFrom = 0;
  private pendingHeaders: Record<string, string> | null = null;
  private bodyLength = 0;
  private readonly maxFrameBytes: number;
  private readonly maxHeaderBytes: number;

  constructor(options: FrameParserOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? 16 * 1024 * 1024;
    this.maxHeaderBytes = options.maxHeaderBytes ?? 64 * 1024;
  }

  /** Bytes received but not yet returned as a frame. */
  get buffered(): number {
    return this.size;
  }

  push(chunk: Buffer): EslFrame[] {
    const frames: EslFrame[] = [];
    if (chunk.length === 0) return frames;
    this.chunks.push(chunk);
    this.size += chunk.length;
    for (;;) {
      if (this.pendingHeaders === null) {
        const frame = this.readHeaders();
        if (frame === undefined) break;
        if (frame !== null) frames.push(frame);
      } else {
        if (this.size < this.bodyLength) break;
        frames.push({ headers: this.pendingHeaders, body: this.take(this.bodyLength) });
        this.pendingHeaders = null;
      }
    }
    return frames;
  }

  /** Drop everything buffered, e.g. after the connection closed mid-frame. */
  reset(): void {
    this.chunks = [];
    this.size = 0;
    this.scanFrom = 0;
    this.pendingHeaders = null;
    this.bodyLength = 0;
  }

  /** A complete header-only frame, null when the headers announced a body, undefined when more bytes are needed. */
  private readHeaders(): EslFrame | null | undefined {
    if (this.size === 0) return undefined;
    let buf = this.flatten();
    // Stray blank lines between frames carry nothing.
    let skip = 0;
    while (skip < buf.length && buf[skip] === NEWLINE) skip++;
    if (skip > 0) {
      this.consume(skip);
      if (this.size === 0) return undefined;
      buf = this.flatten();
    }
    let end = -1;
    for (let i = Math.max(this.scanFrom, 1); i < buf.length; i++) {
      i = buf.indexOf(NEWLINE, i);
      if (i < 0) break;
      if (buf[i - 1] === NEWLINE) {
        end = i - 1;
        break;
      }
    }
    if (end < 0) {
      if (buf.length > this.maxHeaderBytes) throw new FrameTooLargeError(buf.length, this.maxHeaderBytes);
      this.scanFrom = buf.length;
      return undefined;
    }
    const headers = parseFrameHeaders(buf.toString('utf8', 0, end));
    this.consume(end + 2);
    const lengthText = headers['Content-Length'];
    if (lengthText === undefined) return { headers, body: null };
    const length = Number(lengthText);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new ParseError(`bad Content-Length ${JSON.stringify(lengthText)}`);
    }
    if (length > this.maxFrameBytes) throw new FrameTooLargeError(length, this.maxFrameBytes);
    if (length === 0) return { headers, body: Buffer.alloc(0) };
    this.pendingHeaders = headers;
    this.bodyLength = length;
    return null;
  }

  /**
   * Remove and return the first n buffered bytes. Copies only a body that straddles
   * reads, not the whole read behind it (flatten would copy 64 KB per read).
   */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0];
        const part = Math.min(chunk.length, n - filled);
        chunk.copy(out, filled, 0, part);
        filled += part;
        if (part === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(part);
      }
    }
    this.size -= n;
    this.scanFrom = 0;
    return out;
  }

  private flatten(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.size)];
    return this.chunks[0];
  }

  private consume(n: number): void {
    const buf = this.flatten();
    this.size -= n;
    this.scanFrom = 0;
    this.chunks = this.size === 0 ? [] : [buf.subarray(n)];
  }
}

function parseFrameHeaders(block: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of block.split('\n')) {
    const colon = line.indexOf(': ');
    if (colon <= 0) throw new ParseError(`malformed ESL header line ${JSON.stringify(line.slice(0, 80))}`);
    headers[line.slice(0, colon)] = line.slice(colon + 2);
  }
  return headers;
}
