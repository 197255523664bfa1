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

  private expire(now: number): void {
    for (const [key, at] of this.seen) {
      if (now - at <= this.ttlMs) break;
      this.seen.delete(key);
    }
  }
}
