import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { EslFrameParser, type EslFrame } from '../../bridge/esl/frame-parser.js';

/** test/fixtures, also when this runs compiled from dist/test/support (benchmarks, the fuzz harness): dist holds no fixtures. */
export const FIXTURES = ((): string => {
  const beside = fileURLToPath(new URL('../fixtures/', import.meta.url));
  return existsSync(beside) ? beside : fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));
})();

export function fixturePath(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

export function readFixture(...parts: string[]): Buffer {
  return readFileSync(fixturePath(...parts));
}

/** Every frame of a captured ESL stream, in order. */
export function eslFrames(name: string): EslFrame[] {
  return new EslFrameParser().push(readFixture('esl', name));
}

export interface DatagramFixture {
  file: string;
  bin: Buffer;
  decoded: { mode: 'plain' | 'psk'; headers: [string, string][]; body: string | null };
}

/** The .bin datagrams of a multicast fixture folder with their decoded .json. */
export function datagramFixtures(folder: string): DatagramFixture[] {
  return readdirSync(fixturePath(folder))
    .filter((f) => f.endsWith('.bin'))
    .sort()
    .map((file) => ({
      file,
      bin: readFixture(folder, file),
      decoded: JSON.parse(readFileSync(fixturePath(folder, file.replace(/\.bin$/, '.json')), 'utf8')),
    }));
}
