/**
 * `node dist/test/bench/peer-flood.js [--senders 20000] [--rate 4000]`: what invented
 * senders cost a bridge (issue 13, item 8). Inside a fresh network namespace: an ESL
 * simulator (compose/local/node-agent) for FreeSWITCH, the bridge as deployed
 * (`fs-event-bridge run`), and a flooder sending one HEARTBEAT datagram from each of
 * N different Multicast-Sender names. Prints, before the flood and after the peers
 * timed out: the bridge's RSS, the peers it holds, its node-labelled metric series,
 * the peerup/peerdown it injected into FreeSWITCH and its peer log lines.
 *
 * Uses only the CLI and the node agent, so the same file measures an older checkout
 * (the "before" figures in docs/reliability.md came from main before the fix).
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultConfigXml } from '../../bridge/config/load.js';
import { FsEvent } from '../../bridge/event/event.js';
import { encodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { launch, stopChild } from '../../compose/local/launcher.js';
import { isPositive, numberOption } from '../support/cli-options.js';
import { createNetns } from '../support/netns.js';

const GROUP = '239.1.7.7';
const PORT = 14242;
const ESL_PORT = 8021;
const STATUS_PORT = 9464;
const PEER_TIMEOUT_MS = 5_000;
const arg = (name: string, fallback: number) => numberOption('peer-flood', name, fallback, isPositive, 'a positive number');

/** The flooder, run inside the namespace: one HEARTBEAT from each invented sender, paced. */
async function flood(senders: number, rate: number, distinct: boolean): Promise<void> {
  const socket = createSocket({ type: 'udp4' });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  socket.setMulticastInterface('127.0.0.1');
  socket.setMulticastTTL(0);
  const perTick = Math.max(1, Math.round(rate / 50));
  for (let i = 0; i < senders; i += perTick) {
    const batch: Promise<void>[] = [];
    for (let j = i; j < Math.min(senders, i + perTick); j++) {
      const event = FsEvent.create('HEARTBEAT')
        .add('Core-UUID', distinct ? `00000000-0000-4000-8000-${String(j).padStart(12, '0')}` : '00000000-0000-4000-8000-000000000000')
        .add('Event-Date-Timestamp', `${Date.now()}000`)
        .add('Event-Sequence', distinct ? '1' : String(j + 1))
        .add('Event-Info', 'System Ready');
      const datagram = encodeDatagram(event, distinct ? `fake-${j}` : 'fake-one', null);
      batch.push(new Promise((resolve) => socket.send(datagram, PORT, GROUP, () => resolve())));
    }
    await Promise.all(batch);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  socket.close();
}

interface Snapshot {
  rssMB: number;
  peers: number;
  nodeSeries: number;
  peerInjections: number;
  peerLogLines: number;
}

async function main(): Promise<void> {
  if (process.argv.includes('--flood')) {
    await flood(arg('senders', 20_000), arg('rate', 4_000), process.argv.includes('--distinct'));
    return;
  }
  const senders = arg('senders', 20_000);
  const rate = arg('rate', 4_000);
  // Baseline first: the same number of datagrams from one sender, so what remains is the cost per sender.
  const oneSender = await measure(senders, rate, false);
  const distinct = await measure(senders, rate, true);
  process.stdout.write(JSON.stringify({ senders, rate, peerTimeoutMs: PEER_TIMEOUT_MS, oneSender, distinct, perSenderRssMB: Math.round((distinct.rssGrowthMB - oneSender.rssGrowthMB) * 10) / 10 }, null, 2) + '\n');
}

async function measure(senders: number, rate: number, distinct: boolean): Promise<{ before: Snapshot; after: Snapshot; rssGrowthMB: number }> {
  const netns = createNetns('pflood');
  const dir = mkdtempSync(join(tmpdir(), 'fsb-peer-flood-'));
  const config = join(dir, 'bridge.xml');
  writeFileSync(
    config,
    defaultConfigXml({
      settings: { 'node-name': 'fs-local', 'stats-interval': '0' },
      esl: { port: String(ESL_PORT) },
      multicast: { address: GROUP, port: String(PORT), interface: '127.0.0.1', ttl: '0', 'peer-timeout': `${PEER_TIMEOUT_MS}ms` },
      metrics: { host: '127.0.0.1', port: String(STATUS_PORT) },
    }),
  );
  const agentConfig = { switchname: 'fs-local', hostname: 'fs-local', ipv4: '127.0.0.1', eslPort: ESL_PORT, heartbeatMs: 20_000, statusUrl: `http://127.0.0.1:${STATUS_PORT}`, multicast: null };
  const agent = launch(netns.name, 'compose/local/node-agent', [JSON.stringify(agentConfig)]);
  let peerInjections = 0;
  let agentOut = '';
  const pending = new Map<number, (body: string) => void>();
  let nextId = 1;
  agent.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    agentOut += chunk;
    let eol: number;
    while ((eol = agentOut.indexOf('\n')) >= 0) {
      const line = agentOut.slice(0, eol);
      agentOut = agentOut.slice(eol + 1);
      if (line.trim() === '') continue;
      const report = JSON.parse(line) as { type: string; id?: number; body?: string; headers?: [string, string][] };
      if (report.type === 'sendevent' && report.headers!.some(([n, v]) => n === 'Event-Subclass' && (v === 'multicast::peerup' || v === 'multicast::peerdown'))) peerInjections++;
      if ((report.type === 'done' || report.type === 'error') && report.id !== undefined) pending.get(report.id)?.(report.body ?? '');
    }
  });
  const http = (path: string) =>
    new Promise<string>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      agent.stdin!.write(JSON.stringify({ cmd: 'http', id, path }) + '\n');
    });
  const bridge = launch(netns.name, 'bridge/cli/main', ['run', '--config', config]);
  let peerLogLines = 0;
  let bridgeOut = '';
  bridge.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    bridgeOut += chunk;
    let eol: number;
    while ((eol = bridgeOut.indexOf('\n')) >= 0) {
      const line = bridgeOut.slice(0, eol);
      bridgeOut = bridgeOut.slice(eol + 1);
      if (/"msg":"peer /.test(line)) peerLogLines++;
    }
  });
  bridge.stderr!.setEncoding('utf8').on('data', (chunk: string) => process.stderr.write(chunk));
  try {
    for (;;) {
      const ready = await http('/ready').catch(() => '');
      if (ready.includes('"ready":true')) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const snapshot = async (): Promise<Snapshot> => {
      const status = readFileSync(`/proc/${bridge.pid}/status`, 'utf8');
      const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
      const peers = (JSON.parse(await http('/peers')) as unknown[]).length;
      const metrics = await http('/metrics');
      const nodeSeries = metrics.split('\n').filter((l) => !l.startsWith('#') && /node="/.test(l)).length;
      return { rssMB: Math.round(rssKb / 102.4) / 10, peers, nodeSeries, peerInjections, peerLogLines };
    };
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const before = await snapshot();
    const self = fileURLToPath(import.meta.url);
    const flags = ['--flood', '--senders', String(senders), '--rate', String(rate), ...(distinct ? ['--distinct'] : [])];
    const flooder = spawn('ip', ['netns', 'exec', netns.name, process.execPath, '--openssl-legacy-provider', self, ...flags], { stdio: 'inherit' });
    await new Promise((resolve) => flooder.once('exit', resolve));
    // Every tracked peer times out (peer-timeout) and is checked (a quarter of it later).
    await new Promise((resolve) => setTimeout(resolve, PEER_TIMEOUT_MS * 2));
    const after = await snapshot();
    return { before, after, rssGrowthMB: Math.round((after.rssMB - before.rssMB) * 10) / 10 };
  } finally {
    await stopChild(bridge);
    agent.stdin!.end();
    await stopChild(agent);
    netns.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
