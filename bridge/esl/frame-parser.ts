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
 * measurements). Here nothing is copied but what straddles reads (a body, or the few
 * bytes of a header block), a read is never re-sliced per frame (an offset moves along
 * it), and a header search resumes where the previous one stopped.
 */
export class EslFrameParser {
  /** Unconsumed input; `offset` bytes of the first chunk are consumed already. */
  private chunks: Buffer[] = [];
  private offset = 0;
  private size = 0;
  /** Where the blank-line search resumes: a chunk index and a position in it (reset whenever bytes are consumed). */
  private scanChunk = 0;
  private scanAt = -1;
  /** Bytes before chunk `scanChunk`, so a resumed search does not walk the reads it already passed. */
  private scanBefore = 0;
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
    this.scanChunk = 0;
    this.scanAt = -1;
    this.pendingHeaders = null;
    this.bodyLength = 0;
  }

  /** A complete header-only frame, null when the headers announced a body, undefined when more bytes are needed. */
  private readHeaders(): EslFrame | null | undefined {
    // Stray blank lines between frames carry nothing.
    while (this.size > 0 && this.chunks[0][this.offset] === NEWLINE) this.consume(1);
    if (this.size === 0) return undefined;
    const headerBytes = this.blockLength();
    if (headerBytes < 0) {
      if (this.size > this.maxHeaderBytes) throw new FrameTooLargeError(this.size, this.maxHeaderBytes);
      return undefined;
    }
    const first = this.chunks[0];
    let block: string;
    // Nearly always the whole header block is in the first read: no copy.
    if (this.offset + headerBytes + 2 <= first.length) {
      block = first.toString('utf8', this.offset, this.offset + headerBytes);
      this.consume(headerBytes + 2);
    } else {
      block = this.take(headerBytes).toString('utf8');
      this.consume(2);
    }
    const headers = parseFrameHeaders(block);
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
   * The buffered header block's length before its `\n\n` (which may straddle reads), or -1
   * with the search position kept for the next read, so a block that arrives byte by byte
   * is searched once, not once per byte.
   */
  private blockLength(): number {
    const chunks = this.chunks;
    let k = 0;
    let before = -this.offset; // where chunks[k] starts, counted from the first unconsumed byte
    let from: number;
    if (this.scanAt >= 0) {
      k = this.scanChunk;
      before = this.scanBefore;
      from = this.scanAt;
    } else {
      // Nearly always: the whole block is in the first read.
      const at = chunks[0].indexOf(BLANK_LINE, this.offset);
      if (at >= 0) return at - this.offset;
      // Then only its last byte can still start a blank line.
      from = Math.max(this.offset, chunks[0].length - 1);
    }
    for (; k < chunks.length; k++) {
      const chunk = chunks[k];
      const at = chunk.indexOf(BLANK_LINE, from);
      if (at >= 0) return before + at;
      const next = chunks[k + 1];
      if (next !== undefined && chunk[chunk.length - 1] === NEWLINE && next[0] === NEWLINE && chunk.length - 1 >= (k === 0 ? this.offset : 0)) return before + chunk.length - 1;
      before += chunk.length;
      from = 0;
    }
    // Resume on the last byte: it may be the first LF of a blank line the next read completes.
    const last = chunks.length - 1;
    this.scanChunk = last;
    this.scanBefore = before - chunks[last].length;
    this.scanAt = Math.max(last === 0 ? this.offset : 0, chunks[last].length - 1);
    return -1;
  }

  /**
   * Remove and return the next n buffered bytes. Copies only bytes that straddle reads,
   * not the whole read behind them.
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
      let k = 0;
      let offset = this.offset;
      while (filled < n) {
        const chunk = this.chunks[k];
        const part = Math.min(chunk.length - offset, n - filled);
        chunk.copy(out, filled, offset, offset + part);
        filled += part;
        offset += part;
        if (offset === chunk.length) {
          k++;
          offset = 0;
        }
      }
      this.dropChunks(k, offset);
    }
    this.size -= n;
    this.scanAt = -1;
    return out;
  }

  private dropFirst(): void {
    this.dropChunks(1, 0);
  }

  /**
   * Drop the first `count` reads at once: a body that came in many small reads is one
   * splice, not a shift per read (each shift moves the whole array once it is large:
   * 590 KB in 3-byte reads took 32 s that way).
   */
  private dropChunks(count: number, offset: number): void {
    if (count === this.chunks.length) this.chunks = [];
    else if (count === 1) this.chunks.shift();
    else if (count > 0) this.chunks.splice(0, count);
    this.offset = offset;
  }

  /** Skip n buffered bytes, across reads. */
  private consume(n: number): void {
    this.size -= n;
    this.scanAt = -1;
    let k = 0;
    let offset = this.offset;
    while (n > 0) {
      const left = this.chunks[k].length - offset;
      if (n < left) {
        offset += n;
        break;
      }
      n -= left;
      k++;
      offset = 0;
    }
    this.dropChunks(k, offset);
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
