import { eventFromFrame, isEventFrame } from '../../bridge/esl/event-frame.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { MulticastSubclass } from '../../bridge/event/names.js';
import { fromMulticastEvent } from '../../bridge/pipeline/inject.js';
import { Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { eslFrames, readFixture } from './fixtures.js';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';

export function eslEvents(name: string): FsEvent[] {
  return eslFrames(name).filter(isEventFrame).map(eventFromFrame);
}

export function referenceEvents(name: string): FsEvent[] {
  return new EslFrameParser().push(readFixture('reference', name)).filter(isEventFrame).map(eventFromFrame);
}

function timestampOf(event: FsEvent): number {
  return Number(event.get('Event-Date-Timestamp') ?? 0) / 1000;
}

/**
 * A captured ESL stream as the bridge pipeline would hand it to a consumer on that
 * node: multicast::event copies become remote events in their original form
 * (origin = Multicast-Sender), everything else is a local ESL event of `self`.
 * Peer events stay as they are (the pipeline forwards them).
 */
export function asPipeline(events: FsEvent[], self: string): BridgeEvent[] {
  return events.map((event) => {
    if (event.subclass === MulticastSubclass.Event) {
      const original = fromMulticastEvent(event);
      return { event: original, origin: { transport: Transport.Multicast, node: original.get('Multicast-Sender') ?? '', receivedAt: timestampOf(event) } };
    }
    return { event, origin: { transport: Transport.Esl, node: self, receivedAt: timestampOf(event) } };
  });
}

/** Headers FreeSWITCH adds when an event is fired or multicast, not chosen by whoever fired it. */
export const DELIVERY_HEADERS = new Set(
  [
    'Core-UUID',
    'FreeSWITCH-Hostname',
    'FreeSWITCH-Switchname',
    'FreeSWITCH-IPv4',
    'FreeSWITCH-IPv6',
    'Event-Date-Local',
    'Event-Date-GMT',
    'Event-Date-Timestamp',
    'Event-Calling-File',
    'Event-Calling-Function',
    'Event-Calling-Line-Number',
    'Event-Sequence',
    'Multicast-Sender',
  ].map((h) => h.toLowerCase()),
);

/** The headers a consumer chose, in order, for a header-by-header comparison. */
export function chosenHeaders(event: FsEvent): [string, string][] {
  return event.headers.filter(([name]) => !DELIVERY_HEADERS.has(name.toLowerCase())).map(([n, v]) => [n, v]);
}
