import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfigXml } from '../../bridge/config/load.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { connectNats, NatsClient } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { cliArgs, loggedStatus } from '../support/cli.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { natsTestConfig, startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { CHILD_START_MS, CHILD_TEST_MS, until } from '../support/wait.js';

/**
 * The exactly-once story across `kill -9` of a bridge fed by JetStream:
 * - a message is acknowledged only once FreeSWITCH answered its injection, so one the
 *   bridge had not injected when it died comes again and is injected then (not lost);
 * - the dedup journal records each event as its sendevent reaches the kernel, so one
 *   FreeSWITCH had already taken (its reply unread when the bridge died) comes again
 *   and is recognised, not injected a second time.
 */
const CLUSTER = 'crash';
const CORE_A = '7a0c1e52-3f1d-4a5e-9d7e-00000000000a';
let nats: NatsServer;
let nc: NatsConnection;
let dir: string;
let sim: EslSimulator;
let publisherClient: NatsClient;
let publisher: NatsPublisher;
const children: ChildProcess[] = [];
let config: string;
/** The status server of the bridge running now: each start binds a port of its own (metrics port 0). */
let statusUrl = '';
let seq = 0;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectNats({ servers: [nats.url], auth: {}, tls: null }, { logger: silentLogger() });
  dir = mkdtempSync(join(tmpdir(), `fsb-crash-${process.pid}-`));
  sim = await EslSimulator.start({ switchname: 'fs-b', hostname: 'host-b' });
  config = join(dir, 'fs-b.xml');
  writeFileSync(
    config,
    defaultConfigXml({
      settings: { 'node-name': 'fs-b', hostname: 'host-b', ipv4: '192.0.2.2', cluster: CLUSTER, 'stats-interval': '0' },
      esl: { port: String(sim.port), 'reconnect-max': '200ms' },
      multicast: { enabled: 'no' },
      nats: { enabled: 'yes', servers: nats.url, 'ack-wait': '1s' },
      dedup: { journal: join(dir, 'injected.journal') },
      metrics: { enabled: 'yes', port: '0' },
    }),
  );
  const natsConfig = natsTestConfig([nats.url]);
  publisherClient = new NatsClient(natsConfig, { logger: silentLogger() });
  publisher = new NatsPublisher(natsConfig, { client: publisherClient, node: testNode('fs-a', CLUSTER), metrics: new Metrics(), logger: silentLogger() });
  await publisher.start();
}, 30_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await publisher?.stop();
  await publisherClient?.close();
  await nc?.close();
  await sim?.stop();
  await nats?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Starts a bridge and waits for its "bridge started" line, which names the port its status server got. */
async function startBridge(): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, cliArgs(['run', '--config', config]), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  children.push(child);
  statusUrl = (
    await until(() => loggedStatus(output, 'bridge started'), CHILD_START_MS).catch((err: Error) => {
      throw new Error(`${err.message}\n${output}`);
    })
  ).url;
  return { child, output: () => output };
}

async function kill9(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${statusUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

async function bridgeReady(): Promise<boolean> {
  try {
    return (await fetch(`${statusUrl}/ready`)).status === 200;
  } catch {
    return false;
  }
}

/** Events fired on node A, numbered by a Burst-Seq header. */
function publish(count: number): number[] {
  const seqs: number[] = [];
  for (let i = 0; i < count; i++) {
    seq++;
    seqs.push(seq);
    const event: FsEvent = testEvent(CORE_A, seq, 'RE_SCHEDULE', undefined, [['Burst-Seq', String(seq)]]);
    publisher.deliver({ event, origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
  }
  return seqs;
}

/** How many times FreeSWITCH (the simulator) was given each Burst-Seq. */
function injectedCounts(): Map<number, number> {
  const counts = new Map<number, number>();
  for (const e of sim.received) {
    const s = e.get('Orig-Burst-Seq');
    if (e.subclass === 'multicast::event' && s !== undefined) counts.set(Number(s), (counts.get(Number(s)) ?? 0) + 1);
  }
  return counts;
}

async function consumerSettled(): Promise<boolean> {
  const info = await (await jetstreamManager(nc)).consumers.info('FS_EVENTS', 'fsb-fs-b');
  return info.num_ack_pending === 0 && info.num_pending === 0;
}

describe('kill -9 of a bridge fed by JetStream', () => {
  it('injects what FreeSWITCH had already taken once, not twice, after the restart', async () => {
    sim.holdReplies(true);
    // Started, so its durable consumer exists (a new one delivers only what comes after it), and ready.
    const first = await startBridge();
    await until(bridgeReady, 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${first.output()}`);
    });
    const seqs = publish(50);
    // FreeSWITCH fired all 50; the bridge never read a reply, so it acknowledged nothing.
    await until(() => seqs.every((s) => injectedCounts().get(s) === 1), 20_000).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify([...injectedCounts()])} ${sim.received.length} received\n${first.output()}`);
    });
    const journal = readFileSync(join(dir, 'injected.journal'), 'latin1');
    expect(journal.trim().split('\n')).toHaveLength(50);
    expect((await (await jetstreamManager(nc)).consumers.info('FS_EVENTS', 'fsb-fs-b')).num_ack_pending).toBe(50);
    await kill9(first.child);

    sim.holdReplies(false);
    const second = await startBridge();
    // JetStream redelivers the 50 after ack-wait; the journal recognises every one.
    await until(consumerSettled, 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${second.output()}`);
    });
    await until(async () => (await metric('fsb_filtered_total', { cause: 'duplicate_nats' })) >= 50, 10_000);
    expect(seqs.map((s) => injectedCounts().get(s))).toEqual(seqs.map(() => 1));
    expect(await metric('fsb_drops_total')).toBe(0);
    expect(second.output()).toMatch(/dedup journal loaded/);
    await kill9(second.child);
  }, CHILD_TEST_MS);

  it('injects what it received but had not written when it died, after the restart (nothing acknowledged is lost)', async () => {
    // FreeSWITCH is down: the bridge takes the messages from NATS and can only queue them.
    await sim.stop();
    const third = await startBridge();
    const seqs = publish(30);
    // (The bridge waits for FreeSWITCH up to 10 s before it starts its sources anyway.)
    await until(async () => (await metric('fsb_queue_depth', { component: 'inject' }).catch(() => 0)) === 30, 40_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${third.output()}`);
    });
    await kill9(third.child);

    await sim.restart();
    const fourth = await startBridge();
    await until(() => seqs.every((s) => injectedCounts().get(s) === 1), 30_000).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify([...injectedCounts()])}\n${fourth.output()}`);
    });
    await until(consumerSettled, 30_000);
    expect(seqs.map((s) => injectedCounts().get(s))).toEqual(seqs.map(() => 1));
    expect(await metric('fsb_injected_total', { transport: 'nats' })).toBe(30);
    await kill9(fourth.child);
  }, CHILD_TEST_MS);
});
