import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FsEvent } from '../../bridge/event/event.js';
import { conflictingClaim, subjectOrigin } from '../../bridge/transports/nats/origin.js';
import { ORIGIN_NODE_HEADER } from '../../bridge/transports/nats/stream.js';
import { encodeToken, SubjectMapper } from '../../bridge/transports/nats/subjects.js';

const subjects = new SubjectMapper('acme.fs', 'prod');

describe('origin of a NATS message', () => {
  it('is the node token of the subject, for every node name the publisher can have (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }), fc.constantFrom('PRESENCE_IN', 'CUSTOM'), (node, name) => {
        const subject = subjects.subject(node, name, name === 'CUSTOM' ? 'sofia::register' : undefined);
        return subjectOrigin(subjects, subject) === node;
      }),
      { numRuns: 300 },
    );
  });

  it('is undefined for another prefix or cluster, a missing event token, an empty node or a spelling the publisher never writes', () => {
    expect(subjectOrigin(subjects, 'acme.fs.prod.fs-a.PRESENCE_IN')).toBe('fs-a');
    for (const subject of [
      'acme.fs.test.fs-a.PRESENCE_IN',
      'fs.prod.fs-a.PRESENCE_IN',
      'acme.fs.prod.fs-a',
      'acme.fs.prod.%.PRESENCE_IN',
      'acme.fs.prod.fs%2Da.PRESENCE_IN', // decodes to fs-a, but fs-a's permission names the token fs-a
      'acme.fs.prod.fs%2ea.PRESENCE_IN', // lowercase hex
      'acme.fs.prod.fs%2Ea.PRESENCE_IN'.replace('%2E', '%2e'),
    ]) {
      expect(subjectOrigin(subjects, subject), subject).toBeUndefined();
    }
    expect(subjectOrigin(subjects, 'acme.fs.prod.fs%2Ea.PRESENCE_IN')).toBe('fs.a');
  });

  it('accepts a token only when it is the canonical encoding of what it decodes to (property over arbitrary tokens)', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[!-~]{1,12}$/).filter((t) => !/[.*>]/.test(t)), (token) => {
        const origin = subjectOrigin(subjects, `acme.fs.prod.${token}.HEARTBEAT`);
        if (origin !== undefined) expect(encodeToken(origin)).toBe(token);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe("an event's claims about its sender", () => {
  const event = (...headers: [string, string][]) => new FsEvent([['Event-Name', 'PRESENCE_IN'], ...headers]);

  it('agree when absent or equal to the origin', () => {
    expect(conflictingClaim(event(), 'fs-a', undefined)).toBeUndefined();
    expect(conflictingClaim(event(['FreeSWITCH-Switchname', 'fs-a'], ['Multicast-Sender', 'fs-a']), 'fs-a', 'fs-a')).toBeUndefined();
    expect(conflictingClaim(event(['FreeSWITCH-Hostname', 'other-host']), 'fs-a', '')).toBeUndefined();
  });

  it('conflict when the origin header, FreeSWITCH-Switchname or Multicast-Sender names another node, in any case and any occurrence', () => {
    expect(conflictingClaim(event(['FreeSWITCH-Switchname', 'fs-a']), 'fs-a', 'fs-b')).toBe(ORIGIN_NODE_HEADER);
    expect(conflictingClaim(event(['FreeSWITCH-Switchname', 'fs-b']), 'fs-a', 'fs-a')).toBe('FreeSWITCH-Switchname');
    expect(conflictingClaim(event(['freeswitch-switchname', 'fs-b']), 'fs-a', undefined)).toBe('FreeSWITCH-Switchname');
    expect(conflictingClaim(event(['FreeSWITCH-Switchname', 'fs-a'], ['FreeSWITCH-Switchname', 'fs-b']), 'fs-a', undefined)).toBe('FreeSWITCH-Switchname');
    expect(conflictingClaim(event(['Multicast-Sender', 'fs-b']), 'fs-a', undefined)).toBe('Multicast-Sender');
    expect(conflictingClaim(event(['FreeSWITCH-Switchname', '']), 'fs-a', undefined)).toBe('FreeSWITCH-Switchname');
  });
});
