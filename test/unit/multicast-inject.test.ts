import { describe, expect, it } from 'vitest';
import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import { toMulticastEvent } from '../../bridge/pipeline/inject.js';
import { LOOP_GUARD_HEADER } from '../../bridge/pipeline/types.js';
import { decodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { datagramFixtures, eslFrames } from '../support/fixtures.js';

/**
 * What the legacy module on node B fired for each datagram from A (captured over ESL)
 * must be what the bridge injects for the same datagram: the same Orig- headers, same
 * order, same values. Only B's own headers (Core-UUID, dates, sequence) and our loop
 * guard differ.
 */
describe('toMulticastEvent of a received datagram matches the legacy multicast::event on node B', () => {
  const fired = eslFrames('b-multicast-event.raw')
    .filter(isEventFrame)
    .map(eventFromFrame)
    .filter((event) => event.subclass === 'multicast::event');
  const byKey = new Map(fired.map((event) => [`${event.get('Orig-Core-UUID')}:${event.get('Orig-Event-Sequence')}`, event]));

  it('compares every fixture datagram B also received', () => {
    let compared = 0;
    for (const { file, bin } of datagramFixtures('multicast-plain')) {
      const original = decodeDatagram(bin, null).event;
      const legacy = byKey.get(original.key!);
      if (!legacy) continue;
      compared++;
      const ours = toMulticastEvent(original, original.get('Multicast-Sender')!, 'fs-b');
      const orig = (headers: [string, string][]) => headers.filter(([name]) => name.startsWith('Orig-'));
      expect(orig(ours.headers), file).toEqual(orig(legacy.headers));
      expect(ours.get('Multicast'), file).toBe('yes');
      expect(ours.name).toBe('CUSTOM');
      expect(ours.subclass).toBe('multicast::event');
      expect(ours.get(LOOP_GUARD_HEADER)).toBe('fs-b');
      const nonOrig = ours.headers.filter(([name]) => !name.startsWith('Orig-')).map(([name]) => name);
      expect(nonOrig).toEqual(['Event-Name', 'Event-Subclass', 'Multicast', LOOP_GUARD_HEADER]);
    }
    // A's datagrams that B heard: heartbeats, registrations, presence (see fixtures/README.md).
    expect(compared).toBeGreaterThanOrEqual(20);
  });
});
