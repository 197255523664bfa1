import type { FsEvent } from '../event/event.js';
import { parseJson } from '../event/json.js';
import { parsePlain } from '../event/plain.js';
import { ParseError } from '../errors.js';
import { ContentType, type EslFrame } from './frame-parser.js';

export function isEventFrame(frame: EslFrame): boolean {
  const type = frame.headers['Content-Type'];
  return type === ContentType.EventPlain || type === ContentType.EventJson;
}

/** The FreeSWITCH event carried by a text/event-plain or text/event-json frame. */
export function eventFromFrame(frame: EslFrame): FsEvent {
  const type = frame.headers['Content-Type'];
  if (frame.body === null) throw new ParseError(`${type} frame without a body`);
  if (type === ContentType.EventPlain) return parsePlain(frame.body);
  if (type === ContentType.EventJson) return parseJson(frame.body);
  throw new ParseError(`not an event frame: ${type}`);
}
