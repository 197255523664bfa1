import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Command } from 'commander';
import { registerReplay, runReplay } from '../../bridge/cli/commands/replay.js';
import { registerTail, runTail, type NatsTargetResolver } from '../../bridge/cli/commands/tail.js';
import { parseJson } from '../../bridge/event/json.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import { NatsClient } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { natsTestConfig, startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { sleep, until } from '../support/wait.js';

const logger = silentLogger();

describe('tail and replay commands (real nats-server)', () => {
  let server: NatsServer;
  let client: NatsClient;
  let publisherA: NatsPublisher;
  let publisherB: NatsPublisher;
  let resolve: NatsTargetResolver;

  beforeAll(async () => {
    server = await startNatsServer();
    const config = natsTestConfig([server.url], { stream: { ...natsTestConfig([]).stream, name: 'CLI' } });
    client = new NatsClient(config, { logger });
    publisherA = new NatsPublisher(config, { client, node: testNode('fs-a', 'cli'), metrics: new Metrics(), logger });
    publisherB = new NatsPublisher(config, { client, node: testNode('fs-b', 'cli'), metrics: new Metrics(), logger });
    await publisherA.start();
    await publisherB.start();
    resolve = () => ({ nats: { servers: [server.url], auth: {}, tls: null, subjectPrefix: 'fs', stream: { name: 'CLI' } }, cluster: 'cli' });
  });
  afterAll(async () => {
    await publisherA?.stop();
    await publisherB?.stop();
    await client?.close();
    await server?.dispose();
  });

  const publish = (publisher: NatsPublisher, node: string, seq: number, name: string, subclass?: string, extra: [string, string][] = []) =>
    publisher.deliver({ event: testEvent(`uuid-${node}`, seq, name, subclass, extra), origin: { transport: 'esl', node, receivedAt: Date.now() } });

  it('tail prints live events as FreeSWITCH JSON lines, filtered by node, event and header', async () => {
    const lines: string[] = [];
    const stop = await runTail({ node: 'fs-a', event: 'sofia::register', match: ['status=Registered(UDP)'] }, (l) => lines.push(l), logger, resolve);
    const all: string[] = [];
    const stopAll = await runTail({}, (l) => all.push(l), logger, resolve);
    try {
      publish(publisherA, 'fs-a', 1, 'CUSTOM', 'sofia::register', [['status', 'Registered(UDP)']]);
      publish(publisherA, 'fs-a', 2, 'CUSTOM', 'sofia::register', [['status', 'Registered(TCP)']]);
      publish(publisherB, 'fs-b', 1, 'CUSTOM', 'sofia::register', [['status', 'Registered(UDP)']]);
      publish(publisherA, 'fs-a', 3, 'PRESENCE_IN');
      await until(() => all.length === 4);
      await sleep(100);
      expect(lines).toHaveLength(1);
      expect(lines[0].endsWith('\n')).toBe(true);
      const event = parseJson(lines[0]);
      expect(event.key).toBe('uuid-fs-a:1');
      expect(event.get('status')).toBe('Registered(UDP)');
    } finally {
      await stop();
      await stopAll();
    }
  });

  it('replay prints the stored events of the window, oldest first, then returns', async () => {
    await until(() => publisherA.pending === 0 && publisherB.pending === 0);
    await sleep(30);
    const since = new Date();
    for (let i = 10; i < 15; i++) publish(i % 2 ? publisherA : publisherB, i % 2 ? 'fs-a' : 'fs-b', i, 'PRESENCE_IN');
    await until(() => publisherA.pending === 0 && publisherB.pending === 0);
    await sleep(30);
    const untilTime = new Date();
    // Stored times have millisecond resolution here: keep the next event out of the window's last millisecond.
    await sleep(30);
    publish(publisherA, 'fs-a', 99, 'PRESENCE_IN');
    await until(() => publisherA.pending === 0);

    const lines: string[] = [];
    const count = await runReplay({ since, until: untilTime }, (l) => lines.push(l), logger, resolve);
    expect(count).toBe(5);
    // Two publishers: each node's events in its order, all five present.
    const sequences = lines.map((l) => parseJson(l).sequence!);
    expect([...sequences].sort((a, b) => a - b)).toEqual([10, 11, 12, 13, 14]);
    expect(sequences.filter((s) => s % 2 === 1)).toEqual([11, 13]);
    expect(sequences.filter((s) => s % 2 === 0)).toEqual([10, 12, 14]);

    const onlyA: string[] = [];
    await runReplay({ since, until: untilTime, node: 'fs-a' }, (l) => onlyA.push(l), logger, resolve);
    expect(onlyA.map((l) => parseJson(l).key)).toEqual(['uuid-fs-a:11', 'uuid-fs-a:13']);
  });

  it('registers tail and replay with commander, parsing repeatable --server, --match and --since', async () => {
    const seen: unknown[] = [];
    const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
    registerTail(program, (options) => {
      seen.push(options);
      throw new Error('stop here');
    });
    registerReplay(program, (options) => {
      seen.push(options);
      throw new Error('stop here');
    });
    await expect(program.parseAsync(['node', 'x', 'tail', '--server', 'nats://a:4222', '--server', 'nats://b:4222', '--match', 'a=1', '--match', 'b=2', '--event', 'sofia::register'])).rejects.toThrow('stop here');
    expect(seen[0]).toMatchObject({ server: ['nats://a:4222', 'nats://b:4222'], match: ['a=1', 'b=2'], event: 'sofia::register' });
    const before = Date.now();
    await expect(program.parseAsync(['node', 'x', 'replay', '--since', '10m', '--until', '2030-01-01T00:00:00Z'])).rejects.toThrow('stop here');
    const replayOptions = seen[1] as { since: Date; until: Date };
    expect(Math.abs(before - 600_000 - replayOptions.since.getTime())).toBeLessThan(5_000);
    expect(replayOptions.until.toISOString()).toBe('2030-01-01T00:00:00.000Z');
    await expect(program.parseAsync(['node', 'x', 'replay', '--since', 'yesterday'])).rejects.toThrow(/duration like 10m/);
  });
});
