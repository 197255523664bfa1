import { afterEach, describe, expect, it, vi } from 'vitest';
import { Command } from 'commander';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registerDecode } from '../../bridge/cli/commands/decode.js';
import { registerEncode } from '../../bridge/cli/commands/encode.js';
import { decodeDatagram } from '../../bridge/transports/multicast/codec.js';
import { datagramFixtures, fixturePath } from '../support/fixtures.js';

const PSK = JSON.parse(readFileSync(fixturePath('multicast-psk', 'index.json'), 'utf8')).psk as string;
const dir = mkdtempSync(join(tmpdir(), 'fsb-cli-'));

async function run(...args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  process.exitCode = 0;
  try {
    const program = new Command().exitOverride();
    registerDecode(program);
    registerEncode(program);
    await program.parseAsync(['node', 'fs-event-bridge', ...args]);
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
  const exitCode = Number(process.exitCode ?? 0);
  process.exitCode = 0;
  return { stdout, stderr, exitCode };
}

afterEach(() => {
  process.exitCode = 0;
});

describe('decode / encode commands', () => {
  it('decode prints the fixture .json shape; encode of that output rebuilds the datagram byte for byte', async () => {
    for (const { file, bin, decoded } of datagramFixtures('multicast-plain').slice(0, 8)) {
      const { stdout, exitCode } = await run('decode', fixturePath('multicast-plain', file));
      expect(exitCode).toBe(0);
      expect(stdout.split('\n').filter(Boolean)).toHaveLength(1);
      expect(JSON.parse(stdout)).toEqual(decoded);
      writeFileSync(join(dir, 'in.json'), stdout);
      await run('encode', '--in', join(dir, 'in.json'), '--out', join(dir, 'out.bin'));
      expect(readFileSync(join(dir, 'out.bin')).equals(bin), file).toBe(true);
    }
  });

  it('decode --psk decrypts; encode --psk --sender writes a datagram that decodes with that psk', async () => {
    const { file, decoded } = datagramFixtures('multicast-psk')[4];
    const { stdout } = await run('decode', fixturePath('multicast-psk', file), '--psk', PSK);
    expect(JSON.parse(stdout)).toEqual(decoded);
    writeFileSync(join(dir, 'bare.json'), JSON.stringify({ headers: [['Event-Name', 'CUSTOM'], ['Event-Subclass', 'x::y']], body: 'a: b\r\n' }));
    await run('encode', '--in', join(dir, 'bare.json'), '--psk', PSK, '--sender', 'fs-cli', '--out', join(dir, 'psk.bin'));
    const result = decodeDatagram(readFileSync(join(dir, 'psk.bin')), Buffer.from(PSK));
    expect(result.event.headers.at(-1)).toEqual(['Multicast-Sender', 'fs-cli']);
    expect(result.event.body).toBe('a: b\r\n');
  });

  it('decode exits 1 with a one-line reason on an invalid datagram or a wrong psk', async () => {
    writeFileSync(join(dir, 'junk.bin'), Buffer.alloc(400, 0x41));
    const junk = await run('decode', join(dir, 'junk.bin'));
    expect(junk.exitCode).toBe(1);
    expect(junk.stdout).toBe('');
    expect(junk.stderr.trim().split('\n')).toHaveLength(1);
    expect(junk.stderr).toContain('no_magic');
    const wrong = await run('decode', fixturePath('multicast-psk', datagramFixtures('multicast-psk')[0].file), '--psk', 'nope');
    expect(wrong.exitCode).toBe(1);
    expect(wrong.stderr).toContain('bad_psk');
  });

  it('encode refuses input without a sender', async () => {
    writeFileSync(join(dir, 'nosender.json'), JSON.stringify({ headers: [['Event-Name', 'HEARTBEAT']], body: null }));
    await expect(run('encode', '--in', join(dir, 'nosender.json'), '--out', join(dir, 'x.bin'))).rejects.toThrow(/--sender/);
  });
});
