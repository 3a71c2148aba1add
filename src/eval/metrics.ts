/**
 * Clustering and classification scores in plain TypeScript, float64, as scikit-learn computes them (≥ 0.22):
 *
 * - NMI and AMI with the **arithmetic** mean of the two entropies as normaliser (sklearn's default since 0.22; it
 *   used to be 'max' for AMI — docs/algorithm.md §12). The expected mutual information of AMI is the exact
 *   hypergeometric sum (Vinh, Epps & Bailey 2010), term for term as sklearn's `expected_mutual_information`.
 * - ARI (Hubert & Arabie 1985).
 * - Clustering accuracy: the best one-to-one matching of clusters to classes (Hungarian algorithm), as DEC/ProPos
 *   report it; K may differ from the number of classes, unmatched clusters then count as errors.
 *
 * Labels are any integers (a labelling is only a partition); both arrays must have the same length.
 */

/** Counts of (true class, predicted cluster) pairs over the distinct labels of each side, in ascending label order. */
export interface Contingency {
  /** Distinct true labels, ascending (row order). */
  readonly rowLabels: readonly number[];
  /** Distinct predicted labels, ascending (column order). */
  readonly colLabels: readonly number[];
  /** rows x cols counts, row-major. */
  readonly counts: Float64Array;
  readonly rowSums: Float64Array;
  readonly colSums: Float64Array;
  readonly n: number;
}

const dense = (labels: ArrayLike<number>) => {
  const distinct = [...new Set(Array.from(labels))].sort((a, b) => a - b);
  const index = new Map(distinct.map((v, i) => [v, i]));
  return { distinct, codes: Int32Array.from(labels, (v) => index.get(v)!) };
};

export const contingency = (labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): Contingency => {
  if (labelsTrue.length !== labelsPred.length) {
    throw new RangeError(`labelings differ in length: ${labelsTrue.length} and ${labelsPred.length}`);
  }
  for (const labels of [labelsTrue, labelsPred]) {
    for (let i = 0; i < labels.length; i++) {
      if (!Number.isInteger(labels[i])) throw new RangeError(`label ${labels[i]} at ${i} is not an integer`);
    }
  }
  const t = dense(labelsTrue), p = dense(labelsPred);
  const rows = t.distinct.length, cols = p.distinct.length;
  const counts = new Float64Array(rows * cols);
  const rowSums = new Float64Array(rows), colSums = new Float64Array(cols);
  for (let i = 0; i < t.codes.length; i++) {
    const r = t.codes[i]!, c = p.codes[i]!;
    counts[r * cols + c]! += 1;
    rowSums[r]! += 1;
    colSums[c]! += 1;
  }
  return { rowLabels: t.distinct, colLabels: p.distinct, counts, rowSums, colSums, n: labelsTrue.length };
};

/** (n − 1)! for n = 1..22, exact in float64 (21! = 2¹⁸ · an odd number below 2⁵³). */
const FACTORIALS: readonly number[] = (() => {
  const f = [1];
  for (let i = 1; i < 22; i++) f.push(f[i - 1]! * i);
  return f;
})();

/**
 * ln Γ(x) for x > 0. Integers up to 22 as the log of an exact factorial (one rounding: ln Γ(1) = ln Γ(2) = 0
 * exactly); otherwise Stirling's series to the x⁻⁹ term at x ≥ 10 (truncation error below 2e-14 there), reached from
 * smaller x by dividing out one product. AMI only needs integer arguments: for those the relative error is near
 * 1e-15, as C's lgamma; elsewhere the subtraction can lose a few more bits (absolute error up to ~1e-14 below 10).
 */
export const logGamma = (x: number): number => {
  if (!(x > 0)) return x === 0 ? Infinity : NaN;
  if (Number.isInteger(x) && x <= FACTORIALS.length) return Math.log(FACTORIALS[x - 1]!);
  let product = 1;
  while (x < 10) {
    product *= x;
    x += 1;
  }
  const inv = 1 / x, inv2 = inv * inv;
  const series = inv * (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 * (1 / 1680 - inv2 / 1188))));
  return (x - 0.5) * Math.log(x) - x + 0.5 * Math.log(2 * Math.PI) + series - Math.log(product);
};

/** Shannon entropy (natural log) of the counts' distribution, as sklearn's `_entropy`. */
const entropyOf = (sums: Float64Array, n: number): number => {
  if (sums.length <= 1) return 0; // sklearn: a single label has entropy 0 (its formula also gives 0)
  let h = 0;
  for (const s of sums) if (s > 0) h -= (s / n) * (Math.log(s) - Math.log(n));
  return h;
};

/** Entropy of a labelling, natural log. */
export const entropy = (labels: ArrayLike<number>): number => {
  const c = contingency(labels, labels);
  return entropyOf(c.rowSums, c.n);
};

/** Mutual information of the contingency table (nats), in sklearn's order of operations, clipped at 0. */
const mutualInfoOf = (c: Contingency): number => {
  const rows = c.rowSums.length, cols = c.colSums.length;
  if (rows === 1 || cols === 1) return 0;
  const logN = Math.log(c.n);
  let mi = 0;
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      const nij = c.counts[r * cols + k]!;
      if (nij === 0) continue;
      const p = nij / c.n;
      const term = p * (Math.log(nij) - logN) + p * (-Math.log(c.rowSums[r]! * c.colSums[k]!) + logN + logN);
      if (Math.abs(term) >= Number.EPSILON) mi += term; // sklearn zeroes terms below machine epsilon
    }
  }
  return Math.max(0, mi);
};

export const mutualInfo = (labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number =>
  mutualInfoOf(contingency(labelsTrue, labelsPred));

/**
 * E[MI] over all labellings with the same cluster sizes (the hypergeometric model of Vinh et al. 2010): the sum over
 * cells (i, j) and over every feasible n_ij of (n_ij / N) log(N n_ij / (a_i b_j)) P(n_ij), with P computed in log
 * space from log-gamma. Term for term as sklearn's `expected_mutual_information`.
 */
export const expectedMutualInfo = (c: Contingency): number => {
  const a = c.rowSums, b = c.colSums, n = c.n;
  if (a.length === 1 || b.length === 1) return 0;
  // ln k! for k = 0..N: every log-gamma the sum needs is of an integer, so one table serves them all.
  const logFactorial = new Float64Array(n + 1);
  for (let k = 2; k <= n; k++) logFactorial[k] = logGamma(k + 1);
  const logN = Math.log(n);
  let emi = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < b.length; j++) {
      const ai = a[i]!, bj = b[j]!;
      const outer = logFactorial[ai]! + logFactorial[bj]! + logFactorial[n - ai]! + logFactorial[n - bj]! -
        logFactorial[n]!;
      const logAB = Math.log(ai) + Math.log(bj);
      const start = Math.max(1, ai - n + bj), end = Math.min(ai, bj);
      for (let nij = start; nij <= end; nij++) {
        const term2 = logN + Math.log(nij) - logAB;
        const gln = outer - logFactorial[nij]! - logFactorial[ai - nij]! - logFactorial[bj - nij]! -
          logFactorial[n - ai - bj + nij]!;
        emi += (nij / n) * term2 * Math.exp(gln);
      }
    }
  }
  return emi;
};

/** Both labellings a single cluster (or empty): sklearn calls that a perfect match. */
const trivialMatch = (c: Contingency) =>
  (c.rowSums.length === 1 && c.colSums.length === 1) || (c.rowSums.length === 0 && c.colSums.length === 0);

/** Normalised mutual information, arithmetic normalisation: MI / ((H(true) + H(pred)) / 2). */
export const nmi = (labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number => {
  const c = contingency(labelsTrue, labelsPred);
  if (trivialMatch(c)) return 1;
  const mi = mutualInfoOf(c);
  if (mi === 0) return 0;
  return mi / ((entropyOf(c.rowSums, c.n) + entropyOf(c.colSums, c.n)) / 2);
};

/** Adjusted mutual information, arithmetic normalisation: (MI − E[MI]) / (mean(H) − E[MI]), as sklearn. */
export const ami = (labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number => {
  const c = contingency(labelsTrue, labelsPred);
  if (trivialMatch(c)) return 1;
  if (c.rowSums.length === 1 || c.colSums.length === 1) return 0;
  const mi = mutualInfoOf(c);
  const emi = expectedMutualInfo(c);
  const normaliser = (entropyOf(c.rowSums, c.n) + entropyOf(c.colSums, c.n)) / 2;
  // sklearn keeps both differences away from 0 with their sign, so a perfect match is 1 and never 0 / 0.
  const away = (x: number) => (x < 0 ? Math.min(x, -Number.EPSILON) : Math.max(x, Number.EPSILON));
  return away(mi - emi) / away(normaliser - emi);
};

const pairs = (x: number) => (x * (x - 1)) / 2;

/**
 * Adjusted Rand index (Hubert & Arabie): (Σ C(n_ij, 2) − E) / (½ (Σ C(a_i, 2) + Σ C(b_j, 2)) − E) with
 * E = Σ C(a_i, 2) Σ C(b_j, 2) / C(N, 2). The pair counts are exact integers in float64 up to N ≈ 10⁸.
 */
export const ari = (labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number => {
  const c = contingency(labelsTrue, labelsPred);
  let index = 0, sumA = 0, sumB = 0;
  for (const v of c.counts) index += pairs(v);
  for (const v of c.rowSums) sumA += pairs(v);
  for (const v of c.colSums) sumB += pairs(v);
  const total = pairs(c.n);
  const maxIndex = (sumA + sumB) / 2;
  // Full agreement (sklearn's special case: no pair split one way and joined the other), including N < 2.
  if (index === sumA && index === sumB) return 1;
  const expected = total === 0 ? 0 : (sumA * sumB) / total;
  return (index - expected) / (maxIndex - expected);
};

/**
 * The assignment of rows to distinct columns of maximal total weight, for a rows x cols matrix (row-major); when
 * rows > cols, only `cols` rows get a column. Returns, per row, its column or −1. The O(n² m) Hungarian algorithm
 * with potentials (Kuhn–Munkres as in Jonker–Volgenant's shortest augmenting paths).
 */
export const maxWeightMatching = (weights: ArrayLike<number>, rows: number, cols: number): Int32Array => {
  if (weights.length !== rows * cols) throw new RangeError(`${weights.length} weights do not fill ${rows} x ${cols}`);
  const transpose = rows > cols;
  const n = transpose ? cols : rows, m = transpose ? rows : cols; // n <= m
  const cost = (i: number, j: number) => -(transpose ? weights[j * cols + i]! : weights[i * cols + j]!);
  // 1-based arrays as in the classic formulation: p[j] = row matched to column j (0: none), u/v the potentials.
  const u = new Float64Array(n + 1), v = new Float64Array(m + 1);
  const p = new Int32Array(m + 1), way = new Int32Array(m + 1);
  const minv = new Float64Array(m + 1);
  const used = new Uint8Array(m + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0]!;
      let delta = Infinity, j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = cost(i0 - 1, j - 1) - u[i0]! - v[j]!;
        if (cur < minv[j]!) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j]! < delta) {
          delta = minv[j]!;
          j1 = j;
        }
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]!]! += delta;
          v[j]! -= delta;
        } else minv[j]! -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0]!;
      p[j0] = p[j1]!;
      j0 = j1;
    } while (j0 !== 0);
  }
  const match = new Int32Array(rows).fill(-1);
  for (let j = 1; j <= m; j++) {
    if (p[j] === 0) continue;
    if (transpose) match[j - 1] = p[j]! - 1;
    else match[p[j]! - 1] = j - 1;
  }
  return match;
};

/**
 * Clustering accuracy: the fraction of samples whose cluster is matched to their class under the best one-to-one
 * matching of clusters to classes (Hungarian). With more clusters than classes the extra clusters match nothing.
 */
export const clusteringAccuracy = (labelsTrue: ArrayLike<number>, labelsPred: ArrayLike<number>): number => {
  const c = contingency(labelsTrue, labelsPred);
  if (c.n === 0) return 0;
  const rows = c.rowSums.length, cols = c.colSums.length;
  const match = maxWeightMatching(c.counts, rows, cols);
  let hits = 0;
  match.forEach((col, r) => col >= 0 && (hits += c.counts[r * cols + col]!));
  return hits / c.n;
};

/** Fraction of positions where prediction equals label. */
export const top1 = (labels: ArrayLike<number>, predictions: ArrayLike<number>): number => {
  if (labels.length !== predictions.length) {
    throw new RangeError(`labels and predictions differ in length: ${labels.length} and ${predictions.length}`);
  }
  if (labels.length === 0) return 0;
  let hits = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] === predictions[i]) hits++;
  return hits / labels.length;
};

/** The four scores of a clustering against class labels. */
export interface ClusteringScores {
  readonly ami: number;
  readonly nmi: number;
  readonly ari: number;
  readonly acc: number;
}

export const scoreClustering = (labels: ArrayLike<number>, clusters: ArrayLike<number>): ClusteringScores => ({
  ami: ami(labels, clusters),
  nmi: nmi(labels, clusters),
  ari: ari(labels, clusters),
  acc: clusteringAccuracy(labels, clusters),
});
