/**
 * Highest sequence number seen per stream, to count what went missing in between.
 * A number at or below the highest seen (duplicate or late reordered datagram) counts
 * nothing: a reordered datagram was already counted as lost, so on a network that
 * reorders the count is an upper bound. Streams are capped; the oldest is forgotten.
 */
export class SequenceGaps {
  private readonly highest = new Map<string, number>();

  constructor(private readonly maxStreams = 4096) {}

  /** How many numbers were skipped on `stream` just before `seq`. */
  observe(stream: string, seq: number): number {
    const prev = this.highest.get(stream);
    if (prev === undefined) {
      if (this.highest.size >= this.maxStreams) this.highest.delete(this.highest.keys().next().value as string);
      this.highest.set(stream, seq);
      return 0;
    }
    if (seq <= prev) return 0;
    this.highest.set(stream, seq);
    return seq - prev - 1;
  }

  get size(): number {
    return this.highest.size;
  }
}
