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
