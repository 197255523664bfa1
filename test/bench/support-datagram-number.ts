import type { Socket } from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';

/**
 * The decimal number right after `marker` in a datagram (a header line such as
 * `\nEvent-Sequence: `), read from the bytes without decoding the datagram: the
 * benchmarks' counters must keep up with the sender. -1 when the marker is absent.
 */
export function numberAfter(datagram: Buffer, marker: Buffer): number {
  const at = datagram.indexOf(marker);
  if (at < 0) return -1;
  let n = 0;
  for (let i = at + marker.length; i < datagram.length; i++) {
    const digit = datagram[i] - 48;
    if (digit < 0 || digit > 9) break;
    n = n * 10 + digit;
  }
  return n;
}

/**
 * Datagrams the kernel dropped on one UDP socket of this process (a full receive buffer),
 * from /proc/net/udp (last column), or -1 when it cannot be told: tells a receiver that
 * fell behind from a sender that did not send. The socket is found by its inode, since
 * other sockets (the bridge's own receiver) are bound to the same group port. node:dgram
 * does not expose the descriptor; its handle's `fd` is read where Node has it (Linux, Node 20).
 */
export function udpDrops(socket: Socket): number {
  // The handle sits under node:dgram's 'state symbol' (its `_handle` getter is deprecated, DEP0112).
  const state = Object.getOwnPropertySymbols(socket).find((symbol) => symbol.description === 'state symbol');
  const fd = state ? (socket as unknown as Record<symbol, { handle?: { fd?: number } } | undefined>)[state]?.handle?.fd : undefined;
  if (fd === undefined || fd < 0) return -1;
  let inode: string;
  try {
    inode = /socket:\[(\d+)\]/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1] ?? '';
  } catch {
    return -1;
  }
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[9] === inode) return Number(fields.at(-1));
  }
  return -1;
}
