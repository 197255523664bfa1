import { describe, expect, it } from 'vitest';
import { formatReport, runFuzz } from '../fuzz/fuzz.js';

/**
 * The fuzz harness in CI, at a small count (`npm run fuzz -- --count N` runs it at any
 * size). A random seed each run, printed on failure: `npm run fuzz -- --seed S --count N`
 * replays it.
 */
describe('fuzz harness (small count)', () => {
  it('drives mutated datagrams, ESL frames and NATS messages through the bridge without a crash or a malformed command', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const report = await runFuzz({ count: Number(process.env.FUZZ_COUNT ?? 400), seed });
    const text = formatReport(report);
    expect(report.crashes, text).toEqual([]);
    expect(report.malformedCommands, text).toEqual([]);
    // Every kind of input was fed, and the inputs reached both the refusal paths and the node.
    for (const kind of ['datagram', 'datagram-psk', 'esl', 'nats'] as const) expect(report.inputs[kind], text).toBeGreaterThan(0);
    expect(Object.keys(report.rejects).length, text).toBeGreaterThanOrEqual(4);
    expect(report.commands.sendevent, text).toBeGreaterThan(0);
  }, 120_000);
});
