import type { MsgHdrs } from '@nats-io/transport-node';
import type { FsEvent } from '../../event/event.js';
import { parseJson, serializeJson } from '../../event/json.js';
import { parsePlain, serializePlain } from '../../event/plain.js';

/**
 * The event inside a NATS message. `plain` is FreeSWITCH's `event plain` serialization,
 * the bytes ESL delivered, so the publisher forwards them without decoding anything;
 * `json` is FreeSWITCH's `event json` shape for readers that only parse JSON. The
 * Content-Type header (ESL's own names for the two) says which; a message without it
 * is json, as every message was before the plain format existed.
 */
export type PayloadFormat = 'plain' | 'json';

export const PAYLOAD_TYPE_HEADER = 'Content-Type';
export const PAYLOAD_TYPE: Record<PayloadFormat, string> = { plain: 'text/event-plain', json: 'text/event-json' };

const encoder = new TextEncoder();

/** The message payload for `event`. Never a view of a larger buffer: the publisher may hold it through an outage. */
export function encodePayload(event: FsEvent, format: PayloadFormat): Uint8Array {
  if (format === 'json') return encoder.encode(serializeJson(event));
  const bytes = event.plainBytes;
  return bytes === null ? Buffer.from(serializePlain(event), 'utf8') : Buffer.from(bytes);
}

/** The event in a message, by its Content-Type header (ParseError when it does not parse). */
export function decodePayload(data: Uint8Array, headers: MsgHdrs | undefined): FsEvent {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return headers?.get(PAYLOAD_TYPE_HEADER) === PAYLOAD_TYPE.plain ? parsePlain(bytes) : parseJson(bytes);
}
