/**
 * The host side of faiss's k-means as PCL runs it (docs/algorithm.md §3): the seeded training subsample, each
 * restart's initial points, and the plan for splitting empty clusters. The kernels are in src/ops/kmeans.ts, the
 * driver in ./kmeans.ts.
 *
 * The random streams need not match faiss's (it uses mt19937); they are ours, seeded and documented: mulberry32 (a
 * Weyl counter through a 32-bit mixer), with seeds above 2^32 folded in, and uniform draws from two outputs (53 bits),
 * so integer draws are unbiased to 2^-21 for any range below 2^32. (Augmentation, sampling and negatives use the
 * counter-based Philox of src/data/rng.ts instead: those draws must be reproducible out of order, these are
 * sequential.)
 */

export class Rng {
  private state: number;

  constructor(seed: number) {
    const hi = Math.floor(seed / 2 ** 32);
    this.state = ((seed >>> 0) ^ Math.imul(hi >>> 0, 0x9e3779b9)) >>> 0;
  }

  u32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return (this.u32() * 2 ** 21 + (this.u32() >>> 11)) / 2 ** 53;
  }

  /** Uniform integer in [0, m). */
  int(m: number): number {
    return Math.floor(this.float() * m);
  }
}

/**
 * The first `m` entries of a seeded random permutation of 0..n−1: forward Fisher–Yates as faiss's `rand_perm`,
 * stopped after `m` swaps (the first m entries are then final).
 */
export const permutationPrefix = (n: number, m: number, seed: number): Uint32Array<ArrayBuffer> => {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const rng = new Rng(seed);
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
  const rng = new Rng(1234);
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
