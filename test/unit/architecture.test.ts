import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]);
}

function resolved(file: string, spec: string): string {
  return relative(ROOT, join(ROOT, file, '..', spec));
}

describe('architecture', () => {
  it('transports never import each other', () => {
    const pairs = [
      ['bridge/transports/multicast', 'bridge/transports/nats'],
      ['bridge/transports/nats', 'bridge/transports/multicast'],
    ];
    let checked = 0;
    for (const [from, forbidden] of pairs) {
      for (const file of sources(from)) {
        checked++;
        for (const spec of imports(file)) expect(resolved(file, spec).startsWith(forbidden), `${file} imports ${spec}`).toBe(false);
      }
    }
    expect(checked).toBeGreaterThan(8);
  });

  it('consumers use only the public bridge API (bridge/index.ts)', () => {
    const files = sources('consumers');
    expect(files.length).toBeGreaterThan(3);
    for (const file of files) {
      for (const spec of imports(file)) {
        const target = resolved(file, spec);
        if (target.startsWith('bridge/')) expect(target, `${file} imports ${spec}`).toBe('bridge/index.js');
      }
    }
  });

  it('the protocol core (event model, ESL framing, codec, pipeline) touches no socket', () => {
    const core = [...sources('bridge/event'), ...sources('bridge/esl'), ...sources('bridge/pipeline'), 'bridge/transports/multicast/codec.ts'];
    for (const file of core) {
      for (const spec of imports(file)) expect(['node:net', 'node:dgram', 'net', 'dgram'], `${file} imports ${spec}`).not.toContain(spec);
    }
  });
});
