/**
 * The receiver of the real-FreeSWITCH benchmark (freeswitch.ts), started on node B's
 * network: joins the group on B's interface and counts the datagrams of one run, by the
 * `FSB-Bench-Seq` header the Lua loop put on each event (plain datagrams: FreeSWITCH's
 * serialization, whoever sent them). Does nothing else per datagram, so it keeps up with
 * the sender; what the kernel still drops on this socket is read from /proc/net/udp.
 *
 * `node support-datagram-counter.js GROUP PORT INTERFACE`; stdin commands, one JSON line
 * each: `{"run":"ID","count":N}` starts counting run ID (answers `armed`), `{"report":true}`
 * answers `report` with the figures of the current run. Prints `ready` once joined.
 */
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { numberAfter, udpDrops } from './support-datagram-number.js';

const [group, portArg, iface] = process.argv.slice(2);
const port = Number(portArg);
const out = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');
const SEQ = Buffer.from('\nFSB-Bench-Seq: ');

let marker = Buffer.alloc(0);
let seen = new Uint8Array(0);
let distinct = 0;
let datagrams = 0;
let firstAt = 0;
let lastAt = 0;

const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 32 * 1024 * 1024 });
socket.on('message', (datagram) => {
  if (marker.length === 0 || datagram.indexOf(marker) < 0) return;
  datagrams++;
  const n = numberAfter(datagram, SEQ);
  if (n >= 1 && n <= seen.length && seen[n - 1] === 0) {
    seen[n - 1] = 1;
    distinct++;
    const now = Date.now();
    if (firstAt === 0) firstAt = now;
    lastAt = now;
  }
});

let dropsAtArm = 0;
createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line) as { run?: string; count?: number; report?: boolean };
  if (command.run !== undefined) {
    marker = Buffer.from(`\nFSB-Bench-Run: ${command.run}\n`);
    seen = new Uint8Array(command.count ?? 0);
    distinct = datagrams = firstAt = lastAt = 0;
    dropsAtArm = udpDrops(socket);
    out({ type: 'armed', run: command.run });
  } else if (command.report) {
    out({ type: 'report', distinct, datagrams, firstAt, lastAt, kernelDrops: udpDrops(socket) - dropsAtArm, rcvbuf: socket.getRecvBufferSize() });
  }
});
process.stdin.on('end', () => {
  socket.close();
  process.exit(0);
});

socket.bind(port, () => {
  socket.addMembership(group, iface);
  out({ type: 'ready' });
});
