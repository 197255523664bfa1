import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FsEvent } from '../../bridge/event/event.js';
import { HeaderInjectionError, InvalidEslHeaderError } from '../../bridge/errors.js';
import { sendeventCommand } from '../../bridge/sources/esl/client.js';

describe('sendevent command text', () => {
  it('puts the event name on the command line, headers raw, and the body after a computed Content-Length', () => {
    const event = FsEvent.create('CUSTOM', 'multicast::event').add('Orig-from', '1000@127.0.0.1').add('Content-Length', '999');
    event.body = 'é\n';
    expect(sendeventCommand(event)).toBe(
      'sendevent CUSTOM\nEvent-Subclass: multicast::event\nOrig-from: 1000@127.0.0.1\nContent-Length: 3\n\né\n',
    );
    expect(sendeventCommand(FsEvent.create('HEARTBEAT'))).toBe('sendevent HEARTBEAT\n\n');
  });

  it('never lets a header value start a new line (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (name, value) => {
        const event = FsEvent.create('CUSTOM', 'x::y').add(name, value);
        let text: string;
        try {
          text = sendeventCommand(event);
        } catch (err) {
          expect(err instanceof HeaderInjectionError || err instanceof InvalidEslHeaderError).toBe(true);
          return;
        }
        // Accepted: exactly one line per header, and each splits back into that header.
        const lines = text.slice(0, -2).split('\n');
        expect(lines).toHaveLength(3);
        const line = lines[2];
        expect(line.slice(0, line.indexOf(':'))).toBe(name);
        expect(line.slice(line.indexOf(':') + 1).replace(/^ +/, '')).toBe(value.replace(/^ +/, ''));
      }),
    );
  });
});
