/**
 * Loopback ports for tests that run beside other test files (two vitest workers) and
 * other suites on the same machine.
 *
 * A port probed free and bound later by someone else (a child process) can be taken in
 * between. The ways around it here:
 * - a child that can listen on port 0 does, and reports the port it got (the bridge's
 *   metrics server logs it in "bridge started" / "consumer started");
 * - a server the test listens itself takes a port with `listenLow`, where the bind is
 *   the probe;
 * - a child that must be told its port (nats-server) gets one from `freePort`, and its
 *   whole start is retried on another port when the bind fails (startNatsServer);
 * - a port that must stay dead comes from `closedPort`, which nothing can take.
 *
 * Ports that a server listens on again after a stop (a restarted FreeSWITCH or NATS)
 * lie below the kernel's ephemeral range: a port in that range can be taken meanwhile as
 * the local port of any outgoing connection, even one of a client reconnecting to that
 * very port, which then connects to itself (TCP self-connect). Below it only listeners
 * compete, and each of them binds to check.
 */
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';

const LOW = 20_000;

/** First port of the kernel's ephemeral range (what connect() and listen(0) hand out); 0 when unknown. */
export function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

function randomLowPort(low: number): number {
  return LOW + Math.floor(Math.random() * (low - LOW));
}

/**
 * Listens `server` on a random port below the ephemeral range, trying another while the
 * bind fails with EADDRINUSE (the bind is the probe, so nothing can take the port in
 * between); where that range is unknown or too small, on port 0. Returns the port.
 */
export async function listenLow(server: Server, host = '127.0.0.1'): Promise<number> {
  const low = ephemeralLow();
  for (let attempt = 0; attempt < 50 && low > LOW; attempt++) {
    const port = randomLowPort(low);
    try {
      await listenOn(server, port, host);
      return port;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  await listenOn(server, 0, host);
  const address = server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

function listenOn(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen({ port, host, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * A loopback port below the ephemeral range that was free at the time of the call. By
 * the time a child binds it another listener may have it: only for a caller that retries
 * its whole start on another port when the bind fails (startNatsServer does).
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.unref();
  const port = await listenLow(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const holders: Socket[] = [];
let holderServer: Promise<Server> | null = null;

/**
 * A loopback port nothing listens on, nor can while this process lives: the local port of
 * a connection this process holds open (a bind of it fails with EADDRINUSE, a connection
 * to it is refused). For "nothing answers there" tests; a port merely free when probed
 * can meanwhile be taken by a server of a parallel test, which would then answer.
 */
export async function closedPort(): Promise<number> {
  holderServer ??= new Promise((resolve, reject) => {
    const server = createServer((socket) => {
      socket.unref();
      socket.on('error', () => {});
      holders.push(socket);
    });
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
  const server = await holderServer;
  const address = server.address();
  const socket = connect({ host: '127.0.0.1', port: typeof address === 'object' && address ? address.port : 0 });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.unref();
  holders.push(socket);
  return socket.localPort!;
}
