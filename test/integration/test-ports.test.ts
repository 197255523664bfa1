/**
 * The port helpers the other suites rely on to run beside each other (test/support/ports.ts):
 * a dead port stays dead, servers that listen again after a stop sit below the ephemeral
 * range, and a port taken before a child binds it is told apart from other failures.
 */
import { connect, createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EslSimulator } from '../support/esl-simulator.js';
import { NatsServer, PortInUseError } from '../support/nats-server.js';
import { closedPort, ephemeralLow, freePort, listenLow } from '../support/ports.js';

const servers: Server[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

function tryListen(port: number): Promise<string> {
  return new Promise((resolve) => {
    const server = createServer();
    servers.push(server);
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    server.listen(port, '127.0.0.1', () => resolve('listening'));
  });
}

function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
  });
}

describe('test ports', () => {
  it('closedPort: nothing can listen there, and a connection is refused', async () => {
    const port = await closedPort();
    expect(await tryListen(port)).toBe('EADDRINUSE');
    expect(await tryConnect(port)).toBe('ECONNREFUSED');
    expect(await closedPort()).not.toBe(port);
  });

  it('listenLow and freePort pick ports below the ephemeral range', async () => {
    const low = ephemeralLow();
    expect(low).toBeGreaterThan(20_000);
    const server = createServer();
    servers.push(server);
    const port = await listenLow(server);
    expect(port).toBeGreaterThanOrEqual(20_000);
    expect(port).toBeLessThan(low);
    expect(await tryConnect(port)).toBe('connected');
    const free = await freePort();
    expect(free).toBeLessThan(low);
    expect(await tryListen(free)).toBe('listening');
  });

  it('a nats-server whose port was taken fails with PortInUseError (which startNatsServer retries on another port)', async () => {
    const taken = createServer();
    servers.push(taken);
    const port = await listenLow(taken);
    const server = await NatsServer.create({ jetstream: false }, port);
    try {
      await expect(server.start()).rejects.toBeInstanceOf(PortInUseError);
    } finally {
      await server.dispose();
    }
  });

  it('the ESL simulator listens below the ephemeral range', async () => {
    const sim = await EslSimulator.start();
    try {
      expect(sim.port).toBeGreaterThanOrEqual(20_000);
      expect(sim.port).toBeLessThan(ephemeralLow());
    } finally {
      await sim.stop();
    }
  });

  it('the ESL simulator restarts on its port once a holder lets go of it, instead of throwing (uncaught) at once', async () => {
    const sim = await EslSimulator.start();
    try {
      const port = sim.port;
      await sim.stop();
      const holder = createServer();
      await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', resolve));
      setTimeout(() => holder.close(), 200);
      await sim.restart();
      expect(sim.port).toBe(port);
      expect(await tryConnect(port)).toBe('connected');
    } finally {
      await sim.stop();
    }
  });
});
