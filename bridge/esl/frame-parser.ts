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
const BLANK_LINE = Buffer.from('\n\n');

/**
 * Incremental ESL framing: `push(chunk)` in, complete frames out. It never touches a
 * socket, so it is tested byte by byte and at every split offset of real captures.
 *
 * Written by hand: modesl and drachtio-modesl re-scan the whole buffer on every
 * read, which makes their cost grow with event size (docs/decisions.md has the
 * measurements). Here a body is copied only when it straddles reads, a read is never
 * re-sliced per frame (an offset moves along it), and a header search resumes where
 * the previous one stopped.
 */
export class EslFrameParser {
  /** Unconsumed input; `offset` bytes of the first chunk are consumed already. */
  private chunks: Buffer[] = [];
  private offset = 0;
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
    this.offset = 0;
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
    let at = this.offset;
    while (at < buf.length && buf[at] === NEWLINE) at++;
    if (at > this.offset) {
      this.consume(at - this.offset);
      if (this.size === 0) return undefined;
      buf = this.flatten();
      at = this.offset;
    }
    const blank = buf.indexOf(BLANK_LINE, Math.max(at, at + this.scanFrom - 1));
    if (blank < 0) {
      if (this.size > this.maxHeaderBytes) throw new FrameTooLargeError(this.size, this.maxHeaderBytes);
      this.scanFrom = this.size;
      return undefined;
    }
    const headers = parseFrameHeaders(buf.toString('utf8', at, blank));
    this.consume(blank + 2 - at);
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
   * Remove and return the next n buffered bytes. Copies only a body that straddles
   * reads, not the whole read behind it (flatten would copy 64 KB per read).
   */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length - this.offset >= n) {
      out = first.subarray(this.offset, this.offset + n);
      this.offset += n;
      if (this.offset === first.length) this.dropFirst();
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[0];
        const part = Math.min(chunk.length - this.offset, n - filled);
        chunk.copy(out, filled, this.offset, this.offset + part);
        filled += part;
        this.offset += part;
        if (this.offset === chunk.length) this.dropFirst();
      }
    }
    this.size -= n;
    this.scanFrom = 0;
    return out;
  }

  private dropFirst(): void {
    this.chunks.shift();
    this.offset = 0;
  }

  /** The unconsumed input as one buffer, read from `offset`. */
  private flatten(): Buffer {
    if (this.chunks.length > 1) {
      const first = this.chunks[0];
      this.chunks[0] = first.subarray(this.offset);
      this.chunks = [Buffer.concat(this.chunks, this.size)];
      this.offset = 0;
    }
    return this.chunks[0];
  }

  private consume(n: number): void {
    this.size -= n;
    this.scanFrom = 0;
    if (this.size === 0) {
      this.chunks = [];
      this.offset = 0;
    } else this.offset += n;
  }
}

function parseFrameHeaders(block: string): Record<string, string> {
  const headers: Record<string, string> = {};
  let pos = 0;
  for (;;) {
    let eol = block.indexOf('\n', pos);
    if (eol < 0) eol = block.length;
    const colon = block.indexOf(': ', pos);
    if (colon <= pos || colon >= eol) throw new ParseError(`malformed ESL header line ${JSON.stringify(block.slice(pos, Math.min(eol, pos + 80)))}`);
    headers[block.slice(pos, colon)] = block.slice(colon + 2, eol);
    if (eol >= block.length) return headers;
    pos = eol + 1;
  }
}
