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
