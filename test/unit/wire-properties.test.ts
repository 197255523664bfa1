import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ParseError } from '../../bridge/errors.js';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { parseJson, serializeJson } from '../../bridge/event/json.js';
import { Transport } from '../../bridge/pipeline/types.js';
import { NODES, wireEvent, type WireEvent } from '../support/wire-arbitraries.js';
import { eslFrame, wellFormedProblem, wireNode, wireSender } from '../support/wire-node.js';

/**
 * Arbitrary events (any UTF-16 including lone surrogates, NUL, CR/LF, 64 KB values,
 * forged identities and timestamps) driven through every path a wire string takes:
 * ESL framing and parsing -> pipeline -> multicast and NATS sinks; multicast datagram
 * and NATS JSON decode -> dedup -> injection into the node; both consumers on every
 * path, with their timers (expiry sweep, peer-down purge, forget) run by fake time.
 * Nothing may throw, reject unhandled, write a malformed ESL command, or grow
 * without bound.
 */

const PSK = Buffer.from('wire-properties-psk');

type Via = 'esl-plain' | 'esl-json' | 'multicast' | 'multicast-psk' | 'nats' | 'nats-mangled' | 'datagram-mangled';

interface Step {
  wire: WireEvent;
  via: Via;
  /** Where a mangled copy is cut or flipped. */
  mangle: number;
  advanceMs: number;
  /** The clock jumps ahead this far (timers then run once), so long waits cost nothing. */
  jumpMs: number;
}

const step: fc.Arbitrary<Step> = fc.record({
  wire: wireEvent,
  via: fc.constantFrom<Via>('esl-plain', 'esl-json', 'multicast', 'multicast-psk', 'nats', 'nats', 'nats-mangled', 'datagram-mangled'),
  mangle: fc.nat(),
  advanceMs: fc.constantFrom(0, 0, 0, 5, 1_100, 3_100),
  jumpMs: fc.constantFrom(0, 0, 0, 0, 0, 61_000, 700_000),
});

const setup = fc.record({
  sink: fc.constantFrom('sqlite' as const, 'esl' as const),
  locationParity: fc.boolean(),
  blfParity: fc.boolean(),
  chunk: fc.integer({ min: 1, max: 4096 }),
});

afterEach(() => {
  vi.useRealTimers();
});

const RUNS = Number(process.env.WIRE_RUNS ?? 120);
/**
 * Runs that must complete however slow the machine. A run costs about 40 ms on average
 * and under 1 s at worst on a 2-core machine under load 5 (events up to 1.4 MB in 3-byte
 * reads), so the time limit below cuts a run short only on a machine many times slower
 * than that, and even then this many runs are asserted, not silently passed.
 */
const MIN_RUNS = Math.min(RUNS, 60);

describe('arbitrary wire input through the whole pipeline and both consumers', () => {
  it('never throws, never rejects unhandled, writes only well-formed ESL commands, keeps state bounded', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    let completed = 0;
    process.on('unhandledRejection', onUnhandled);
    try {
      await fc.assert(
        fc.asyncProperty(setup, fc.array(step, { minLength: 1, maxLength: 25 }), async (options, steps) => {
          vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'clearTimeout', 'clearInterval', 'Date'] });
          try {
            const b = await wireNode(NODES[1], { ...options, psk: PSK });
            const parser = new EslFrameParser();
            const senders = new Map<string, ReturnType<typeof wireSender>>();
            let registers = 0;
            let presence = 0;
            for (const { wire, via, mangle, advanceMs, jumpMs } of steps) {
              const { event } = wire;
              if (event.subclass === 'sofia::register') registers++;
              if (event.name === 'PRESENCE_IN') presence++;
              if (via === 'esl-plain' || via === 'esl-json') {
                const frame = eslFrame(event, via === 'esl-plain' ? 'plain' : 'json');
                for (let at = 0; at < frame.length; at += options.chunk) {
                  for (const parsed of parser.push(frame.subarray(at, at + options.chunk))) {
                    expect(isEventFrame(parsed)).toBe(true);
                    try {
                      b.bridge.pipeline.local(eventFromFrame(parsed), Date.now());
                    } catch (err) {
                      expect(err).toBeInstanceOf(ParseError);
                    }
                  }
                }
              } else if (via === 'nats' || via === 'nats-mangled') {
                let json = serializeJson(event);
                if (via === 'nats-mangled') json = json.slice(0, mangle % (json.length + 1)) + json.slice((mangle % (json.length + 1)) + 1);
                let decoded: FsEvent;
                try {
                  decoded = parseJson(json);
                } catch (err) {
                  expect(err).toBeInstanceOf(ParseError);
                  continue;
                }
                b.emit({ event: decoded, origin: { transport: Transport.Nats, node: wire.sender, receivedAt: Date.now() } });
              } else {
                // The sender's name comes from its config: arbitrary text is refused there, so forged names travel only in headers.
                const name = NODES.some((n) => n.name === wire.sender) ? wire.sender : 'fs-x';
                if (!senders.has(name)) senders.set(name, wireSender(name, PSK));
                const out = senders.get(name)!;
                out.pipeline.local(event, Date.now());
                for (const datagram of out.plain.sent.splice(0)) {
                  if (via === 'datagram-mangled') datagram[mangle % datagram.length] ^= 1 + (mangle % 255);
                  b.source.process(datagram);
                }
                for (const datagram of out.secret.sent.splice(0)) b.pskSource.process(datagram);
              }
              if (jumpMs > 0) vi.setSystemTime(Date.now() + jumpMs);
              if (advanceMs > 0) await vi.advanceTimersByTimeAsync(advanceMs);
            }
            // Every sweep, purge and forget timer gets its turn, after every expiry and memory window has passed.
            await vi.advanceTimersByTimeAsync(3_100);
            vi.setSystemTime(Date.now() + 700_000);
            await vi.runOnlyPendingTimersAsync();
            await vi.runOnlyPendingTimersAsync();
            await b.stop();
            for (const written of b.written) expect(wellFormedProblem(written), written.text.slice(0, 200)).toBeUndefined();
            expect(b.location.registrations).toBeLessThanOrEqual(registers);
            expect(b.blf.lamps().size).toBeLessThanOrEqual(presence);
            expect(b.location.tombstones).toBeLessThanOrEqual(steps.length);
            for (const store of b.stores.values()) expect(store.memory.data.size).toBeLessThanOrEqual(registers + presence);
            // The pipeline catches a listener that throws and counts it: for a consumer that is a bug, whatever the input.
            const drops = (await b.bridge.metrics.drops.get()).values;
            expect(drops.filter((d) => d.labels.cause === 'consumer_error')).toEqual([]);
            completed++;
          } finally {
            vi.useRealTimers();
          }
        }),
        {
          numRuns: RUNS,
          // Stop generating well before the test's timeout rather than hit it (a failure still fails, with its shrunk case).
          interruptAfterTimeLimit: 60_000,
          markInterruptAsFailure: false,
        },
      );
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(completed).toBeGreaterThanOrEqual(MIN_RUNS);
  }, 120_000);
});
