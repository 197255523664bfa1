/**
 * The location table on real nodes: a phone registering on A shows up in B's db_data
 * (as mod_db's own `db select` answers it), and goes on unregister, on expiry, and when
 * A dies (peerdown, then the purge after the grace); a bridge that joins late loads
 * every registration at once.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { SipUa } from '../support/sip-ua.js';
import { until } from '../support/wait.js';
import { labEnv, phone, users, type FsNode, useBridgedPair } from './lab.js';
import { report } from './notify-sequence.js';

const PEER_TIMEOUT_MS = 25_000;
const PEER_DOWN_GRACE_MS = 3_000;

const lab = useBridgedPair({ bridge: { blf: false, peerTimeoutMs: PEER_TIMEOUT_MS, location: { peerDownGraceMs: PEER_DOWN_GRACE_MS } }, waitPeerUp: true });
let a: FsNode;
let b: FsNode;
beforeAll(() => void ({ a, b } = lab));

const row = (node: FsNode, user: string) => node.dbSelect(labEnv().domain, `LOCATION_${user}`);

/** Milliseconds from now until `node`'s row for `user` is `expected` ('' = gone). */
async function rowAfter(node: FsNode, user: string, expected: string, timeoutMs = 15_000): Promise<number> {
  const from = Date.now();
  await until(async () => (await row(node, user)) === expected, timeoutMs);
  return Date.now() - from;
}

describe('location rows from real registrations', () => {
  it('register on A: both tables name A; unregister: both rows go', async () => {
    const [user] = users(1);
    const ua = await phone(user, a);
    await ua.register(120);
    const onB = await rowAfter(b, user, a.info.ipv4);
    const onA = await rowAfter(a, user, a.info.ipv4);
    await ua.register(0);
    const goneB = await rowAfter(b, user, '');
    await rowAfter(a, user, '');
    report('location-register', { user, rowOnBAfterMs: onB, rowOnAAfterMs: onA, goneOnBAfterUnregisterMs: goneB });
    expect(await row(b, user)).toBe('');
  });

  it("a registration that expires (the phone stops refreshing) leaves both tables", async () => {
    const [user] = users(1);
    const ua = await phone(user, a);
    const granted = await ua.register(5);
    await rowAfter(b, user, a.info.ipv4);
    const registeredAt = Date.now();
    // mod_sofia checks expiry periodically: the binding ends some seconds after it expires.
    const goneB = await rowAfter(b, user, '', granted * 1000 + 60_000);
    report('location-expiry', { user, grantedSeconds: granted, goneOnBAfterRegisterMs: Date.now() - registeredAt, waitedMs: goneB });
    expect(await row(a, user)).toBe('');
  });

  it("A dies: B purges A's rows after the peer timeout and the grace", async () => {
    const [user] = users(1);
    const ua = await phone(user, a);
    await ua.register(300);
    await rowAfter(b, user, a.info.ipv4);
    const killedAt = Date.now();
    await lab.bridgeA.kill();
    const goneAfterMs = await rowAfter(b, user, '', PEER_TIMEOUT_MS + PEER_DOWN_GRACE_MS + 25_000);
    report('location-peerdown-purge', { user, peerTimeoutMs: PEER_TIMEOUT_MS, graceMs: PEER_DOWN_GRACE_MS, rowGoneAfterKillMs: goneAfterMs, killedAt });
    expect(goneAfterMs).toBeGreaterThan(PEER_DOWN_GRACE_MS);
    await lab.bridgeA.start();
    await lab.bridgeB.waitPeerUp(a.name);
  });

  it('a bridge that joins late loads every registration of the cluster at once', async () => {
    await lab.bridgeB.stop();
    const all = users(labEnv().users.length);
    const phones: SipUa[] = [];
    for (const user of all) {
      const ua = await phone(user, a);
      await ua.register(300);
      phones.push(ua);
    }
    // A's bridge has written them all to the cluster state before B joins.
    await until(async () => (await Promise.all(all.map((u) => row(a, u)))).every((r) => r === a.info.ipv4), 20_000);
    const startedAt = Date.now();
    await lab.bridgeB.start();
    // Ready means committed (issue 12 item 8): the rows are read the moment /ready first answers 200.
    const readyAt = await until(async () => ((await lab.bridgeB.http('/ready')).status === 200 ? Date.now() : null), 30_000);
    const rowsAtReady = (await Promise.all(all.map((u) => row(b, u)))).filter((r) => r === a.info.ipv4).length;
    await until(async () => (await Promise.all(all.map((u) => row(b, u)))).every((r) => r === a.info.ipv4), 20_000);
    const allRowsAfterMs = Date.now() - startedAt;
    report('location-late-joiner', { rows: all.length, readyAfterStartMs: readyAt - startedAt, rowsAtReady, allRowsAfterStartMs: allRowsAfterMs });
    expect(rowsAtReady).toBe(all.length);
  });
});
