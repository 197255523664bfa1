import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/**
 * Datagrams the kernel discarded for one UDP socket after they reached it (receive
 * buffer full, mostly; a bad checksum too): the `drops` column of /proc/net/udp for the
 * socket's inode. Read by hand because Node exposes none of it: SO_RXQ_OVFL needs
 * recvmsg control messages dgram does not surface (a native addon would), and
 * /proc/net/snmp's RcvbufErrors counts every socket of the namespace. /proc/self/net is
 * the network namespace of this process, the one the socket lives in.
 */
export class KernelDrops {
  private constructor(private readonly inode: string) {}

  /**
   * The socket behind `fd` (from the receiver worker), or, when the fd is unknown, the
   * one UDP socket of this process bound to `port`; null when it cannot be told apart.
   */
  static find(fd: number, port: number): KernelDrops | null {
    const inode = fd >= 0 ? socketInode(`/proc/self/fd/${fd}`) : null;
    if (inode !== null) return new KernelDrops(inode);
    const own = ownSocketInodes();
    const candidates = udpRows().filter((row) => row.port === port && own.has(row.inode));
    return candidates.length === 1 ? new KernelDrops(candidates[0].inode) : null;
  }

  /** The socket's drop count since it was opened, or null once it is gone. */
  read(): number | null {
    const row = udpRows().find((r) => r.inode === this.inode);
    return row ? row.drops : null;
  }
}

/** `RcvbufErrors` of the Udp line of /proc/self/net/snmp: every socket of this network namespace. */
export function namespaceUdpRcvbufErrors(): number | null {
  let text: string;
  try {
    text = readFileSync('/proc/self/net/snmp', 'utf8');
  } catch {
    return null;
  }
  const lines = text.split('\n').filter((line) => line.startsWith('Udp: '));
  if (lines.length < 2) return null;
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  const index = names.indexOf('RcvbufErrors');
  return index > 0 ? Number(values[index]) : null;
}

interface UdpRow {
  port: number;
  inode: string;
  drops: number;
}

/** Rows of /proc/self/net/udp: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops`. */
function udpRows(): UdpRow[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/net/udp', 'utf8');
  } catch {
    return [];
  }
  const rows: UdpRow[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 13) continue;
    rows.push({ port: parseInt(fields[1].split(':')[1], 16), inode: fields[9], drops: Number(fields[12]) });
  }
  return rows;
}

function socketInode(link: string): string | null {
  try {
    return /^socket:\[(\d+)\]$/.exec(readlinkSync(link))?.[1] ?? null;
  } catch {
    return null;
  }
}

function ownSocketInodes(): Set<string> {
  const inodes = new Set<string>();
  let fds: string[] = [];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch {
    return inodes;
  }
  for (const fd of fds) {
    const inode = socketInode(`/proc/self/fd/${fd}`);
    if (inode !== null) inodes.add(inode);
  }
  return inodes;
}
