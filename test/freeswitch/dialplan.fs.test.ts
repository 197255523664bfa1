/**
 * config/dialplan/ on a vanilla 1.10 config, installed as its README says: a call from a
 * phone on B to a user registered on A completes, routed through A ("owner") or dialed
 * to the contact mod_sofia imported on B ("direct").
 *
 * The test edits the nodes' configuration files (the conf dir each node reports over
 * ESL, which must be writable from where the suite runs), and restores them afterwards.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NatsServer } from '../support/nats-server.js';
import { until } from '../support/wait.js';
import { BridgeProcess, closePhones, connectNodes, labEnv, phone, startLabNats, users, type FsNode } from './lab.js';
import { report } from './notify-sequence.js';

const EXAMPLE = fileURLToPath(new URL('../../config/dialplan/cluster_location.xml', import.meta.url));
const INCLUDE = '<X-PRE-PROCESS cmd="include" data="cluster/*.xml"/>';

let a: FsNode;
let b: FsNode;
let closeNodes: () => Promise<void>;
let nats: NatsServer;
const bridges: BridgeProcess[] = [];
const restore: (() => void)[] = [];

/** Replaces `file` with `edit(file)`, remembering how to put it back. */
function editFile(file: string, edit: (text: string) => string): void {
  const before = readFileSync(file, 'utf8');
  const after = edit(before);
  if (after === before) return;
  writeFileSync(file, after);
  restore.push(() => writeFileSync(file, before));
}

/** The README's steps 1-3 on one node: the file, the include before Local_Extension, the other node trusted. */
function install(node: FsNode, other: FsNode): void {
  const dir = join(node.info.confDir, 'dialplan', 'cluster');
  const created = !existsSync(dir);
  mkdirSync(dir, { recursive: true });
  copyFileSync(EXAMPLE, join(dir, 'cluster_location.xml'));
  restore.push(() => rmSync(created ? dir : join(dir, 'cluster_location.xml'), { recursive: true, force: true }));
  editFile(join(node.info.confDir, 'dialplan', 'default.xml'), (text) => {
    if (text.includes(INCLUDE)) return text;
    const at = text.indexOf('<extension name="Local_Extension">');
    if (at < 0) throw new Error(`${node.name}: no Local_Extension in dialplan/default.xml`);
    return `${text.slice(0, at)}${INCLUDE}\n    ${text.slice(at)}`;
  });
  editFile(join(node.info.confDir, 'autoload_configs', 'acl.conf.xml'), (text) => {
    const trust = `<node type="allow" cidr="${other.info.ipv4}/32"/>`;
    if (text.includes(trust)) return text;
    return text.replace(/(<list name="domains" default="deny">)/, `$1\n      ${trust}`);
  });
}

beforeAll(async () => {
  ({ a, b, close: closeNodes } = await connectNodes());
  nats = await startLabNats();
  const env = labEnv();
  // Each row names the node's SIP address:port, which the dialplan dials.
  const overrides = `${a.name}=${env.a.sip.host}:${env.a.sip.port},${b.name}=${env.b.sip.host}:${env.b.sip.port}`;
  for (const node of [a, b]) bridges.push(await BridgeProcess.start(node, { nats, blf: false, location: { addressOverrides: overrides } }));
  install(a, b);
  install(b, a);
  for (const node of [a, b]) {
    await node.api('reloadxml');
    await node.api('reloadacl');
  }
});

afterAll(async () => {
  await closePhones();
  for (const undo of restore.reverse()) undo();
  for (const node of [a, b]) {
    await node?.api('global_setvar cluster_routing=');
    await node?.api('reloadxml');
    await node?.api('reloadacl');
  }
  for (const bridge of bridges) await bridge.cleanup();
  await nats?.stop();
  await closeNodes?.();
});

afterEach(closePhones);

async function callFromBToUserOnA(mode: 'owner' | 'direct') {
  const env = labEnv();
  for (const node of [a, b]) await node.api(`global_setvar cluster_routing=${mode}`);
  const [caller, callee] = users(2);
  const calleePhone = await phone(callee, a, { autoAnswer: { ringMs: 200 } });
  await calleePhone.register(120);
  // B's location table names A for the callee (the location consumer, over the bridges).
  const row = await until(async () => ((await b.dbSelect(env.domain, `LOCATION_${callee}`)) === `${env.a.sip.host}:${env.a.sip.port}` ? 'row' : ''), 15_000);
  expect(row).toBe('row');
  if (mode === 'direct') {
    // Direct dialing needs mod_sofia's own import of the registration on B (its SQL runs a little after the event).
    await until(async () => (await b.api('sofia status profile internal reg')).includes(`User:       \t${callee}@`), 15_000);
  }
  const callerPhone = await phone(caller, b);
  await callerPhone.register(120);
  const startedAt = Date.now();
  const call = await callerPhone.call(callee, { timeoutMs: 30_000 });
  await call.answered;
  const answeredAfterMs = Date.now() - startedAt;
  // The callee's phone itself answered (not a voicemail fallback of the dialplan).
  const incoming = await calleePhone.nextIncomingCall(5_000);
  await incoming.answered;
  await call.hangup();
  await incoming.ended;
  const invite = calleePhone.lastInviteFrom;
  report(`dialplan-${mode}`, { caller, callee, answeredAfterMs, calleeInviteFrom: invite });
  return { invite };
}

describe('cluster dialplan on a vanilla config', () => {
  it('owner mode: a phone on B calls a user registered on A; B routes through A, which rings its phone', async () => {
    const { invite } = await callFromBToUserOnA('owner');
    const env = labEnv();
    // The callee's phone was rung by A, its registrar.
    expect(invite).toBe(`${env.a.sip.host}:${env.a.sip.port}`);
  });

  it('direct mode: B dials the contact mod_sofia imported from A (no hop through A)', async () => {
    const { invite } = await callFromBToUserOnA('direct');
    const env = labEnv();
    expect(invite).toBe(`${env.b.sip.host}:${env.b.sip.port}`);
  });
});
