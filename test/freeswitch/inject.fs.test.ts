/**
 * Injection at the rate a real FreeSWITCH ingests: a burst of 50,000 events fired on
 * the legacy node (luarun, mod_event_multicast multicasts each) reaches the other
 * node's FreeSWITCH whole through its bridge, and the bridge counts no drop.
 * Measured first: 12,131 of 50,000 with one sendevent at a time and a count cap; the
 * legacy module on the receiving node lost 520 (docs/reliability.md).
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EslFrameParser } from '../../bridge/esl/frame-parser.js';
import { parsePlain } from '../../bridge/event/plain.js';
import { BridgeProcess, connectNodes, labEnv, type FsNode } from './lab.js';
import { report } from './notify-sequence.js';

const BURST = 50_000;
let nodes: { a: FsNode; b: FsNode; close: () => Promise<void> };
let legacy: FsNode;
let bridged: FsNode;
let bridge: BridgeProcess;
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
    const parser = new EslFrameParser({ maxFrameBytes: 64 * 1024 ** 2 });
    this.socket = net.connect(node.env.esl);
    this.subscribed = new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.on('data', (chunk) => {
        for (const frame of parser.push(chunk)) {
          const type = frame.headers['Content-Type'];
          if (type === 'auth/request') this.socket.write(`auth ${node.env.eslPassword}\n\nevent plain CUSTOM multicast::event\n\n`);
          else if (type === 'command/reply' && frame.headers['Reply-Text']?.startsWith('+OK event')) resolve();
          else if (type === 'text/event-plain') this.onEvent(frame.body!);
        }
      });
    });
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
  const answer = await legacy.api('load mod_event_multicast');
  moduleLoaded = answer.startsWith('+OK');
  bridge = await BridgeProcess.start(bridged, { nats: null, blf: false, location: false });
});

afterAll(async () => {
  await bridge?.cleanup();
  if (moduleLoaded) await legacy.api('unload mod_event_multicast');
  await nodes?.close();
});

describe('injection burst', () => {
  it(`${BURST.toLocaleString('en')} events fired on the legacy node all reach the bridged node's FreeSWITCH, none dropped`, async () => {
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
    report('inject-burst', figures);
    expect(figures.bridgeDrops).toBe(0);
    expect(figures.duplicates).toBe(0);
    expect(figures.delivered).toBe(BURST);
  }, 180_000);
});
