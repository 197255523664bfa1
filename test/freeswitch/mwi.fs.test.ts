/**
 * MWI across nodes: a MESSAGE_WAITING fired on A (as mod_voicemail fires it) reaches a
 * phone on B subscribed to that account's message-summary, as it reaches one on A.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { FsEvent } from '../../bridge/event/event.js';
import { labEnv, phone, users, type FsNode, useBridgedPair } from './lab.js';
import { report, sequence, settle, summarize } from './notify-sequence.js';

const lab = useBridgedPair({ bridge: { location: false } });
let a: FsNode;
let b: FsNode;
beforeAll(() => void ({ a, b } = lab));

function messageWaiting(account: string, waiting: boolean, counts: string): FsEvent {
  return FsEvent.create('MESSAGE_WAITING').add('MWI-Messages-Waiting', waiting ? 'yes' : 'no').add('MWI-Message-Account', `sip:${account}@${labEnv().domain}`).add('MWI-Voice-Message', counts);
}

describe('MWI', () => {
  it('a MESSAGE_WAITING on A reaches the message-summary subscribers on B, as on A', async () => {
    const [account, watcherA, watcherB] = users(3);
    const mailbox = await phone(account, a);
    await mailbox.register(120);
    const onA = await (await phone(watcherA, a)).subscribe(account, 'message-summary');
    const onB = await (await phone(watcherB, b)).subscribe(account, 'message-summary');
    await settle([onA, onB]);
    const marks = [onA.received.length, onB.received.length];
    const firedAt = Date.now();
    await a.fire(messageWaiting(account, true, '2/0 (0/0)'));
    const gotA = await onA.waitFor((n) => n.messagesWaiting === true, 10_000, marks[0]);
    const gotB = await onB.waitFor((n) => n.messagesWaiting === true, 10_000, marks[1]);
    await a.fire(messageWaiting(account, false, '0/0 (0/0)'));
    await onB.waitFor((n) => n.messagesWaiting === false, 10_000, marks[1]);
    await onA.waitFor((n) => n.messagesWaiting === false, 10_000, marks[0]);
    await settle([onA, onB]);
    const seenA = sequence(onA, marks[0]).map(summarize);
    const seenB = sequence(onB, marks[1]).map(summarize);
    const unsolicited = mailbox.unsolicited.filter((n) => n.at >= firedAt).map((n) => `${n.source} ${summarize(n)}`);
    report('mwi', { account, seenA, seenB, afterFireMs: { a: gotA.at - firedAt, b: gotB.at - firedAt }, unsolicitedToTheRegisteredPhone: unsolicited });
    expect(seenA).toEqual(['mwi yes 2/0 (0/0)', 'mwi no 0/0 (0/0)']);
    expect(seenB).toEqual(seenA);
  });
});
