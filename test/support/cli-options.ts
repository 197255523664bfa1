/**
 * `--name N` from the command line of a harness (fuzz, soak, benches), or its fallback;
 * a value that fails `valid` ends the process with usage code 2 and says what is needed.
 */
export function numberOption(tool: string, name: string, fallback: number, valid: (n: number) => boolean, needs: string): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!valid(value)) {
    process.stderr.write(`${tool}: --${name} needs ${needs}, got ${JSON.stringify(process.argv[i + 1])}\n`);
    process.exit(2);
  }
  return value;
}

export const isPositive = (n: number) => Number.isFinite(n) && n > 0;
