/**
 * `npm run fuzz -- --count N [--seed S]`: mutation fuzzing of datagrams, ESL frames and
 * NATS messages through the whole bridge in one process (fuzz.ts). Prints the report
 * and exits 1 when anything crashed or an ESL command came out malformed.
 */
import { numberOption } from '../support/cli-options.js';
import { formatReport, runFuzz } from './fuzz.js';

const MAX_COUNT = 10_000_000;
const option = (name: string, fallback: number) => numberOption('fuzz', name, fallback, (n) => Number.isSafeInteger(n) && n >= 0, 'a whole number');

const count = option('count', 1_000);
if (count < 1 || count > MAX_COUNT) {
  process.stderr.write(`fuzz: --count must be 1 to ${MAX_COUNT}\n`);
  process.exit(2);
}
const seed = option('seed', Math.floor(Math.random() * 2 ** 31));
const started = Date.now();
const report = await runFuzz({ count, seed });
process.stdout.write(formatReport(report));
process.stdout.write(`took ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.exitCode = report.crashes.length + report.malformedCommands.length > 0 ? 1 : 0;
