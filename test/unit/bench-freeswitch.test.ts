import { describe, expect, it } from 'vitest';
import { eslQueues } from '../bench/freeswitch.js';
import { processCpuMs } from '../bench/support-processes.js';

describe('bench --freeswitch: what it reads from /proc', () => {
  it('takes FreeSWITCH side send queues and reader side receive queues of established ESL sockets only', () => {
    // /proc/net/tcp layout: local and remote address:port in hex, state (01 ESTABLISHED, 0A LISTEN), tx_queue:rx_queue.
    const labA = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100630A:1F55 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0',
      '   1: 0100630A:1F55 0100630A:A1B2 01 00001000:00000000 01:00000014 00000000     0        0 2 1 0 20 4 30 10 -1',
      '   2: 0100630A:A1B2 0100630A:1F55 01 00000000:00000800 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1',
      '   3: 0100630A:C000 0200630A:1F56 01 00000000:0000FFFF 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1',
      '   4: 0100630A:A1B3 0100630A:1F55 06 00000000:00009999 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1',
    ].join('\n');
    const labP = ['  sl  local_address rem_address   st tx_queue rx_queue', '   0: 0300630A:D000 0100630A:1F55 01 00000000:00002000 00:00000000 00000000'].join('\n');
    expect(eslQueues([labA], 8021)).toEqual({ fsSendQ: 0x1000, readerRecvQ: 0x800 });
    expect(eslQueues([labA, labP], 8021)).toEqual({ fsSendQ: 0x1000, readerRecvQ: 0x2000 });
    expect(eslQueues([labA], 8022)).toEqual({ fsSendQ: 0, readerRecvQ: 0xffff });
  });

  it("reads one thread's CPU, which is part of its process's", () => {
    let spin = 0;
    for (let i = 0; i < 2e7; i++) spin += i;
    expect(spin).toBeGreaterThan(0);
    const thread = processCpuMs(process.pid, process.pid);
    const whole = processCpuMs(process.pid);
    expect(thread).toBeGreaterThan(0);
    expect(thread).toBeLessThanOrEqual(whole);
    expect(() => processCpuMs(process.pid, 2 ** 30)).toThrow();
  });
});
