/**
 * The counting listener of esl-to-sinks, as its own process so that it can sit in
 * another network namespace (the far end of a veth link, where a LAN's receivers are):
 * joins GROUP on INTERFACE and marks each datagram's Event-Sequence in a bitmap of
 * [FIRST, FIRST + COUNT). Does nothing else per datagram, so it keeps up with the sender.
 *
 * `node support-sequence-listener.js GROUP PORT INTERFACE FIRST COUNT`; prints `ready`
 * once joined, then `progress` lines (distinct sequences, datagrams, wall-clock ms of the
 * last new one, what the kernel dropped on this socket) at most every 20 ms while
 * datagrams come; exits when stdin closes.
 */
import dgram from 'node:dgram';
import { numberAfter, udpDrops } from './support-datagram-number.js';

const [group, portArg, iface, firstArg, countArg] = process.argv.slice(2);
const first = Number(firstArg);
const seen = new Uint8Array(Number(countArg));
const SEQUENCE = Buffer.from('\nEvent-Sequence: ');
const out = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');
let distinct = 0;
let datagrams = 0;
let lastAt = 0;
let reported = -1;

const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 4 * 1024 * 1024 });
socket.on('message', (datagram) => {
  datagrams++;
  const slot = numberAfter(datagram, SEQUENCE) - first;
  if (slot >= 0 && slot < seen.length && seen[slot] === 0) {
    seen[slot] = 1;
    distinct++;
    lastAt = performance.timeOrigin + performance.now();
  }
});
const report = () => {
  if (datagrams === reported) return;
  reported = datagrams;
  out({ type: 'progress', distinct, datagrams, lastAt, kernelDrops: udpDrops(socket) });
};
const timer = setInterval(report, 20);
process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  clearInterval(timer);
  report();
  socket.close();
  process.exit(0);
});
socket.bind(Number(portArg), () => {
  socket.addMembership(group, iface);
  out({ type: 'ready', receiveBufferBytes: socket.getRecvBufferSize() });
});
