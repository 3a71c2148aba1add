/**
 * The host side of faiss's k-means as PCL runs it (docs/algorithm.md §3): the seeded training subsample, each
 * restart's initial points, and the plan for splitting empty clusters. The kernels are in src/ops/kmeans.ts, the
 * driver in ./kmeans.ts.
 *
 * The random streams need not match faiss's (it uses mt19937); they are ours: `SequentialRng` (src/data/rng.ts).
 */
import { SequentialRng } from "../data/rng.ts";

/**
 * The first `m` entries of a seeded random permutation of 0..n−1: forward Fisher–Yates as faiss's `rand_perm`,
 * stopped after `m` swaps (the first m entries are then final).
 */
export const permutationPrefix = (n: number, m: number, seed: number): Uint32Array<ArrayBuffer> => {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const rng = new SequentialRng(seed);
  for (let i = 0; i < Math.min(m, n - 1); i++) {
    const j = i + rng.int(n - i);
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm.slice(0, m);
};

/** faiss's seed for the initial permutation of restart `redo`. */
export const restartSeed = (seed: number, redo: number): number => seed + 1 + redo * 15486557;

/**
 * The training rows when `n` exceeds `k · maxPointsPerCentroid` (faiss then trains on that many points of a
 * permutation seeded with `seed`), else undefined (all rows, in order).
 */
export const trainingRows = (n: number, k: number, maxPointsPerCentroid: number, seed: number) =>
  n > k * maxPointsPerCentroid ? permutationPrefix(n, k * maxPointsPerCentroid, seed) : undefined;

/** Rows of the training set that restart `redo` starts from: K distinct points. */
export const initialRows = (nTrain: number, k: number, seed: number, redo: number) =>
  permutationPrefix(nTrain, k, restartSeed(seed, redo));

/**
 * faiss's `split_clusters` plan for the cluster sizes `hassign` (float32, as faiss keeps them; updated in place):
 * each empty cluster ci, in order, takes cluster cj found by scanning cj = 0, 1, ... cyclically and accepting cj
 * with probability (size_j − 1) / (n − k), drawn from a generator seeded 1234 on every call; then the two share
 * cj's size. Returns [ci, cj] pairs, in the order they must be applied. If no cluster has more than one point
 * (impossible when n ≥ k), the remaining empty clusters are left as they are rather than looping forever.
 */
export const splitPlan = (hassign: Float32Array, n: number): Array<readonly [number, number]> => {
  const k = hassign.length;
  const rng = new SequentialRng(1234);
  const plan: Array<readonly [number, number]> = [];
  const denominator = Math.fround(n - k);
  for (let ci = 0; ci < k; ci++) {
    if (hassign[ci] !== 0) continue;
    if (!hassign.some((h) => h > 1)) break;
    let cj = 0;
    for (;; cj = (cj + 1) % k) {
      const p = Math.fround((hassign[cj]! - 1) / denominator);
      if (rng.float() < p) break;
    }
    plan.push([ci, cj]);
    hassign[ci] = hassign[cj]! / 2;
    hassign[cj] = hassign[cj]! - hassign[ci]!;
  }
  return plan;
};
