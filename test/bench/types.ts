/** One row of docs/benchmarks.json: a figure next to a baseline measured in the same run. */
export interface BenchResult {
  case: string;
  value: number;
  unit: string;
  baseline: string;
  baseline_value: number;
  /** value / baseline_value (or the inverse where lower is better; the case says which in `notes`). */
  ratio: number;
  target: number;
  met: boolean;
  notes?: string;
}

export interface BenchOptions {
  /** CI mode: a few seconds per case, same code paths. */
  quick: boolean;
}

/** Each file under test/bench exports one of these; run.ts calls them in turn. */
export type BenchCase = (options: BenchOptions) => Promise<BenchResult[]>;
