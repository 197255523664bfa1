export { createBlfConsumer, BlfConsumer, type LampState } from './blf/blf-consumer.js';
