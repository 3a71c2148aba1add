/**
 * Comparing methods over seeds, as quality claims are made here: each metric's mean ± sample standard deviation per
 * method, and the paired difference of two methods (same seed) as its mean ± standard error.
 */
import type { Evaluation } from "./metrics.ts";

export interface Spread {
  readonly n: number;
  readonly mean: number;
  /** Sample standard deviation (n − 1); 0 for one value. */
  readonly sd: number;
}

/** Mean and sample standard deviation of the finite values. */
export const spread = (values: readonly number[]): Spread => {
  const xs = values.filter(Number.isFinite);
  const n = xs.length;
  const mean = n === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / n;
  const sd = n < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  return { n, mean, sd };
};

export interface Difference extends Spread {
  /** Standard error of the mean difference: sd / √n. */
  readonly se: number;
}

/** a − b over the pairs where both are finite (same seed): mean, sd and standard error. */
export const pairedDifference = (a: readonly number[], b: readonly number[]): Difference => {
  const d = a.map((x, i) => x - b[i]!).filter(Number.isFinite);
  const s = spread(d);
  return { ...s, se: s.n < 2 ? NaN : s.sd / Math.sqrt(s.n) };
};

/** The compared metrics: name, value of an evaluation (fractions), and whether it prints as a percentage. */
export const METRICS: ReadonlyArray<readonly [string, (e: Evaluation) => number | undefined, boolean]> = [
  ["kNN k=20", (e) => e.knn?.["k20"], true],
  ["kNN k=200", (e) => e.knn?.["k200"], true],
  ["linear", (e) => e.linear, true],
  ["AMI", (e) => e.clustering?.ami, false],
  ["NMI", (e) => e.clustering?.nmi, false],
];

/** One finished run of a comparison. */
export interface SeedRun {
  readonly method: string;
  readonly seed: number;
  readonly evaluation: Evaluation | undefined;
  /** Training time (every epoch's wall time). */
  readonly seconds: number;
}

export interface MethodSummary {
  readonly method: string;
  readonly seeds: readonly number[];
  /** Per metric name, and "seconds". */
  readonly metrics: Readonly<Record<string, Spread>>;
}

const values = (runs: readonly SeedRun[], f: (r: SeedRun) => number | undefined) => runs.map((r) => f(r) ?? NaN);

/** Each method's spread over its seeds, for every metric and the training time. */
export const summarise = (runs: readonly SeedRun[], methods: readonly string[]): MethodSummary[] =>
  methods.map((method) => {
    const mine = runs.filter((r) => r.method === method).sort((a, b) => a.seed - b.seed);
    const metrics: Record<string, Spread> = {};
    for (const [name, get] of METRICS) metrics[name] = spread(values(mine, (r) => r.evaluation && get(r.evaluation)));
    metrics["seconds"] = spread(values(mine, (r) => r.seconds));
    return { method, seeds: mine.map((r) => r.seed), metrics };
  });

/** `a − b` per metric (and training time), paired by seed over the seeds both have. */
export const compareMethods = (runs: readonly SeedRun[], a: string, b: string): Record<string, Difference> => {
  const seeds = [...new Set(runs.filter((r) => r.method === a).map((r) => r.seed))]
    .filter((s) => runs.some((r) => r.method === b && r.seed === s)).sort((x, y) => x - y);
  const of = (method: string, f: (r: SeedRun) => number | undefined) =>
    seeds.map((s) => f(runs.find((r) => r.method === method && r.seed === s)!) ?? NaN);
  const out: Record<string, Difference> = {};
  for (const [name, get] of METRICS) {
    const f = (r: SeedRun) => r.evaluation && get(r.evaluation);
    out[name] = pairedDifference(of(a, f), of(b, f));
  }
  out["seconds"] = pairedDifference(of(a, (r) => r.seconds), of(b, (r) => r.seconds));
  return out;
};
