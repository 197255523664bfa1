import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);

/** Whether this code runs from the TypeScript sources (tests) or from dist/ (npm run demo). */
export const FROM_SOURCES = here.endsWith('.ts');

/** The repository root: the nearest directory above this file holding package.json (the same from compose/local and dist/compose/local). */
export const REPO_ROOT = ((): string => {
  for (let dir = dirname(here); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'test', 'fixtures'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no repository root above ${here}`);
  }
})();

/** test/fixtures of the repository (dist/ holds no fixtures). */
export function fixtureFile(...parts: string[]): string {
  return join(REPO_ROOT, 'test', 'fixtures', ...parts);
}
