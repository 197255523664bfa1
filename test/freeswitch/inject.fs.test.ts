/**
 * Injection at the rate a real FreeSWITCH ingests: a burst of 50,000 events fired on
 * the legacy node (luarun, mod_event_multicast multicasts each) reaches the other
 * node's FreeSWITCH whole through its bridge, and the bridge counts no drop. With
 * FSB_FS_SECURE_KEY (no legacy node can take part) the burst goes bridge to bridge:
 * the node's own bridge reads it over ESL and sends it as secure multicast.
 * Measured first: 12,131 of 50,000 with one sendevent at a time and a count cap; the
 * legacy module on the receiving node lost 520 (docs/reliability.md).
 */
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePlain } from '../../bridge/event/plain.js';
import { BridgeProcess, connectNodes, labEnv, openRawEsl, type FsNode } from './lab.js';
import { report } from './notify-sequence.js';

const BURST = 50_000;
const SECURE = labEnv().secureKey !== null;
let nodes: { a: FsNode; b: FsNode; close: () => Promise<void> };
let legacy: FsNode;
let bridged: FsNode;
let bridge: BridgeProcess;
/** Secure mode: the bridge on the node where the burst is fired, in place of mod_event_multicast. */
let sender: BridgeProcess | null = null;
let moduleLoaded = false;

/**
 * Counts the multicast::event a node fires for one burst, on a raw ESL connection: an
 * EslClient would drop them, since the bridge marks what it injects with its loop guard.
 */
class BurstCounter {
  seen = new Set<string>();
  duplicates = 0;
  firstAt = 0;
  lastAt = 0;
  private readonly socket: net.Socket;
  private readonly subscribed: Promise<void>;

  constructor(node: FsNode, private readonly burstId: string) {
    const raw = openRawEsl(node.env, 'event plain CUSTOM multicast::event', (frame) => {
      if (frame.headers['Content-Type'] === 'text/event-plain') this.onEvent(frame.body!);
    });
    this.socket = raw.socket;
    this.subscribed = raw.ready;
  }

  ready(): Promise<void> {
    return this.subscribed;
  }

  private onEvent(body: Buffer): void {
    const event = parsePlain(body);
    if (event.get('Orig-Burst-Id') !== this.burstId) return;
    const seq = event.get('Orig-Burst-Seq')!;
    const now = Date.now();
    if (this.seen.size === 0) this.firstAt = now;
    this.lastAt = now;
    if (this.seen.has(seq)) this.duplicates++;
    else this.seen.add(seq);
  }

  /** Resolves when `count` arrived or nothing arrived for `idleMs`. */
  async settle(count: number, idleMs: number): Promise<void> {
    for (;;) {
      if (this.seen.size >= count) return;
      if (this.lastAt > 0 && Date.now() - this.lastAt > idleMs) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

beforeAll(async () => {
  nodes = await connectNodes();
  legacy = labEnv().legacyNode === 'a' ? nodes.a : nodes.b;
  bridged = legacy === nodes.a ? nodes.b : nodes.a;
  if (SECURE) {
    sender = await BridgeProcess.start(legacy, { nats: null, blf: false, location: false, bindings: 'RE_SCHEDULE' });
  } else {
    const answer = await legacy.api('load mod_event_multicast');
    moduleLoaded = answer.startsWith('+OK');
  }
  bridge = await BridgeProcess.start(bridged, { nats: null, blf: false, location: false });
});

afterAll(async () => {
  await bridge?.cleanup();
  await sender?.cleanup();
  if (moduleLoaded) await legacy.api('unload mod_event_multicast');
  await nodes?.close();
});

describe('injection burst', () => {
  const from = SECURE ? 'on a node, sent by its bridge as secure multicast,' : 'on the legacy node';
  it(`${BURST.toLocaleString('en')} events fired ${from} all reach the other node's FreeSWITCH, none dropped`, async () => {
    const burstId = `burst-${Date.now()}`;
    const counter = new BurstCounter(bridged, burstId);
    await counter.ready();
    const dropsBefore = await bridge.metric('fsb_drops_total');
    const firedAt = Date.now();
    // One Lua loop inside FreeSWITCH: about 1.7 s for 50,000 events on the lab machine.
    await legacy.api(
      `luarun ~for i=1,${BURST} do local e=freeswitch.Event('RE_SCHEDULE') e:addHeader('Burst-Id','${burstId}') e:addHeader('Burst-Seq',tostring(i)) e:fire() end`,
    );
    await counter.settle(BURST, 15_000);
    counter.close();
    const figures = {
      secure: SECURE,
      connections: Number(process.env.FSB_INJECT_CONNECTIONS ?? 2),
      fired: BURST,
      delivered: counter.seen.size,
      duplicates: counter.duplicates,
      firstAfterMs: counter.firstAt - firedAt,
      tookMs: counter.lastAt - firedAt,
      ratePerS: Math.round(counter.seen.size / ((counter.lastAt - firedAt) / 1000)),
      bridgeDrops: (await bridge.metric('fsb_drops_total')) - dropsBefore,
      received: await bridge.metric('fsb_events_in_total', { transport: 'multicast' }),
      unconfirmed: await bridge.metric('fsb_inject_unconfirmed_total'),
      kernelDrops: await bridge.metric('fsb_drops_total', { cause: 'kernel_rcvbuf' }),
    };
    const senderDrops = (await sender?.metric('fsb_drops_total')) ?? 0;
    report('inject-burst', { ...figures, senderDrops });
    expect(senderDrops).toBe(0);
    expect(figures.bridgeDrops).toBe(0);
    expect(figures.duplicates).toBe(0);
    expect(figures.delivered).toBe(BURST);
  }, 180_000);
});
