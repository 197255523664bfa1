import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DropReporter, Metrics } from '../../bridge/observability/metrics.js';

/** A pino logger writing its JSON lines into an array. */
function recordingLogger() {
  const lines: { level: number; msg: string; cause: string; dropped?: number; filtered?: number }[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

async function value(counter: Metrics['drops'], component: string, cause: string): Promise<number> {
  return (await counter.get()).values.find((v) => v.labels.component === component && v.labels.cause === cause)?.value ?? 0;
}

describe('DropReporter', () => {
  afterEach(() => vi.useRealTimers());

  it('counts every drop and warns once per cause per interval, with the tally since the last line', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const metrics = new Metrics();
    const { logger, lines } = recordingLogger();
    const drops = new DropReporter('multicast-receive', metrics, logger, 10_000);
    drops.drop('bad_magic');
    drops.drop('bad_magic', undefined, 4);
    drops.drop('too_short');
    vi.advanceTimersByTime(10_000);
    drops.drop('bad_magic');
    expect(await value(metrics.drops, 'multicast-receive', 'bad_magic')).toBe(6);
    expect(await value(metrics.drops, 'multicast-receive', 'too_short')).toBe(1);
    expect(lines.map((l) => [l.level, l.cause, l.dropped])).toEqual([
      [40, 'bad_magic', 1],
      [40, 'too_short', 1],
      [40, 'bad_magic', 5],
    ]);
  });

  it('keeps what the design discards apart: fsb_filtered_total, logged at info, never in fsb_drops_total', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const metrics = new Metrics();
    const { logger, lines } = recordingLogger();
    const drops = new DropReporter('pipeline', metrics, logger, 10_000);
    for (let i = 0; i < 3; i++) drops.filtered('duplicate_nats');
    drops.drop('duplicate_nats');
    expect(await value(metrics.filtered, 'pipeline', 'duplicate_nats')).toBe(3);
    expect(await value(metrics.drops, 'pipeline', 'duplicate_nats')).toBe(1);
    // Separate tallies: the filtered line does not hold back the first drop line of the same cause.
    expect(lines.map((l) => [l.level, l.filtered ?? l.dropped])).toEqual([
      [30, 1],
      [40, 1],
    ]);
    expect(lines[0].msg).toContain('by design');
  });
});
