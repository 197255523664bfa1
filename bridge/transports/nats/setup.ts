import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConfig } from '../../config/types.js';
import type { Logger } from '../../observability/logger.js';
import { openStateStore } from './kv.js';
import { ensureStream } from './stream.js';
import { SubjectMapper } from './subjects.js';

/**
 * Creates or updates the events stream and opens (creating) the KV buckets, as a bridge
 * does at start when its user may. With per-node authorization a node's user may not
 * (docs/security.md), so an admin runs this once: `fs-event-bridge nats-setup`.
 * Returns one line per object for the operator.
 */
export async function provisionNats(nc: NatsConnection, nats: Pick<NatsConfig, 'subjectPrefix' | 'stream' | 'kv'>, cluster: string, logger: Logger): Promise<string[]> {
  const subjects = new SubjectMapper(nats.subjectPrefix, cluster);
  const info = await ensureStream(await jetstreamManager(nc), nats.stream, subjects.clusterWildcard, logger);
  const lines = [`stream ${info.config.name}: subjects ${info.config.subjects?.join(', ')}, ${info.config.storage} storage, ${info.config.num_replicas} replica(s)`];
  for (const bucket of [nats.kv.locationBucket, nats.kv.blfBucket]) {
    await openStateStore(nc, bucket, { replicas: nats.stream.replicas, logger });
    lines.push(`KV bucket ${bucket}: ready`);
  }
  return lines;
}
