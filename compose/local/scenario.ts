/**
 * The demo's scripted day: phones register on the satellites, calls ring, are
 * answered and hang up, a satellite dies and comes back. `playScenario` drives a
 * LocalCluster through it and `checkFinalState` says, check by check, whether every
 * node ended where it should. `npm run demo -- --once` and test/e2e/demo.test.ts both
 * run exactly this.
 */
import type { ClusterNode, LocalCluster, NodeId } from './cluster.js';
import { modelLamps } from '../../test/support/sofia-presence-model.js';
import { presenceEvent, registerEvent, type CallPhase } from './events.js';

export type Lamp = 'idle' | 'ringing' | 'busy';

/**
 * Lamp per user on a node: what mod_sofia would show its phones for everything the
 * bridge injected or fired into it (test/support/sofia-presence-model.ts, checked on
 * real FreeSWITCH by npm run test:freeswitch).
 */
export function lampsOf(node: ClusterNode): Map<string, Lamp> {
  return modelLamps(node.sendevents());
}

export interface ScenarioOptions {
  /** Pause between steps so a watcher can follow (0 in --once). */
  pauseMs: number;
  /** One line per step. */
  log: (line: string) => void;
  /** How long to wait for the cluster to settle after each step. */
  timeoutMs?: number;
}

/** Where each phone is registered at the end, by user. */
const FINAL_LOCATIONS: Record<string, NodeId> = { '1000': 'sat1', '1001': 'sat2', '1002': 'sat1' };

async function until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function playScenario(cluster: LocalCluster, options: ScenarioOptions): Promise<void> {
  const { log, pauseMs } = options;
  const timeoutMs = options.timeoutMs ?? 15_000;
  const nodes = [...cluster.nodes.values()];
  const sat1 = cluster.node('sat1');
  const sat2 = cluster.node('sat2');
  const everywhere = (user: string, node: ClusterNode) =>
    until(`LOCATION_${user} = ${node.spec.ip} on every node`, () => nodes.every((n) => !n.bridgeRunning || n.location(user).join() === node.spec.ip), timeoutMs);
  const step = async (line: string, action: () => Promise<void>) => {
    log(line);
    await action();
    await sleep(pauseMs);
  };

  await step('every node sees the two others', () => until('all peers up', async () => (await Promise.all(nodes.map(async (n) => (await n.peers()).filter((p) => p.up).length))).every((n) => n === 2), timeoutMs));
  for (const [user, on] of [['1000', sat1], ['1001', sat2], ['1002', sat1]] as const) {
    await step(`phone ${user} registers on ${on.id} (${on.spec.ip})`, async () => {
      await on.fire(registerEvent(user));
      await everywhere(user, on);
    });
  }
  const call = async (user: string, on: ClusterNode, callId: string, phases: CallPhase[]) => {
    for (const phase of phases) {
      await step(`call ${callId} of ${user} on ${on.id}: ${phase}`, async () => {
        await on.fire(presenceEvent(phase, user, callId));
        const lamp = phase === 'ringing' ? 'ringing' : phase === 'answered' ? 'busy' : 'idle';
        await until(`${user}'s lamp ${lamp} on the other nodes`, () => nodes.filter((n) => n !== on && n.bridgeRunning).every((n) => lampsOf(n).get(user) === lamp), timeoutMs);
      });
    }
  };
  await call('1000', sat1, 'demo-call-1', ['ringing', 'answered', 'hangup']);
  await call('1001', sat2, 'demo-call-2', ['ringing', 'answered', 'hangup']);
  await call('1002', sat1, 'demo-call-3', ['ringing', 'answered']);

  await step(`${sat1.id} dies (its bridge is killed) while 1002 is on a call`, async () => {
    await sat1.stopBridge('SIGKILL');
    const others = nodes.filter((n) => n !== sat1);
    await until('fs-sat1 down on the others', async () => (await Promise.all(others.map(async (n) => (await n.peers()).some((p) => p.name === sat1.spec.switchname && !p.up)))).every(Boolean), timeoutMs);
    await until("fs-sat1's phones gone and 1002's lamp out on the others", () => others.every((n) => n.location('1000').length === 0 && n.location('1002').length === 0 && lampsOf(n).get('1002') === 'idle'), timeoutMs);
  });
  await step(`${sat1.id} comes back; its phones register again`, async () => {
    sat1.startBridge();
    await cluster.waitAllReady(timeoutMs * 2);
    for (const user of ['1000', '1002']) {
      await sat1.fire(registerEvent(user));
      await everywhere(user, sat1);
    }
    await until('every node sees the two others again', async () => (await Promise.all(nodes.map(async (n) => (await n.peers()).filter((p) => p.up).length))).every((n) => n === 2), timeoutMs);
  });
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** The state every node must end in: all peers up, the same location table everywhere, every lamp out. */
export async function checkFinalState(cluster: LocalCluster): Promise<Check[]> {
  const checks: Check[] = [];
  const nodes = [...cluster.nodes.values()];
  const expectedRows = Object.entries(FINAL_LOCATIONS)
    .map(([user, on]) => `${user}=${cluster.node(on).spec.ip}`)
    .sort();
  for (const node of nodes) {
    checks.push({ name: `${node.id}: bridge ready`, ok: await node.ready(), detail: node.bridgeRunning ? 'running' : 'not running' });
    const up = (await node.peers()).filter((p) => p.up).map((p) => p.name).sort();
    const wanted = nodes.filter((n) => n !== node).map((n) => n.spec.switchname).sort();
    checks.push({ name: `${node.id}: peers up`, ok: up.join() === wanted.join(), detail: `up: ${up.join(', ') || 'none'}; expected ${wanted.join(', ')}` });
    const rows = node
      .locationRows()
      .map((r) => `${r.user}=${r.data}`)
      .sort();
    checks.push({ name: `${node.id}: location table`, ok: rows.join() === expectedRows.join(), detail: `rows ${rows.join(' ') || 'none'}; expected ${expectedRows.join(' ')}` });
    const lit = [...lampsOf(node)].filter(([, lamp]) => lamp !== 'idle').map(([user, lamp]) => `${user}:${lamp}`);
    checks.push({ name: `${node.id}: every lamp out`, ok: lit.length === 0, detail: lit.length ? `lit: ${lit.join(' ')}` : 'all idle' });
  }
  return checks;
}
