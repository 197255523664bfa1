/**
 * Per-sender state stays bounded whatever senders the wire invents (issue 13, items 8
 * and 15): a flood of fake senders makes at most max-peers peers, at most
 * max-peers node label values, a bounded number of peer events injected into
 * FreeSWITCH and of log lines, and every peer event is accounted for (injected, or
 * counted as a peer_event_rate drop). A sender name FreeSWITCH could never have is
 * refused and counted; a header whose name holds ':' is left out, not the event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Bridge, PEER_EVENT_BUDGET } from '../../bridge/bridge.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { FsEvent } from '../../bridge/event/event.js';
import { Metrics, OTHER_NODE } from '../../bridge/observability/metrics.js';
import type { BridgeEvent } from '../../bridge/pipeline/types.js';
import { encodeDatagram } from '../../bridge/transports/multicast/codec.js';
import type { MulticastSocket } from '../../bridge/transports/multicast/socket.js';
import { MulticastSource } from '../../bridge/transports/multicast/source.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { until } from '../support/wait.js';

const MAX_PEERS = 40;
const SENDERS = 2_000;
let sim: EslSimulator;
let bridge: Bridge;
const logLines: Record<string, unknown>[] = [];
let sequence = 0;

function fromSender(node: string, name = 'HEARTBEAT', extra: [string, string][] = []): BridgeEvent {
  const event = FsEvent.create(name).add('Core-UUID', `uuid-${node}`).add('Event-Sequence', String(++sequence));
  for (const [n, v] of extra) event.add(n, v);
  return { event, origin: { transport: 'multicast', node, receivedAt: Date.now() } };
}

async function value(name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = bridge.metrics.registry.getSingleMetric(name);
  if (!metric) return 0;
  return (await metric.get()).values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((n, v) => n + v.value, 0);
}

const peerInjections = () => sim.received.filter((e) => e.subclass === 'multicast::peerup' || e.subclass === 'multicast::peerdown');

beforeAll(async () => {
  sim = await EslSimulator.start({ switchname: 'fs-local' });
  const xml = defaultConfigXml({
    settings: { 'node-name': 'fs-local', 'stats-interval': '0' },
    esl: { port: String(sim.port) },
    multicast: { enabled: 'no', 'peer-timeout': '300ms', 'peer-forget': '1s', 'max-peers': String(MAX_PEERS) },
    metrics: { enabled: 'no' },
  });
  const { config } = loadConfigText(xml, 'flood.xml', {});
  const logger = pino({ level: 'info' }, { write: (line: string) => logLines.push(JSON.parse(line) as Record<string, unknown>) });
  bridge = new Bridge(config, { logger, metrics: new Metrics({ maxNodeLabels: MAX_PEERS }) });
  await bridge.start();
});

afterAll(async () => {
  await bridge?.stop();
  await sim?.stop();
});

describe('a flood of invented senders', () => {
  it('holds at most max-peers, injects a bounded number of peer events, logs a bounded number of lines, and accounts for every peer event', async () => {
    const started = Date.now();
    for (let i = 0; i < SENDERS; i++) bridge.remote(fromSender(`fake-${i}`));
    expect(bridge.peers.counts()).toEqual({ held: MAX_PEERS, up: MAX_PEERS });
    expect(await value('fsb_peers_untracked_events_total')).toBe(SENDERS - MAX_PEERS);
    // The tracked ones time out; their places go to a second wave.
    await until(() => bridge.peers.counts().up === 0);
    for (let i = 0; i < SENDERS; i++) bridge.remote(fromSender(`second-${i}`));
    expect(bridge.peers.counts().held).toBe(MAX_PEERS);
    await until(() => bridge.peers.counts().up === 0);

    const peerEvents = await value('fsb_peer_events_total');
    // Two waves of MAX_PEERS, each up then down.
    expect(peerEvents).toBe(4 * MAX_PEERS);
    const budgetDrops = await value('fsb_drops_total', { cause: 'peer_event_rate' });
    await until(async () => peerInjections().length + (await value('fsb_drops_total', { cause: 'inject_failed' })) === peerEvents - budgetDrops);
    // What FreeSWITCH got is bounded by the budget per 10 s window, however long this took.
    const windows = Math.ceil((Date.now() - started) / 10_000) + 1;
    expect(peerInjections().length).toBeLessThanOrEqual(PEER_EVENT_BUDGET * windows);
    expect(budgetDrops).toBeGreaterThan(0);
    const peerLines = logLines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('peer '));
    expect(peerLines.length).toBeLessThanOrEqual(20 * windows);
    // Every peer event reached the consumers' stream, whatever FreeSWITCH got.
    expect(peerLines.length).toBeLessThan(peerEvents);
  });

  it('refuses a sender name with CR/LF/NUL (counted as bad_sender): nothing injected, no peer', async () => {
    for (const name of ['evil\r\nPeer: fs-a', 'nul\0node']) bridge.remote(fromSender(name));
    expect(await value('fsb_drops_total', { cause: 'bad_sender' })).toBe(2);
    expect(bridge.peers.list().some((p) => p.name.includes('evil') || p.name.includes('nul'))).toBe(false);
    // A later good event proves the injection path ran meanwhile (injections are written in order).
    bridge.remote(fromSender('fs-good', 'PRESENCE_IN'));
    await until(() => sim.received.some((e) => e.get('Orig-Multicast-Sender') === 'fs-good'));
    expect(sim.received.filter((e) => /evil|nul/.test(e.get('Orig-Multicast-Sender') ?? '') || /evil|nul/.test(e.get('Peer') ?? ''))).toEqual([]);
  });

  it('a header whose name holds ":" is left out of the injection (counted as filtered), the event is injected', async () => {
    bridge.remote(fromSender('fs-colon', 'PRESENCE_IN', [['a:b', 'v'], ['Keep-Me', 'yes']]));
    const injected = await until(() => sim.received.find((e) => e.get('Orig-Multicast-Sender') === 'fs-colon'));
    expect(injected.get('Orig-Keep-Me')).toBe('yes');
    expect(injected.headers.some(([name]) => name.includes('a:b'))).toBe(false);
    expect(await value('fsb_filtered_total', { cause: 'colon_header_removed' })).toBe(1);
  });
});

describe('node label cardinality', () => {
  it('a multicast source gives the first max-peers senders their own series, the rest one _other series', async () => {
    const metrics = new Metrics({ maxNodeLabels: 10 });
    const socket = { setListener: () => undefined, acquire: async () => undefined, release: async () => undefined, ownSkipped: () => 0, kernelDrops: () => null } as unknown as MulticastSocket;
    const source = new MulticastSource(socket, { nodeName: 'fs-local', psk: null, maxDatagramBytes: 65_507, metrics, logger: pino({ level: 'silent' }) });
    let delivered = 0;
    await source.start(() => delivered++);
    for (let i = 0; i < 500; i++) {
      const event = FsEvent.create('HEARTBEAT').add('Core-UUID', `u-${i}`).add('Event-Sequence', '1');
      source.process(encodeDatagram(event, `fake-${i}`, null));
    }
    expect(delivered).toBe(500);
    const series = (await metrics.eventsIn.get()).values;
    expect(series).toHaveLength(10 + 1);
    expect(series.find((v) => v.labels.node === OTHER_NODE)?.value).toBe(490);
    expect(series.reduce((n, v) => n + v.value, 0)).toBe(500);
  });
});
