/**
 * Node death and restart, on real phones' NOTIFYs: a call's node dies mid-call (its
 * bridge is killed, so its HEARTBEATs stop), the lamp goes out on the other node within
 * the peer timeout; the node comes back with the call still up, the lamp comes back;
 * a bridge that starts while a call is up elsewhere lights its lamp.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { SipUa } from '../support/sip-ua.js';
import { phone, users, type FsNode, useBridgedPair } from './lab.js';
import { report, sequence, settle, summarize } from './notify-sequence.js';

/** FreeSWITCH sends a HEARTBEAT every 20 s (event-heartbeat-interval): the timeout must exceed it. */
const PEER_TIMEOUT_MS = 25_000;
/** Peer silence is checked every timeout/4, at most 5 s: the lamp goes out within this of the last heartbeat. */
const LAMP_OUT_WITHIN_MS = PEER_TIMEOUT_MS + 5_000 + 20_000;

const lab = useBridgedPair({ bridge: { location: false, peerTimeoutMs: PEER_TIMEOUT_MS }, waitPeerUp: true });
let a: FsNode;
let b: FsNode;
beforeAll(() => void ({ a, b } = lab));

async function callOnA(): Promise<{ caller: string; callee: string; hangup: () => Promise<void>; callerPhone: SipUa }> {
  const [caller, callee] = users(2);
  const calleePhone = await phone(callee, a, { autoAnswer: { ringMs: 300 } });
  await calleePhone.register(300);
  const callerPhone = await phone(caller, a);
  await callerPhone.register(300);
  const call = await callerPhone.call(callee);
  await call.answered;
  return { caller, callee, hangup: () => call.hangup(), callerPhone };
}

describe('node death and restart', () => {
  it('the lamp goes out on B within the peer timeout when the call node dies, and comes back when it returns with the call up', async () => {
    const [watcher] = users(1);
    const { callee, hangup } = await callOnA();
    const onB = await phone(watcher, b);
    const dialog = await onB.subscribe(callee, 'dialog');
    const presence = await onB.subscribe(callee, 'presence');
    await dialog.waitFor((n) => n.dialogs.some((d) => d.state === 'confirmed'), 10_000);
    await settle([dialog, presence]);
    const marks = { dialog: dialog.received.length, presence: presence.received.length };

    const killedAt = Date.now();
    await lab.bridgeA.kill();
    const out = await dialog.waitFor((n) => n.dialogs.some((d) => d.state === 'terminated'), LAMP_OUT_WITHIN_MS, marks.dialog);
    const lampOutAfterMs = out.at - killedAt;
    await settle([dialog, presence]);
    const whileDown = { dialog: sequence(dialog, marks.dialog).map(summarize), presence: sequence(presence, marks.presence).map(summarize) };
    const downMarks = { dialog: dialog.received.length, presence: presence.received.length };

    // The node comes back (its bridge restarts; FreeSWITCH and the call never went away).
    const restartedAt = Date.now();
    await lab.bridgeA.start();
    const back = await dialog.waitFor((n) => n.dialogs.some((d) => d.state === 'confirmed'), LAMP_OUT_WITHIN_MS, downMarks.dialog);
    const relitAfterMs = back.at - restartedAt;
    await settle([dialog, presence]);
    const afterReturn = { dialog: sequence(dialog, downMarks.dialog).map(summarize), presence: sequence(presence, downMarks.presence).map(summarize) };
    const returnMarks = { dialog: dialog.received.length };

    await hangup();
    await dialog.waitFor((n) => n.dialogs.some((d) => d.state === 'terminated'), 10_000, returnMarks.dialog);
    report('node-death', { peerTimeoutMs: PEER_TIMEOUT_MS, lampOutAfterMs, whileDown, relitAfterMs, afterReturn });

    // Out, as the call's hangup would have shown it: once.
    expect(whileDown.dialog).toEqual(['terminated/recipient']);
    expect(whileDown.presence).toEqual(['open "Available"']);
    expect(lampOutAfterMs).toBeGreaterThan(0);
    // Back, once, as mod_sofia showed the answered call.
    expect(afterReturn.dialog).toEqual(['confirmed/recipient']);
    expect(afterReturn.presence).toEqual([expect.stringMatching(/^open "Talk /)]);
  });

  it('a bridge that starts while a call is up on another node lights the lamp of that call', async () => {
    const [watcher] = users(1);
    await lab.bridgeB.stop();
    const { callee, hangup } = await callOnA();
    const onB = await phone(watcher, b);
    const dialog = await onB.subscribe(callee, 'dialog');
    await settle([dialog]);
    // B's bridge is down: B's phone knows nothing of the call yet.
    expect(sequence(dialog).map(summarize).every((s) => s === 'idle')).toBe(true);
    const mark = dialog.received.length;
    const startedAt = Date.now();
    await lab.bridgeB.start();
    const lit = await dialog.waitFor((n) => n.dialogs.some((d) => d.state === 'confirmed'), 30_000, mark);
    await settle([dialog]);
    const afterStart = sequence(dialog, mark).map(summarize);
    await hangup();
    await dialog.waitFor((n) => n.dialogs.some((d) => d.state === 'terminated'), 10_000, mark);
    report('bridge-start-relight', { litAfterMs: lit.at - startedAt, afterStart });
    expect(afterStart.at(-1)).toBe('confirmed/recipient');
  });
});
