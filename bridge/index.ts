/**
 * fs-event-bridge public API: what consumers and embedding applications may use.
 * Everything else under bridge/ is internal and may change.
 */
export { FsEvent, type Header } from './event/event.js';
export { parsePlain, serializePlain } from './event/plain.js';
export { parseJson, serializeJson } from './event/json.js';
export { EVENT_NAMES, MulticastSubclass, isEventName } from './event/names.js';

export { Bindings } from './pipeline/bindings.js';
export { toMulticastEvent, fromMulticastEvent } from './pipeline/inject.js';
export { LOOP_GUARD_HEADER, Transport, type BridgeEvent, type Origin, type Sink, type RemoteSource } from './pipeline/types.js';
export type { PeerInfo } from './pipeline/peers.js';

export type { Consumer, ConsumerContext, ConsumerHealth, EventStream, LocalNode, StateStore, Lamp, LampState, LampSource, Registration, RegistrationSource } from './consumer.js';
export { consumersHealth, isLampSource, isRegistrationSource } from './consumer.js';

export { Bridge, guardedLocalNode, type BridgeOptions } from './bridge.js';
export { loadConfigFile, loadConfigText, defaultConfigXml, type LoadedConfig } from './config/load.js';
export type * from './config/types.js';

export { createLogger, silentLogger, type Logger } from './observability/logger.js';
export { Metrics, DropReporter } from './observability/metrics.js';
export * from './errors.js';
