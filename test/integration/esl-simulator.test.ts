import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EslFrameParser, type EslFrame } from '../../bridge/esl/frame-parser.js';
import { eventFromFrame } from '../../bridge/esl/event-frame.js';
import { FsEvent } from '../../bridge/event/event.js';
import { serializePlain } from '../../bridge/event/plain.js';
import { EslSimulator } from '../support/esl-simulator.js';
import { readFixture } from '../support/fixtures.js';
import { until } from '../support/wait.js';

/** A bare socket speaking ESL by hand, to check the simulator's bytes rather than a client's reading of them. */
class RawClient {
  readonly frames: EslFrame[] = [];
  readonly bytes: Buffer[] = [];
  closed = false;
  private readonly parser = new EslFrameParser();
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.bytes.push(chunk);
      this.frames.push(...this.parser.push(chunk));
    });
    socket.on('close', () => (this.closed = true));
  }

  static async connect(port: number): Promise<RawClient> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    await new Promise((resolve) => socket.once('connect', resolve));
    return new RawClient(socket);
  }

  send(text: string): void {
    this.socket.write(text);
  }

  async frame(index: number): Promise<EslFrame> {
    await until(() => this.frames.length > index);
    return this.frames[index];
  }

  async login(password = 'ClueCon', subscribe?: string): Promise<void> {
    await this.frame(0);
    this.send(`auth ${password}\n\n`);
    await this.frame(1);
    if (subscribe) {
      this.send(`${subscribe}\n\n`);
      await this.frame(2);
    }
  }
}

let sim: EslSimulator;
const clients: RawClient[] = [];
async function client(): Promise<RawClient> {
  const c = await RawClient.connect(sim.port);
  clients.push(c);
  return c;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.socket.destroy();
  await sim?.stop();
});

describe('ESL simulator speaks mod_event_socket', () => {
  it('greets, accepts the password and subscribes with the texts of the capture', async () => {
    sim = await EslSimulator.start({ password: 'ClueCon' });
    const c = await client();
    await c.login('ClueCon', 'event plain ALL');
    const captured = readFixture('esl', 'a-plain.raw');
    const prefix = captured.subarray(0, captured.indexOf('Content-Length:'));
    expect(Buffer.concat(c.bytes).toString()).toBe(prefix.toString());
    expect(sim.commands).toEqual(['auth ClueCon', 'event plain ALL']);
  });

  it('answers a wrong password with -ERR invalid, the goodbye notice, and closes', async () => {
    sim = await EslSimulator.start({ password: 'right' });
    const c = await client();
    await c.login('wrong');
    await until(() => c.closed);
    expect(c.frames[1].headers).toEqual({ 'Content-Type': 'command/reply', 'Reply-Text': '-ERR invalid' });
    expect(c.frames[2].headers['Content-Type']).toBe('text/disconnect-notice');
    expect(c.frames[2].body?.toString()).toBe('Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n');
  });

  it('refuses commands before auth and answers exit with +OK bye', async () => {
    sim = await EslSimulator.start();
    const c = await client();
    await c.frame(0);
    c.send('api status\n\n');
    expect((await c.frame(1)).headers['Reply-Text']).toBe('-ERR command not found');
    c.send('auth ClueCon\n\nexit\n\n');
    expect((await c.frame(3)).headers['Reply-Text']).toBe('+OK bye');
    await until(() => c.closed);
    expect(c.frames[4].headers['Content-Type']).toBe('text/disconnect-notice');
  });

  it('filters by event name and CUSTOM subclass, per connection, in plain and json', async () => {
    sim = await EslSimulator.start({ switchname: 'fs-x' });
    const plain = await client();
    await plain.login('ClueCon', 'event plain HEARTBEAT CUSTOM sofia::register');
    const json = await client();
    await json.login('ClueCon', 'event json CUSTOM multicast::event');
    expect(plain.frames[2].headers['Reply-Text']).toBe('+OK event listener enabled plain');
    expect(json.frames[2].headers['Reply-Text']).toBe('+OK event listener enabled json');

    sim.fire(FsEvent.create('HEARTBEAT').add('Event-Info', 'System Ready'));
    sim.fire(FsEvent.create('CUSTOM', 'sofia::register').add('from-user', '1000'));
    sim.fire(FsEvent.create('CUSTOM', 'sofia::expire'));
    sim.fire(FsEvent.create('PRESENCE_IN'));
    sim.fire(FsEvent.create('CUSTOM', 'multicast::event').add('Orig-Event-Name', 'PRESENCE_IN'));
    await until(() => plain.frames.length === 5 && json.frames.length === 4);

    const got = plain.frames.slice(3).map(eventFromFrame);
    expect(got.map((e) => [e.name, e.subclass])).toEqual([['HEARTBEAT', undefined], ['CUSTOM', 'sofia::register']]);
    expect(plain.frames[3].headers['Content-Type']).toBe('text/event-plain');
    expect(json.frames[3].headers['Content-Type']).toBe('text/event-json');
    const mc = eventFromFrame(json.frames[3]);
    expect(mc.subclass).toBe('multicast::event');
    expect(mc.get('Orig-Event-Name')).toBe('PRESENCE_IN');
    // Stamped like a node's own event: Core-UUID, names, and one sequence counter for all.
    expect(got[0].coreUuid).toBe(sim.coreUuid);
    expect(got[0].get('FreeSWITCH-Switchname')).toBe('fs-x');
    expect([got[0].sequence, got[1].sequence, mc.sequence]).toEqual([1, 2, 5]);
    expect(got[1].headers.slice(0, 3).map((h) => h[0])).toEqual(['Event-Subclass', 'Event-Name', 'Core-UUID']);
  });

  it('answers api from its table or like FreeSWITCH for unknown commands, and runs bgapi', async () => {
    sim = await EslSimulator.start({ api: { status: 'UP\n' } });
    sim.setApi('echo', (arg) => `${arg}\n`);
    const c = await client();
    await c.login('ClueCon', 'event plain BACKGROUND_JOB');
    c.send('api status\n\napi echo hello world\n\napi nosuch arg\n\n');
    await c.frame(5);
    expect(c.frames.slice(3, 6).map((f) => [f.headers['Content-Type'], f.body?.toString()])).toEqual([
      ['api/response', 'UP\n'],
      ['api/response', 'hello world\n'],
      ['api/response', '-ERR nosuch Command not found!\n'],
    ]);
    c.send('bgapi echo later\nJob-UUID: 11111111-2222-3333-4444-555555555555\n\n');
    const reply = await c.frame(6);
    expect(reply.headers).toEqual({
      'Content-Type': 'command/reply',
      'Reply-Text': '+OK Job-UUID: 11111111-2222-3333-4444-555555555555',
      'Job-UUID': '11111111-2222-3333-4444-555555555555',
    });
    const job = eventFromFrame(await c.frame(7));
    expect(job.name).toBe('BACKGROUND_JOB');
    expect(job.get('Job-UUID')).toBe('11111111-2222-3333-4444-555555555555');
    expect(job.get('Job-Command')).toBe('echo');
    expect(job.get('Job-Command-Arg')).toBe('later');
    expect(job.body).toBe('later\n');
  });

  it('records sendevent raw and delivers it back with the headers FreeSWITCH adds, in its order', async () => {
    sim = await EslSimulator.start({ switchname: 'fs-a', hostname: 'node-a', ipv4: '10.99.0.1' });
    const c = await client();
    await c.login('ClueCon', 'event plain CUSTOM multicast::event');
    c.send('sendevent CUSTOM\nEvent-Subclass: multicast::event\nOrig-from:   1000@x\nEmpty: \nContent-Length: 5\n\nhello');
    const reply = await c.frame(3);
    const delivered = eventFromFrame(await c.frame(4));
    expect(reply.headers['Reply-Text']).toMatch(/^\+OK [0-9a-f-]{36}$/);

    const recorded = sim.received[0];
    expect(recorded.headers).toEqual([['Event-Name', 'CUSTOM'], ['Event-Subclass', 'multicast::event'], ['Orig-from', '1000@x'], ['Empty', '']]);
    expect(recorded.body).toBe('hello');

    expect(delivered.headers.map((h) => h[0])).toEqual([
      'Event-Subclass', 'Command', 'Orig-from', 'Event-UUID', 'Event-Name', 'Core-UUID', 'FreeSWITCH-Hostname',
      'FreeSWITCH-Switchname', 'FreeSWITCH-IPv4', 'FreeSWITCH-IPv6', 'Event-Date-Local', 'Event-Date-GMT',
      'Event-Date-Timestamp', 'Event-Calling-File', 'Event-Calling-Function', 'Event-Calling-Line-Number', 'Event-Sequence',
    ]);
    expect(delivered.get('Command')).toBe('sendevent CUSTOM');
    expect(delivered.get('Event-UUID')).toBe(reply.headers['Reply-Text'].slice(4));
    expect(delivered.get('Event-Calling-File')).toBe('mod_event_socket.c');
    expect(delivered.get('FreeSWITCH-Hostname')).toBe('node-a');
    expect(delivered.body).toBe('hello');
  });

  it('with keepReceived false still emits and answers sendevent but retains nothing (benchmarks)', async () => {
    sim = await EslSimulator.start({ keepReceived: false });
    const emitted: string[] = [];
    sim.on('sendevent', (event: FsEvent) => emitted.push(event.get('unique-id') ?? ''));
    const c = await client();
    await c.login('ClueCon', 'event plain PRESENCE_IN');
    c.send('sendevent PRESENCE_IN\nunique-id: call-1\n\n');
    const reply = await c.frame(3);
    expect(reply.headers['Reply-Text']).toMatch(/^\+OK /);
    expect(eventFromFrame(await c.frame(4)).get('unique-id')).toBe('call-1');
    expect(emitted).toEqual(['call-1']);
    expect(sim.received).toEqual([]);
  });

  it('replays a capture verbatim, byte for byte, through any chunking', async () => {
    sim = await EslSimulator.start();
    sim.setChunking({ mode: 'random', min: 1, max: 700, seed: 7 });
    const c = await client();
    await c.login('ClueCon', 'event plain ALL');
    const events = EslSimulator.loadCapture('a-plain.raw');
    expect(events).toHaveLength(200);
    expect(await sim.replay(events, { verbatim: true })).toBe(200);
    await until(() => c.frames.length === 203);
    const captured = readFixture('esl', 'a-plain.raw');
    const afterSubscribe = Buffer.concat(c.bytes).subarray(captured.indexOf('Content-Length:'));
    expect(afterSubscribe.equals(captured.subarray(captured.indexOf('Content-Length:')))).toBe(true);
  });

  it('restamps replayed events with its own Core-UUID and consecutive sequences, and skipSequence makes a gap', async () => {
    sim = await EslSimulator.start({ firstSequence: 100 });
    const c = await client();
    await c.login('ClueCon', 'event plain ALL');
    const events = EslSimulator.loadCapture('b-multicast-event.raw');
    await sim.replay(events, { count: 3 });
    sim.skipSequence(4);
    sim.fire(events[0].event);
    await until(() => c.frames.length === 7);
    const got = c.frames.slice(3).map(eventFromFrame);
    expect(got.map((e) => e.sequence)).toEqual([100, 101, 102, 107]);
    expect(new Set(got.map((e) => e.coreUuid))).toEqual(new Set([sim.coreUuid]));
    // Everything but the stamped headers is the captured event's.
    const own = (e: FsEvent) => e.headers.filter(([n]) => !/^(Core-UUID|FreeSWITCH-|Event-Date-|Event-Sequence|Event-Calling-)/.test(n));
    const original = events[1].event;
    expect(own(got[1])).toEqual(own(original));
    expect(serializePlain(got[1]).length).toBeGreaterThan(500);
  });

  it('paces replay at the requested rate', async () => {
    sim = await EslSimulator.start();
    const c = await client();
    await c.login('ClueCon', 'event plain ALL');
    const started = Date.now();
    await sim.replay(EslSimulator.loadCapture('b-multicast-event.raw'), { rate: 200, count: 60, loop: true });
    const elapsed = Date.now() - started;
    await until(() => c.frames.length === 63);
    // 60 events at 200/s: about 300 ms.
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1500);
  });

  it('restarts on the same port, optionally as a new FreeSWITCH', async () => {
    sim = await EslSimulator.start();
    const port = sim.port;
    const core = sim.coreUuid;
    const c = await client();
    await c.login();
    await sim.restart({ newCoreUuid: true });
    await until(() => c.closed);
    expect(sim.port).toBe(port);
    expect(sim.coreUuid).not.toBe(core);
    expect(sim.sequence).toBe(1);
    const again = await client();
    expect((await again.frame(0)).headers['Content-Type']).toBe('auth/request');
  });
});
