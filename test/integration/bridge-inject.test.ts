import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { Bridge } from '../../bridge/bridge.js';
import { defaultConfigXml, loadConfigText } from '../../bridge/config/load.js';
import { InjectQueueFullError } from '../../bridge/errors.js';
import { FsEvent } from '../../bridge/event/event.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { LOOP_GUARD_HEADER, Transport, type BridgeEvent } from '../../bridge/pipeline/types.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { until } from '../support/wait.js';

/**
 * The bridge's injection path against the simulator: remote events and consumer events
 * share the injector, what the design removes is counted as filtered (an alert on
 * fsb_drops_total must mean loss), and what cannot be queued is counted once.
 */
let sim: EslSimulator | undefined;
let bridge: Bridge | undefined;

afterEach(async () => {
  await bridge?.stop();
  bridge = undefined;
  await sim?.stop();
  sim = undefined;
});

async function started(inject: Record<string, string> = {}): Promise<Bridge> {
  sim = await EslSimulator.start({ switchname: 'fs-b' });
  const xml = defaultConfigXml({
    settings: { 'node-name': 'fs-b', hostname: 'host-b', ipv4: '192.0.2.2', 'stats-interval': '0' },
    esl: { port: String(sim.port) },
    inject,
    multicast: { enabled: 'no' },
    metrics: { enabled: 'no' },
  });
  bridge = new Bridge(loadConfigText(xml, 'fs-b.xml', {}).config, { logger: silentLogger() });
  await bridge.start();
  expect(bridge.ready).toBe(true);
  return bridge;
}

async function counter(name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = bridge!.metrics.registry.getSingleMetric(name);
  if (!metric) return 0;
  return (await metric.get()).values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((n, v) => n + v.value, 0);
}

let seq = 0;
function remote(event: FsEvent, transport: Transport = Transport.Multicast): BridgeEvent {
  event.set('Core-UUID', 'a0a0a0a0-0000-4000-8000-00000000000a').set('Event-Sequence', String(++seq)).set('Multicast-Sender', 'fs-a');
  return { event, origin: { transport, node: 'fs-a', receivedAt: Date.now() } };
}

const injected = () => sim!.received.filter((e) => e.subclass === 'multicast::event');

describe('bridge injection', () => {
  it('leaves the SDP out by design: counted as filtered, not as a drop, and the rest of the event is injected', async () => {
    const b = await started();
    const answer = FsEvent.create('CHANNEL_ANSWER').add('Unique-ID', 'call-1').add('variable_switch_r_sdp', 'v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n');
    b.pipeline.remote(remote(answer));
    await until(() => injected().length === 1);
    const event = injected()[0];
    expect(event.get('Orig-Unique-ID')).toBe('call-1');
    expect(event.has('Orig-variable_switch_r_sdp')).toBe(false);
    expect(await counter('fsb_filtered_total', { cause: 'crlf_header_removed' })).toBe(1);
    expect(await counter('fsb_drops_total')).toBe(0);
    // Counted once FreeSWITCH answered.
    await until(async () => (await counter('fsb_injected_total', { transport: 'multicast' })) === 1);
  });

  it("sends a consumer's event through the injector, after the remote events of the same call, with the loop guard", async () => {
    const b = await started();
    sim!.setIngestRate(200_000);
    for (let i = 0; i < 50; i++) b.pipeline.remote(remote(FsEvent.create('CHANNEL_EXECUTE').add('Unique-ID', 'call-2').add('N', String(i))));
    await b.local.sendEvent(FsEvent.create('PRESENCE_IN').add('Unique-ID', 'call-2').add('N', 'consumer'));
    const last = sim!.received[sim!.received.length - 1];
    expect(last.name).toBe('PRESENCE_IN');
    expect(last.get(LOOP_GUARD_HEADER)).toBe('fs-b');
    // Everything of that call offered before it was in FreeSWITCH before it.
    expect(injected().map((e) => e.get('Orig-N'))).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
  });

  it('counts a multicast event the full queue cannot take once, and refuses a consumer event with a typed error', async () => {
    const b = await started({ 'queue-max-bytes': '1MB' });
    // FreeSWITCH takes 10 KB/s: the burst below fills the 1 MB queue at once.
    sim!.setIngestRate(10_000);
    const big = (i: number) => FsEvent.create('RE_SCHEDULE').add('Task-Desc', 'x'.repeat(2000)).add('N', String(i));
    let offered = 0;
    while ((await counter('fsb_drops_total', { cause: 'inject_queue_full' })) === 0 && offered < 5_000) b.pipeline.remote(remote(big(offered++)));
    expect(offered).toBeGreaterThan(100);
    expect(b.injector.bytes).toBeLessThan(1024 * 1024 + 4096);
    await expect(b.local.sendEvent(FsEvent.create('PRESENCE_IN').add('from', '1000@x'))).rejects.toBeInstanceOf(InjectQueueFullError);
    expect(await counter('fsb_drops_total')).toBe(1);
    // A copy of the refused event that arrives later (over NATS, say) is injected, not filtered as a duplicate.
    const refused = big(offered - 1);
    refused.set('Core-UUID', 'a0a0a0a0-0000-4000-8000-00000000000a').set('Event-Sequence', String(seq)).set('Multicast-Sender', 'fs-a');
    sim!.setIngestRate(0);
    await until(() => b.injector.length === 0, 30_000);
    b.pipeline.remote({ event: refused, origin: { transport: Transport.Nats, node: 'fs-a', receivedAt: Date.now() } });
    await until(() => injected().some((e) => e.get('Orig-N') === String(offered - 1)));
    expect(await counter('fsb_filtered_total', { cause: 'duplicate_nats' })).toBe(0);
  });

  it('a FreeSWITCH that closes the ESL connection with injections in flight: sent = injected + counted drops, each event once', async () => {
    const b = await started();
    // FreeSWITCH reads slowly: much of the burst is written and still unread when it drops every connection.
    sim!.setIngestRate(50_000);
    const sent = 300;
    for (let i = 0; i < sent; i++) b.pipeline.remote(remote(FsEvent.create('CUSTOM', 'test::cut').add('N', String(i))));
    await until(() => injected().length >= 10);
    const before = injected().length;
    await sim!.dropClients();
    expect(before).toBeLessThan(sent);
    sim!.setIngestRate(0);
    await until(async () => (await counter('fsb_injected_total', { transport: 'multicast' })) + (await counter('fsb_drops_total')) >= sent, 30_000);
    expect((await counter('fsb_injected_total', { transport: 'multicast' })) + (await counter('fsb_drops_total'))).toBe(sent);
    expect(await counter('fsb_inject_unconfirmed_total')).toBe(0);
    expect(await counter('fsb_inject_resent_total')).toBeGreaterThan(0);
    // Two injection connections, no order key: each once, in any order.
    const numbers = injected().map((e) => Number(e.get('Orig-N'))).sort((x, y) => x - y);
    expect(numbers).toEqual(Array.from({ length: sent }, (_, i) => i));
  });

  it('a queued injection keeps its command, not the remote event it was made from (what inject/queue-max-bytes counts is what it holds)', async () => {
    const b = await started();
    // FreeSWITCH reads nothing while the events are queued.
    sim!.setIngestRate(1);
    const events: WeakRef<FsEvent>[] = [];
    for (let i = 0; i < 200; i++) {
      const item = remote(FsEvent.create('CUSTOM', 'test::held').add('N', String(i)).add('Payload', 'x'.repeat(1000)));
      events.push(new WeakRef(item.event));
      b.pipeline.remote(item);
    }
    expect(b.injector.length).toBeGreaterThan(150);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // A WeakRef holds its target until the current job ends: collect, yield, collect.
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    const held = events.filter((ref) => ref.deref() !== undefined).length;
    // Before, every queued one was (200); the last one made may linger in a register.
    expect(held).toBeLessThanOrEqual(1);
    sim!.setIngestRate(0);
    await until(() => b.injector.length === 0, 20_000);
    expect(new Set(injected().map((e) => e.get('Orig-N'))).size).toBe(200);
  });
});
