import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, renameSync, truncateSync, writeSync } from 'node:fs';
import type { Logger } from '../observability/logger.js';
import { DropReporter, type Metrics } from '../observability/metrics.js';

/**
 * Remembers event keys (Core-UUID:Event-Sequence) so the copy of a remote event
 * that arrives by the second transport is dropped. Bounded in entries and age:
 * a Map keeps insertion order, so the oldest key is always first and both limits
 * are enforced by trimming from the front — O(1) per event, no timers.
 */
export class DedupCache {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** True the first time a key is offered (within ttl), false for a duplicate. */
  firstSighting(key: string): boolean {
    const now = this.now();
    this.expire(now);
    const at = this.seen.get(key);
    if (at !== undefined && now - at <= this.ttlMs) return false;
    if (at !== undefined) this.seen.delete(key);
    this.seen.set(key, now);
    if (this.seen.size > this.maxEntries) this.seen.delete(this.seen.keys().next().value!);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }

  /** Remember keys as seen now (read back from the journal at start). */
  preload(keys: Iterable<string>): void {
    const now = this.now();
    for (const key of keys) {
      this.seen.delete(key);
      this.seen.set(key, now);
      if (this.seen.size > this.maxEntries) this.seen.delete(this.seen.keys().next().value!);
    }
  }

  private expire(now: number): void {
    for (const [key, at] of this.seen) {
      if (now - at <= this.ttlMs) break;
      this.seen.delete(key);
    }
  }
}

/**
 * Event-Sequence numbers seen per FreeSWITCH run (origin node + Core-UUID), as a sliding
 * bitmap: the half of dedup that does not forget with time. The key cache forgets after
 * `dedup/ttl` (and `max-entries` newer keys), and one transport can lag the other by
 * more than that: the soak found NATS copies arriving minutes after their multicast
 * twins (JetStream delivers at most max_ack_pending messages ahead of the bridge's acks,
 * which wait for FreeSWITCH), each then injected a second time. A run's sequence numbers
 * only grow, so a bit per number over the last WINDOW_BITS of them catches those copies
 * at 1 bit an event, whatever the lag.
 *
 * Bounded: at most MAX_RUNS runs (the least recently seen forgotten first), each bitmap
 * growing from 1 KB as its run's numbers spread, to WINDOW_BITS / 8 bytes (128 KB; 8 MB
 * for 64 runs at most). A number older than its run's window is not known here, and the key
 * cache alone decides, as before.
 */
export class SequenceWindow {
  static readonly WINDOW_BITS = 1 << 20;
  static readonly MAX_RUNS = 64;
  private readonly runs = new Map<string, { base: number; bits: Uint8Array }>();

  /** Mark `seq` of `run` seen; true when it already was. */
  record(run: string, seq: number): boolean {
    if (!Number.isSafeInteger(seq) || seq < 0) return false;
    let window = this.runs.get(run);
    if (window) this.runs.delete(run);
    else {
      // Room below the first number: the other transport's copies of slightly older events.
      window = { base: Math.max(0, seq - 1024), bits: new Uint8Array(1024) };
      if (this.runs.size >= SequenceWindow.MAX_RUNS) this.runs.delete(this.runs.keys().next().value!);
    }
    this.runs.set(run, window);
    if (seq < window.base) return false;
    let offset = seq - window.base;
    if (offset >= window.bits.length * 8) {
      const needed = Math.min(SequenceWindow.WINDOW_BITS / 8, 2 ** Math.ceil(Math.log2(Math.floor(offset / 8) + 1)));
      if (needed > window.bits.length) {
        const grown = new Uint8Array(needed);
        grown.set(window.bits);
        window.bits = grown;
      }
      if (offset >= window.bits.length * 8) {
        // Slide: keep the newest three quarters of the window below seq.
        const shiftBytes = Math.floor((offset - window.bits.length * 6) / 8);
        if (shiftBytes >= window.bits.length) window.bits.fill(0);
        else {
          window.bits.copyWithin(0, shiftBytes);
          window.bits.fill(0, window.bits.length - shiftBytes);
        }
        window.base += shiftBytes * 8;
        offset = seq - window.base;
      }
    }
    const mask = 1 << (offset & 7);
    const at = offset >> 3;
    const seen = (window.bits[at] & mask) !== 0;
    window.bits[at] |= mask;
    return seen;
  }

  get size(): number {
    return this.runs.size;
  }
}

/**
 * The form a dedup key is remembered in: as it is when it looks like what FreeSWITCH
 * makes (`<Core-UUID>:<Event-Sequence>`, printable ASCII, short), else a SHA-256 of
 * it, so that a hostile 64 KB Core-UUID or a key holding a newline costs the cache and
 * the journal 46 bytes like any other.
 */
export function dedupKey(key: string): string {
  if (key.length <= 96 && /^[\x21-\x7e]+$/.test(key)) return key;
  return 'sha256:' + createHash('sha256').update(key, 'utf8').digest('base64');
}

export interface JournalOptions {
  /** Lines per file; the journal keeps the current file and the one before it. */
  maxLines: number;
  logger: Logger;
  metrics: Metrics;
}

/**
 * The durable half of dedup: the keys of remote events written to FreeSWITCH, one
 * per line, so that after a crash the bridge recognises what JetStream redelivers
 * (messages not acknowledged when it died) and does not inject them a second time.
 *
 * A key is appended once its sendevent reached the kernel, before FreeSWITCH's reply:
 * mod_event_socket reads what is in its socket even after the bridge dies, so from
 * that moment the event counts as injected. Plain write(2) without fsync: what was
 * written survives a crash of the process (kill -9), which is what this is for; a
 * power loss may cost the last lines, and FreeSWITCH's own events with them.
 *
 * Bounded: at `maxLines` lines the file becomes `<path>.1` (replacing the previous
 * one) and a new one starts, so at most 2 x maxLines keys are kept and read back. A
 * line cut by a crash has no newline and is ignored on load.
 */
export class DedupJournal {
  private fd: number | null = null;
  private lines = 0;
  private readonly drops: DropReporter;
  private failed = false;

  private constructor(
    private readonly path: string,
    private readonly options: JournalOptions,
  ) {
    this.drops = new DropReporter('dedup', options.metrics, options.logger);
  }

  /** Open (creating) the journal at `path`; returns it with the keys it held, oldest first. */
  static open(path: string, options: JournalOptions): { journal: DedupJournal; keys: string[] } {
    const journal = new DedupJournal(path, options);
    const current = readLines(path);
    const keys = [...readLines(`${path}.1`).lines, ...current.lines];
    journal.lines = current.lines.length;
    // A line the crash cut short goes: "uuid:12" cut from "uuid:123" would pass for another event.
    if (current.complete < current.size) truncateSync(path, current.complete);
    journal.fd = openSync(path, 'a');
    return { journal, keys };
  }

  /** Append keys (already in dedupKey form). A write that fails is logged once and counted; dedup goes on in memory. */
  record(keys: readonly string[]): void {
    if (this.fd === null || keys.length === 0) return;
    try {
      writeSync(this.fd, keys.join('\n') + '\n');
      this.lines += keys.length;
      if (this.failed) {
        this.failed = false;
        this.options.logger.info({ journal: this.path }, 'dedup journal writable again');
      }
      if (this.lines >= this.options.maxLines) this.rotate();
    } catch (err) {
      this.failed = true;
      this.drops.drop('journal_write_failed', { journal: this.path, error: (err as Error).message }, keys.length);
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }

  private rotate(): void {
    closeSync(this.fd!);
    this.fd = null;
    renameSync(this.path, `${this.path}.1`);
    this.fd = openSync(this.path, 'a');
    this.lines = 0;
  }
}

/** The complete lines of a journal file, and how many of its bytes they take. */
function readLines(path: string): { lines: string[]; complete: number; size: number } {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { lines: [], complete: 0, size: 0 };
    throw err;
  }
  const end = text.lastIndexOf('\n');
  const lines = end < 0 ? [] : text.slice(0, end).split('\n').filter((line) => line !== '');
  return { lines, complete: end + 1, size: text.length };
}
