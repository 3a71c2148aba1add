/**
 * The concentration φ of every prototype (`concentration` stage), exactly as PCL's `run_kmeans` computes it
 * (docs/algorithm.md §4), from the final assignment pass of k-means:
 *
 *   1. φ_c = mean_z ‖v'_z − c‖ / ln(Z + 10) over the Z > 1 members of cluster c (the square root of faiss's squared
 *      distance to the unnormalised centroid);
 *   2. clusters of 0 or 1 member take the largest φ of step 1;
 *   3. all K values are clipped to their 10th and 90th percentiles (NumPy's default linear interpolation);
 *   4. φ ← τ φ / mean(φ), so that the mean concentration is the temperature τ.
 *
 * Plain TypeScript in float64 (K ≤ 100k values; the sums over N points are one pass), returned as float32 as PCL's
 * tensors are.
 */
import { Effect, Schema } from "effect";
import type { Clustering, Clusterings } from "./kmeans.ts";

export class ConcentrationError extends Schema.TaggedError<ConcentrationError>()("ConcentrationError", {
  message: Schema.String,
}) {}

/** The smoothing α of the paper (hard-coded 10 in the official code). */
export const ALPHA = 10;

/**
 * NumPy's `np.percentile(values, q)` with its default method ('linear'): the sorted values interpolated at position
 * q/100 · (n − 1), computed and interpolated as NumPy does (from the upper neighbour when the fraction is ≥ 0.5).
 */
export const percentile = (values: ArrayLike<number>, q: number): number => {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  if (n === 0) return NaN;
  const quantile = q / 100;
  const position = (n - 1) * quantile; // NumPy's virtual index for 'linear', in its order of operations
  if (position >= n - 1) return sorted[n - 1]!;
  if (position < 0) return sorted[0]!;
  const below = Math.floor(position);
  const t = position - below;
  const a = sorted[below]!, b = sorted[below + 1]!;
  const diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
};

/** Every intermediate of the computation, for tests and diagnostics. */
export interface ConcentrationSteps {
  /** Step 1 (0 for clusters of 0 or 1 member). */
  readonly raw: Float64Array;
  /** Step 2. */
  readonly filled: Float64Array;
  /** The 10th and 90th percentiles of `filled`. */
  readonly low: number;
  readonly high: number;
  /** The final φ (steps 3 and 4). */
  readonly phi: Float32Array<ArrayBuffer>;
}

/**
 * φ for one clustering from `im2cluster` (N cluster ids < k) and `distances` (N **squared** distances to the
 * centroids, as faiss returns them).
 */
export const concentrationSteps = (
  im2cluster: ArrayLike<number>,
  distances: ArrayLike<number>,
  k: number,
  temperature: number,
): Effect.Effect<ConcentrationSteps, ConcentrationError> =>
  Effect.gen(function* () {
    const fail = (message: string) => new ConcentrationError({ message: `concentration (K = ${k}): ${message}` });
    if (!(Number.isFinite(temperature) && temperature > 0)) {
      return yield* fail(`the temperature must be a positive number, not ${temperature}`);
    }
    if (!(Number.isInteger(k) && k >= 1)) return yield* fail("K must be a positive integer");
    if (im2cluster.length !== distances.length) {
      return yield* fail(`${im2cluster.length} assignments but ${distances.length} distances`);
    }
    const sum = new Float64Array(k);
    const size = new Float64Array(k);
    for (let i = 0; i < im2cluster.length; i++) {
      const c = im2cluster[i]!, d2 = distances[i]!;
      if (!(Number.isInteger(c) && c >= 0 && c < k)) return yield* fail(`point ${i} is assigned to cluster ${c}`);
      if (!(d2 >= 0 && Number.isFinite(d2))) return yield* fail(`point ${i} has squared distance ${d2}`);
      sum[c]! += Math.sqrt(d2);
      size[c]! += 1;
    }
    const raw = new Float64Array(k);
    let max = 0;
    for (let c = 0; c < k; c++) {
      if (size[c]! > 1) {
        raw[c] = sum[c]! / size[c]! / Math.log(size[c]! + ALPHA);
        max = Math.max(max, raw[c]!);
      }
    }
    const filled = raw.map((v, c) => (size[c]! > 1 ? v : max));
    const low = percentile(filled, 10);
    const high = percentile(filled, 90);
    const clipped = filled.map((v) => Math.min(Math.max(v, low), high));
    const mean = clipped.reduce((a, b) => a + b, 0) / k;
    if (!(mean > 0)) {
      return yield* fail(
        "every φ is 0 (no cluster has two members at distinct positions), so φ cannot be scaled to mean τ",
      );
    }
    const phi = Float32Array.from(clipped, (v) => (temperature * v) / mean);
    return { raw, filled, low, high, phi };
  });

/** One clustering with its prototypes' concentrations: what ProtoNCE uses of one K. */
export interface PrototypeSet extends Clustering {
  /** K, φ of each prototype, with mean τ. */
  readonly concentration: Float32Array<ArrayBuffer>;
}

/** The E-step's result: for each K, prototypes, assignments and φ. */
export interface Prototypes {
  readonly n: number;
  readonly d: number;
  readonly temperature: number;
  readonly clusterings: ReadonlyArray<PrototypeSet>;
}

/** φ for every clustering, scaled to mean `temperature` (τ, the InfoNCE temperature; PCL: 0.2). */
export const concentration = (
  clusterings: Clusterings,
  temperature: number,
): Effect.Effect<Prototypes, ConcentrationError> =>
  Effect.gen(function* () {
    const out: PrototypeSet[] = [];
    for (const c of clusterings.clusterings) {
      const steps = yield* concentrationSteps(c.im2cluster, c.distances, c.k, temperature);
      out.push({ ...c, concentration: steps.phi });
    }
    return { n: clusterings.n, d: clusterings.d, temperature, clusterings: out };
  });
