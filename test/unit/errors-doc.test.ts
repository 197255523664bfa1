import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DATAGRAM_DROP_REASONS, DatagramError } from '../../bridge/errors.js';

const read = (p: string) => readFileSync(fileURLToPath(new URL(`../../${p}`, import.meta.url)), 'utf8');

describe('docs/errors.md', () => {
  it('lists every error code the source defines', () => {
    const doc = read('docs/errors.md');
    const source = read('bridge/errors.ts') + read('bridge/cli/commands/peers.ts');
    const codes = new Set([...source.matchAll(/'(FSB_ERR_[A-Z_]+)'/g)].map((m) => m[1]));
    for (const reason of DATAGRAM_DROP_REASONS) {
      codes.add(new DatagramError(reason, '').code);
    }
    expect(codes.size).toBeGreaterThan(15);
    for (const code of codes) expect(doc).toContain(`\`${code}\``);
  });
});
