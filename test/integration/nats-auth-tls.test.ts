/**
 * NATS connection security against a real nats-server 2.9: mutual TLS, NKey users,
 * operator-mode creds files, and failover past a dead first server. Keys and
 * certificates are generated per run (test/support/nats-tls.ts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConfig } from '../../bridge/config/types.js';
import { ConfigError, NatsAuthError, NatsTlsError } from '../../bridge/errors.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { Metrics } from '../../bridge/observability/metrics.js';
import type { BridgeEvent } from '../../bridge/pipeline/types.js';
import { connectNats, NatsClient, type NatsConnectSettings } from '../../bridge/transports/nats/connection.js';
import { NatsPublisher } from '../../bridge/transports/nats/publisher.js';
import { NatsSubscriber } from '../../bridge/transports/nats/subscriber.js';
import { natsTestConfig, startNatsServer, testEvent, testNode, type NatsServer } from '../support/nats-server.js';
import { closedPort } from '../support/ports.js';
import { createNkeyUser, createTestOperator, generateTestPki, type TestNkeyUser, type TestPki } from '../support/nats-tls.js';
import { until } from '../support/wait.js';

const logger = silentLogger();

/** What NatsClient.start() rejects with (it must reject). */
async function startError(settings: NatsConnectSettings): Promise<unknown> {
  const client = new NatsClient(settings, { logger });
  try {
    await client.start(5_000);
  } catch (err) {
    return err;
  } finally {
    await client.close();
  }
  throw new Error(`NatsClient.start() succeeded with ${JSON.stringify(settings)}`);
}

/** Node A publishes one event through NatsPublisher, node B's NatsSubscriber receives it. */
async function publishAcross(configA: NatsConfig, configB: NatsConfig, coreUuid: string): Promise<BridgeEvent[]> {
  const clientA = new NatsClient(configA, { logger });
  const clientB = new NatsClient(configB, { logger });
  const publisher = new NatsPublisher(configA, { client: clientA, node: testNode('fs-a'), metrics: new Metrics(), logger });
  const subscriber = new NatsSubscriber(configB, { client: clientB, node: testNode('fs-b'), metrics: new Metrics(), logger });
  const received: BridgeEvent[] = [];
  try {
    await publisher.start();
    await subscriber.start((item) => {
        received.push(item);
        item.delivery?.ack();
      });
    expect(clientA.connected && clientB.connected).toBe(true);
    const event = testEvent(coreUuid, 1, 'PRESENCE_IN', undefined, [['from', '1000@example.com']]);
    publisher.deliver({ event, origin: { transport: 'esl', node: 'fs-a', receivedAt: Date.now() } });
    await until(() => received.length === 1);
    expect(received[0].event.headers).toEqual(event.headers);
    expect(received[0].origin).toMatchObject({ transport: 'nats', node: 'fs-a' });
    return received;
  } finally {
    await publisher.stop();
    await subscriber.stop();
    await clientA.close();
    await clientB.close();
  }
}

describe('NATS over mutual TLS (server verify: true)', () => {
  let pki: TestPki;
  let server: NatsServer;

  beforeAll(async () => {
    pki = generateTestPki();
    server = await startNatsServer({ tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caFile, verify: true } });
  });
  afterAll(async () => {
    await server?.dispose();
    pki?.dispose();
  });

  it('carries an event end to end with CA/cert/key given as file paths on one node and as PEM text on the other', async () => {
    const stream = { ...natsTestConfig([]).stream, name: 'TLS_E2E' };
    const files = natsTestConfig([server.url], { stream, tls: { ca: pki.caFile, cert: pki.clientCertFile, key: pki.clientKeyFile } });
    const pem = natsTestConfig([server.url], { stream, tls: { ca: pki.pem(pki.caFile), cert: pki.pem(pki.clientCertFile), key: pki.pem(pki.clientKeyFile) } });
    const received = await publishAcross(files, pem, 'uuid-tls');
    expect(received.map((r) => r.event.key)).toEqual(['uuid-tls:1']);

    // The server really demanded and checked a client certificate on these connections.
    const nc = await connectNats({ servers: [server.url], auth: {}, tls: files.tls }, { logger });
    try {
      expect(nc.info?.tls_required).toBe(true);
      expect(nc.info?.tls_verify).toBe(true);
    } finally {
      await nc.close();
    }
  });

  it('a server certificate not signed by tls-ca fails startup with NatsTlsError (NatsClient and connectNats)', async () => {
    const settings = { servers: [server.url], auth: {}, tls: { ca: pki.otherCaFile, cert: pki.clientCertFile, key: pki.clientKeyFile } };
    const err = await startError(settings);
    expect(err).toBeInstanceOf(NatsTlsError);
    expect((err as NatsTlsError).code).toBe('FSB_ERR_NATS_TLS');
    expect((err as NatsTlsError).message).toContain(server.url);
    expect((err as NatsTlsError).reason).toMatch(/unable to verify/i);
    await expect(connectNats(settings, { logger })).rejects.toBeInstanceOf(NatsTlsError);
  });

  it('no TLS settings against a TLS-only server fail with NatsTlsError, not an endless retry', async () => {
    await expect(startError({ servers: [server.url], auth: {}, tls: null })).resolves.toBeInstanceOf(NatsTlsError);
  });

  it('TLS settings against a server without TLS fail with NatsTlsError', async () => {
    const plain = await startNatsServer({ jetstream: false });
    try {
      const err = await startError({ servers: [plain.url], auth: {}, tls: { ca: pki.caFile } });
      expect(err).toBeInstanceOf(NatsTlsError);
      expect((err as NatsTlsError).reason).toContain("'tls'");
    } finally {
      await plain.dispose();
    }
  });

  it('without a client certificate against a verifying server, startup fails with NatsTlsError naming tls-cert', async () => {
    // TLS 1.3: the server would check the client certificate only after the client's side of
    // the handshake is done, and nats.js would see just a timeout; its INFO says it verifies.
    const began = Date.now();
    const err = await startError({ servers: [server.url], auth: {}, tls: { ca: pki.caFile } });
    expect(err).toBeInstanceOf(NatsTlsError);
    expect((err as NatsTlsError).reason).toBe(`${server.url} requires a client certificate (tls_verify) and nats/tls-cert is not set`);
    expect(Date.now() - began).toBeLessThan(5_000);
  });

  it('without a client certificate against a server that does not verify clients, it connects (the INFO probe lets it through)', async () => {
    const serverAuthOnly = await startNatsServer({ jetstream: false, tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, verify: false } });
    try {
      const nc = await connectNats({ servers: [serverAuthOnly.url], auth: {}, tls: { ca: pki.caFile } }, { logger });
      expect(nc.info?.tls_required).toBe(true);
      expect(nc.info?.tls_verify).toBeFalsy();
      await nc.close();
    } finally {
      await serverAuthOnly.dispose();
    }
  });

  it('an unreadable CA, cert or key file is a ConfigError naming the file and the param', async () => {
    const missing = join(pki.dir, 'missing.pem');
    const cases: [NonNullable<NatsConfig['tls']>, string][] = [
      [{ ca: missing }, 'tls-ca'],
      [{ ca: pki.caFile, cert: missing, key: pki.clientKeyFile }, 'tls-cert'],
      [{ ca: pki.caFile, cert: pki.clientCertFile, key: missing }, 'tls-key'],
    ];
    for (const [tls, param] of cases) {
      const err = await startError({ servers: [server.url], auth: {}, tls });
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toBe(`${missing}: param "${param}": cannot read the file (ENOENT)`);
    }
  });
});

describe('NATS NKey users', () => {
  let user: TestNkeyUser;
  let server: NatsServer;

  beforeAll(async () => {
    user = createNkeyUser();
    server = await startNatsServer({ auth: { nkeys: [user.publicKey] } });
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it('connects with the nkey-seed of a listed user and carries an event end to end', async () => {
    const config = natsTestConfig([server.url], { auth: { nkeySeed: user.seed }, stream: { ...natsTestConfig([]).stream, name: 'NKEY_E2E' } });
    const received = await publishAcross(config, config, 'uuid-nkey');
    expect(received.map((r) => r.event.key)).toEqual(['uuid-nkey:1']);
  });

  it('a seed of another user is refused with NatsAuthError', async () => {
    const settings = { servers: [server.url], auth: { nkeySeed: createNkeyUser().seed }, tls: null };
    const err = await startError(settings);
    expect(err).toBeInstanceOf(NatsAuthError);
    expect((err as NatsAuthError).code).toBe('FSB_ERR_NATS_AUTH');
    await expect(connectNats(settings, { logger })).rejects.toBeInstanceOf(NatsAuthError);
  });

  it('a malformed seed is a ConfigError that names the param but not the secret', async () => {
    const err = await startError({ servers: [server.url], auth: { nkeySeed: 'SUnot-a-seed' }, tls: null });
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain('param "nkey-seed"');
    expect((err as ConfigError).message).not.toContain('SUnot-a-seed');
  });

  it('fails over to the next configured server when the first one is down', async () => {
    const dead = `nats://127.0.0.1:${await closedPort()}`;
    const client = new NatsClient({ servers: [dead, server.url], auth: { nkeySeed: user.seed }, tls: null }, { logger, inOrder: true });
    try {
      await client.start(5_000);
      expect(client.connected).toBe(true);
      expect(client.connection?.getServer()).toBe(`127.0.0.1:${server.port}`);
    } finally {
      await client.close();
    }
  });
});

describe('NATS creds file (operator mode, signed JWTs)', () => {
  let pki: TestPki;
  let server: NatsServer;
  let credsFile: string;

  beforeAll(async () => {
    pki = generateTestPki();
    const operator = await createTestOperator();
    server = await startNatsServer({ auth: operator });
    credsFile = join(pki.dir, 'bridge.creds');
    writeFileSync(credsFile, operator.creds);
  });
  afterAll(async () => {
    await server?.dispose();
    pki?.dispose();
  });

  it('connects with the creds file and stores an event in JetStream under the account', async () => {
    const config = natsTestConfig([server.url], { auth: { credsFile }, stream: { ...natsTestConfig([]).stream, name: 'CREDS_E2E' } });
    const received = await publishAcross(config, config, 'uuid-creds');
    expect(received.map((r) => r.event.key)).toEqual(['uuid-creds:1']);
    const nc = await connectNats(config, { logger });
    try {
      expect((await (await jetstreamManager(nc)).streams.info('CREDS_E2E')).state.messages).toBe(1);
    } finally {
      await nc.close();
    }
  });

  it('creds signed under another operator are refused with NatsAuthError', async () => {
    const foreign = join(pki.dir, 'foreign.creds');
    writeFileSync(foreign, (await createTestOperator()).creds);
    await expect(startError({ servers: [server.url], auth: { credsFile: foreign }, tls: null })).resolves.toBeInstanceOf(NatsAuthError);
  });

  it('a missing or malformed creds file is a ConfigError naming the file', async () => {
    const missing = join(pki.dir, 'missing.creds');
    const missingErr = await startError({ servers: [server.url], auth: { credsFile: missing }, tls: null });
    expect(missingErr).toBeInstanceOf(ConfigError);
    expect((missingErr as ConfigError).message).toBe(`${missing}: param "creds-file": cannot read the file (ENOENT)`);

    const malformed = join(pki.dir, 'malformed.creds');
    writeFileSync(malformed, 'not a creds file\n');
    const malformedErr = await startError({ servers: [server.url], auth: { credsFile: malformed }, tls: null });
    expect(malformedErr).toBeInstanceOf(ConfigError);
    expect((malformedErr as ConfigError).message).toMatch(new RegExp(`^${malformed}: param "creds-file": not a NATS creds file`));
    await expect(connectNats({ servers: [server.url], auth: { credsFile: malformed }, tls: null }, { logger })).rejects.toBeInstanceOf(ConfigError);
  });
});
