export { createBlfConsumer, BlfConsumer, DEFAULT_BLF_BUCKET, type LampState } from './blf/blf-consumer.js';
export { createLocationConsumer, LocationConsumer, DEFAULT_LOCATION_BUCKET } from './location/location-consumer.js';
export { createModDbSchema } from './location/sinks.js';
