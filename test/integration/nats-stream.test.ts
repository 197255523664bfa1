import { jetstreamManager } from '@nats-io/jetstream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NatsStreamLimitError } from '../../bridge/errors.js';
import { silentLogger } from '../../bridge/observability/logger.js';
import { connectNats } from '../../bridge/transports/nats/connection.js';
import { ensureStream } from '../../bridge/transports/nats/stream.js';
import { natsTestConfig, startNatsServer, type NatsServer } from '../support/nats-server.js';

describe('ensureStream storage (nats-server)', () => {
  let server: NatsServer;
  beforeAll(async () => {
    server = await startNatsServer();
  });
  afterAll(async () => {
    await server.dispose();
  });

  it('creates the stream in memory when asked, and never converts an existing stream (warns instead)', async () => {
    const nc = await connectNats({ servers: [server.url], auth: {}, tls: null }, { logger: silentLogger() });
    try {
      const jsm = await jetstreamManager(nc);
      const settings = { ...natsTestConfig([server.url]).stream, name: 'STORAGE_TEST' };
      const created = await ensureStream(jsm, { ...settings, storage: 'memory' }, 'st.>', silentLogger());
      expect(created.config.storage).toBe('memory');

      const warnings: string[] = [];
      const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line).msg) });
      const kept = await ensureStream(jsm, { ...settings, storage: 'file' }, 'st.>', logger);
      expect(kept.config.storage).toBe('memory');
      expect((await jsm.streams.info('STORAGE_TEST')).config.storage).toBe('memory');
      expect(warnings).toEqual([expect.stringContaining('keeping its current settings')]);

      // The test server allows 256 MB of memory store (test/support/nats-server.ts).
      const tooBig = ensureStream(jsm, { ...settings, name: 'STORAGE_BIG', storage: 'memory', maxBytes: 1024 ** 3 }, 'sb.>', silentLogger());
      await expect(tooBig).rejects.toBeInstanceOf(NatsStreamLimitError);
      await expect(tooBig).rejects.toThrow(/STORAGE_BIG \(memory storage, nats\/stream-max-bytes 1073741824 bytes\).*insufficient memory.*lower nats\/stream-max-bytes or raise max_memory_store/);

      const file = await ensureStream(jsm, { ...settings, name: 'STORAGE_FILE', storage: 'file' }, 'sf.>', silentLogger());
      expect(file.config.storage).toBe('file');
    } finally {
      await nc.close();
    }
  });
});
