import { nanos } from '@nats-io/transport-node';
import { DiscardPolicy, JetStreamApiCodes, JetStreamApiError, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig, type StreamInfo } from '@nats-io/jetstream';
import type { NatsConfig } from '../../config/types.js';
import { NatsStreamLimitError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';
import { explainPermission } from './permissions.js';

/** Header naming the node that fired the event (the subject carries it too, escaped). */
export const ORIGIN_NODE_HEADER = 'FSB-Origin-Node';

export type StreamSettings = NatsConfig['stream'];

/** JetStream API codes for "insufficient resources", "... memory resources ...", "... storage resources ...". */
const NO_ROOM_CODES: ReadonlySet<number> = new Set([10023, 10028, 10047]);

/** A refusal for lack of room or for want of a permission says which param or permission to change; anything else goes through as it is. */
function explained(err: unknown, settings: StreamSettings): unknown {
  if (err instanceof JetStreamApiError && NO_ROOM_CODES.has(err.code)) return new NatsStreamLimitError(settings.name, settings.storage, settings.maxBytes, err.message, { cause: err });
  return explainPermission(err, `the JetStream stream ${settings.name}`);
}

/**
 * Create the events stream, or bring an existing one to the configured limits.
 * Replicas or storage of an existing stream are left alone when the server refuses the
 * change (storage never changes; 2.9 cannot scale some streams), with a warning.
 */
export async function ensureStream(jsm: JetStreamManager, settings: StreamSettings, subject: string, logger: Logger): Promise<StreamInfo> {
  const wanted: Partial<StreamConfig> = {
    subjects: [subject],
    max_age: nanos(settings.maxAgeMs),
    max_bytes: settings.maxBytes,
    duplicate_window: nanos(settings.duplicateWindowMs),
    num_replicas: settings.replicas,
    storage: settings.storage === 'memory' ? StorageType.Memory : StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
  };
  let existing: StreamInfo;
  try {
    existing = await jsm.streams.info(settings.name);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) {
      return jsm.streams.add({ name: settings.name, ...wanted }).catch((refused: unknown) => {
        throw explained(refused, settings);
      });
    }
    throw explained(err, settings);
  }
  const current = existing.config;
  const differs =
    current.subjects?.join(',') !== subject ||
    current.max_age !== wanted.max_age ||
    current.max_bytes !== wanted.max_bytes ||
    current.duplicate_window !== wanted.duplicate_window ||
    current.num_replicas !== wanted.num_replicas ||
    current.storage !== wanted.storage;
  if (!differs) return existing;
  try {
    return await jsm.streams.update(settings.name, { ...current, ...wanted });
  } catch (err) {
    logger.warn({ component: 'nats', stream: settings.name, err }, 'could not update the JetStream stream to the configured limits; keeping its current settings');
    return existing;
  }
}
