import { Bridge, boardUrl } from '../../bridge/bridge.js';
import { consumersFor } from '../../bridge/cli/commands/run.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import type { Lamp } from '../../bridge/consumer.js';
import type { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { presenceEvent, type CallPhase } from '../../compose/local/events.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { startNatsServer } from '../support/nats-server.js';
import type { BenchCase } from './types.js';

const LAMP_OF: Record<CallPhase, Lamp['state']> = { ringing: 'ringing', answered: 'busy', hangup: 'idle' };

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * How fast the cluster board shows a lamp (target: within 200 ms of the event reaching
 * the bridge). Bridge B fires each phase of a call; bridge A, the board's, receives it
 * over NATS. Measured on A's clock from the event's arrival at A (the lamp's `since`)
 * to the `lamp` frame read by a server-sent events client on A's board. Baseline, the
 * same events in the same run: arrival at A to A's FreeSWITCH (the ESL simulator)
 * receiving the injected multicast::event, i.e. what mod_sofia needs to notify phones.
 * Both bridges run in this process; the browser's own drawing (about a frame) is not in
 * the figure: the chromium tests print it (test/e2e/board.test.ts).
 */
export const boardLatency: BenchCase = async ({ quick }) => {
  const calls = quick ? 40 : 300;
  const nats = await startNatsServer();
  const sims: EslSimulator[] = [];
  const bridges: Bridge[] = [];
  const controller = new AbortController();
  try {
    for (const [name, ipv4] of [['fs-a', '192.0.2.1'], ['fs-b', '192.0.2.2']] as const) {
      const sim = await EslSimulator.start({ switchname: name, hostname: `host-${name}`, ipv4 });
      sims.push(sim);
      const xml = defaultConfigXml({
        settings: { 'node-name': name, hostname: `host-${name}`, ipv4, cluster: 'bench', 'stats-interval': '0' },
        esl: { port: String(sim.port) },
        multicast: { enabled: 'no' },
        nats: { enabled: 'yes', servers: nats.url },
        'consumer:blf': { enabled: 'yes' },
        metrics: { enabled: 'yes', host: '127.0.0.1', port: '0', board: name === 'fs-a' ? 'yes' : 'no' },
      });
      const { config } = loadConfigText(xml, `${name}.xml`);
      const bridge = new Bridge(config, { logger: silentLogger(), consumers: consumersFor(config) });
      await bridge.start();
      bridges.push(bridge);
    }
    const [simA, simB] = sims;

    const frames = new Map<string, { since: number; at: number }>();
    const injected = new Map<string, number>();
    const key = (call: string, state: string) => `${call} ${state}`;
    simA.on('sendevent', (event: FsEvent) => {
      if (event.subclass !== 'multicast::event' || event.get('Orig-Event-Name') !== 'PRESENCE_IN') return;
      const call = event.get('Orig-Unique-ID') ?? '';
      const status = event.get('Orig-status') ?? '';
      const state = status === 'CS_ROUTING' ? 'ringing' : status === 'CS_HANGUP' ? 'idle' : 'busy';
      injected.set(key(call, state), Date.now());
    });
    const response = await fetch(`${boardUrl(bridges[0].statusEndpoint!)}events`, { signal: controller.signal });
    const reading = (async () => {
      const decoder = new TextDecoder();
      let buffered = '';
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        const at = Date.now();
        buffered += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const frame = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          if (!frame.startsWith('event: lamp\n')) continue;
          for (const lamp of JSON.parse(frame.slice(frame.indexOf('data: ') + 6)) as Lamp[]) frames.set(key(lamp.user.split('@')[0], lamp.state), { since: lamp.since, at });
        }
      }
    })().catch(() => undefined);

    const board: number[] = [];
    const inject: number[] = [];
    for (let i = 0; i < calls; i++) {
      const user = `bench${i}`;
      const call = `bench-call-${i}`;
      for (const phase of ['ringing', 'answered', 'hangup'] as const) {
        simB.fire(presenceEvent(phase, user, call, 'bench.example'));
        const frameKey = key(user, LAMP_OF[phase]);
        const injectKey = key(call, LAMP_OF[phase]);
        const deadline = Date.now() + 10_000;
        while (!(frames.has(frameKey) && injected.has(injectKey))) {
          if (Date.now() > deadline) throw new Error(`no lamp frame or injection for ${call} ${phase} within 10 s`);
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        const frame = frames.get(frameKey)!;
        board.push(frame.at - frame.since);
        inject.push(injected.get(injectKey)! - frame.since);
      }
    }
    controller.abort();
    await reading;

    board.sort((a, b) => a - b);
    inject.sort((a, b) => a - b);
    const notes = `lower is better; ratio = value/baseline. ${board.length} lamp changes (${calls} calls x ringing, busy, idle), one at a time; both bridges and nats-server on this host, NATS between them; ms resolution (Date.now)`;
    return [50, 99].map((p) => {
      const value = percentile(board, p);
      const baseline = percentile(inject, p);
      return {
        case: `board_lamp_p${p}_ms`,
        value,
        unit: 'ms',
        baseline: `p${p} from the same events reaching bridge A to A's FreeSWITCH receiving the injection`,
        baseline_value: baseline,
        ratio: baseline > 0 ? value / baseline : value,
        target: 200,
        met: value <= 200,
        notes,
      };
    });
  } finally {
    controller.abort();
    for (const bridge of bridges) await bridge.stop();
    for (const sim of sims) await sim.stop();
    await nats.dispose();
  }
};
