import { inspect } from 'node:util';

/** A key of the secure multicast mode (bridge/transports/multicast/secure.ts). */
export interface MulticastKey {
  /** Sent in every datagram so a receiver knows which key to use. */
  readonly id: number;
  /** 32 bytes. */
  readonly key: Buffer;
}

/**
 * `<id>:<key>`, the key as 64 hex digits or 44 base64 characters (32 bytes), e.g.
 * `1:$(openssl rand -hex 32)`. The message of the RangeError never contains the key.
 */
export function parseMulticastKey(text: string): MulticastKey {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  const idText = colon < 0 ? '' : trimmed.slice(0, colon);
  if (!/^\d{1,3}$/.test(idText) || Number(idText) > 255) throw new RangeError('expected <id>:<key> with an id from 0 to 255 (e.g. 1:<64 hex digits>)');
  const material = trimmed.slice(colon + 1);
  let key: Buffer | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(material)) key = Buffer.from(material, 'hex');
  else if (/^[A-Za-z0-9+/]{43}=$/.test(material)) key = Buffer.from(material, 'base64');
  if (key === null || key.length !== 32) throw new RangeError(`key ${idText} must be 32 bytes written as 64 hex digits or 44 base64 characters (openssl rand -hex 32)`);
  return redacted({ id: Number(idText), key });
}

/** Logged, printed or serialized by accident, a key shows its id only. */
function redacted(value: MulticastKey): MulticastKey {
  const shown = { id: value.id, key: '[redacted]' };
  Object.defineProperty(value, 'toJSON', { value: () => shown });
  Object.defineProperty(value, inspect.custom, { value: () => shown });
  return value;
}

