import assert from "node:assert/strict";
import {
  ami,
  ari,
  clusteringAccuracy,
  contingency,
  entropy,
  expectedMutualInfo,
  logGamma,
  maxWeightMatching,
  mutualInfo,
  nmi,
  scoreClustering,
  top1,
} from "../../src/eval/metrics.ts";
import { randoms } from "../helpers.ts";

/** xorshift32 labels in [0, k): the same generator as the Python script that produced the reference values below. */
const xorshift = (n: number, k: number, seed: number): number[] => {
  let x = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out.push(x % k);
  }
  return out;
};

/** A fraction `frac` of the labels replaced by random clusters, the others mapped class → (7 class + 3) mod k. */
const noisy = (labels: readonly number[], k: number, frac: number, seed: number): number[] => {
  const r = xorshift(labels.length, 1000, seed), s = xorshift(labels.length, k, seed + 1);
  return labels.map((t, i) => (r[i]! < frac * 1000 ? s[i]! : (t * 7 + 3) % k));
};

/**
 * Reference values from scikit-learn 1.9.1 (adjusted_mutual_info_score, normalized_mutual_info_score with the default
 * average_method='arithmetic', adjusted_rand_score) and scipy 1.17.1 (linear_sum_assignment on the cluster x class
 * counts, for the accuracy), computed on the labelings that `xorshift` and `noisy` generate here.
 */
const SKLEARN = {
  doc: { ami: 0.5714285714285715, nmi: 0.7999999999999999, ari: 0.5714285714285714, acc: 0.75 },
  independent: { ami: -0.0025318010314992778, nmi: 0.006391613464126421, ari: -0.0012616835699186728, acc: 0.127 },
  noisy15: { ami: 0.5427491051796822, nmi: 0.5554465990995763, ari: 0.5479748303435951, acc: 0.73 },
  noisy3: { ami: 0.42756194618874793, nmi: 0.43101910665102844, ari: 0.3869156731166792, acc: 0.532 },
  noisy100: { ami: 0.33170468336111564, nmi: 0.34163553996735624, ari: 0.3600665577215557, acc: 0.5064 },
};

const CASES: Record<keyof typeof SKLEARN, () => [number[], number[]]> = {
  doc: () => [[0, 0, 1, 1], [0, 0, 1, 2]],
  independent: () => [xorshift(2000, 10, 1), xorshift(2000, 10, 2)],
  noisy15: () => {
    const t = xorshift(1000, 10, 3);
    return [t, noisy(t, 15, 0.3, 4)];
  },
  noisy3: () => {
    const t = xorshift(500, 5, 5);
    return [t, noisy(t, 3, 0.2, 6)];
  },
  noisy100: () => {
    const t = xorshift(10000, 10, 7);
    return [t, noisy(t, 100, 0.5, 8)];
  },
};

// Tolerance 1e-12 absolute: the same float64 formulas as sklearn, only the order of some sums differs (AMI divides
// by a difference of entropies, which can magnify rounding by ~100x; still far below 1e-12).
for (const [name, make] of Object.entries(CASES)) {
  Deno.test(`metrics: ${name} labelings match scikit-learn's AMI, NMI, ARI and scipy's Hungarian accuracy`, () => {
    const [t, p] = make();
    const got = scoreClustering(t, p);
    const want = SKLEARN[name as keyof typeof SKLEARN];
    for (const key of ["ami", "nmi", "ari", "acc"] as const) {
      assert.ok(Math.abs(got[key] - want[key]) < 1e-12, `${name} ${key}: ${got[key]}, sklearn ${want[key]}`);
    }
  });
}

Deno.test("metrics: the documentation example by hand (MI = ln 2, H = ln 2 and 1.5 ln 2, E[MI] = 2/3 ln 2)", () => {
  // true [0,0,1,1], pred [0,0,1,2]: pred refines true, so MI = H(true) = ln 2; H(pred) = 1.5 ln 2.
  // E[MI]: the two cells with a = b = 2 take n = 1 (p 4/6, term 0) or n = 2 (p 1/6, term ½ ln 2): ln 2 / 12 each;
  // the four cells with a = 2, b = 1 take n = 1 (p 1/2, term ¼ ln 2): ln 2 / 8 each. Total (1/6 + 1/2) ln 2.
  // AMI = (1 − 2/3) / (1.25 − 2/3) = 4/7; NMI = 1 / 1.25 = 0.8.
  // ARI: Σ C(n_ij, 2) = 1, Σ C(a, 2) = 2, Σ C(b, 2) = 1, C(4, 2) = 6: E = 1/3, (1 − 1/3) / (1.5 − 1/3) = 4/7.
  const t = [0, 0, 1, 1], p = [0, 0, 1, 2];
  const ln2 = Math.LN2;
  assert.ok(Math.abs(mutualInfo(t, p) - ln2) < 1e-15);
  assert.ok(Math.abs(entropy(p) - 1.5 * ln2) < 1e-15);
  assert.ok(Math.abs(expectedMutualInfo(contingency(t, p)) - (2 / 3) * ln2) < 1e-14);
  assert.ok(Math.abs(ami(t, p) - 4 / 7) < 1e-14);
  assert.ok(Math.abs(nmi(t, p) - 0.8) < 1e-15);
  assert.ok(Math.abs(ari(t, p) - 4 / 7) < 1e-15);
  assert.equal(clusteringAccuracy(t, p), 0.75);
});

Deno.test("metrics: identical and permuted labelings score 1; relabelling either side changes nothing", () => {
  const t = xorshift(300, 7, 11);
  const perm = [3, 6, 0, 5, 1, 4, 2];
  const permuted = t.map((v) => perm[v]! * 10 - 5); // any integers: a labelling is only a partition
  for (const p of [t, permuted]) {
    const s = scoreClustering(t, p);
    for (const [k, v] of Object.entries(s)) assert.ok(Math.abs(v - 1) < 1e-12, `${k} = ${v}`);
  }
  const p = noisy(t, 9, 0.4, 12);
  const a = scoreClustering(t, p);
  const b = scoreClustering(t.map((v) => perm[v]!), p.map((v) => 100 - v));
  for (const k of ["ami", "nmi", "ari", "acc"] as const) assert.ok(Math.abs(a[k] - b[k]) < 1e-12, k);
});

Deno.test("metrics: independent random labelings have AMI and ARI near 0", () => {
  for (const seed of [21, 22, 23]) {
    const t = xorshift(2000, 10, seed), p = xorshift(2000, 12, seed + 100);
    assert.ok(Math.abs(ami(t, p)) < 0.01, `AMI ${ami(t, p)}`);
    assert.ok(Math.abs(ari(t, p)) < 0.01, `ARI ${ari(t, p)}`);
    assert.ok(nmi(t, p) > 0, "NMI is not adjusted for chance: positive on random labels");
  }
});

Deno.test("metrics: sklearn's limit cases (one cluster each side, one side constant, single sample)", () => {
  assert.equal(ami([1, 1, 1], [4, 4, 4]), 1);
  assert.equal(nmi([1, 1, 1], [4, 4, 4]), 1);
  assert.equal(ari([1, 1, 1], [4, 4, 4]), 1);
  assert.equal(ami([0, 1, 2, 3], [0, 0, 0, 0]), 0);
  assert.equal(nmi([0, 1, 2, 3], [0, 0, 0, 0]), 0);
  assert.equal(ari([0, 1, 2, 3], [0, 0, 0, 0]), 0);
  assert.equal(ari([0], [0]), 1);
  assert.equal(clusteringAccuracy([0, 1, 2, 3], [0, 0, 0, 0]), 0.25);
  assert.throws(() => ami([0, 1], [0]), RangeError);
  assert.throws(() => ari([0, 1.5], [0, 1]), RangeError);
});

Deno.test("metrics: log-gamma matches Python's math.lgamma", () => {
  const want: Record<string, number> = {
    "0.5": 0.5723649429247004,
    "1": 0,
    "1.5": -0.12078223763524543,
    "2": 0,
    "3.7": 1.4280723266653883,
    "10": 12.801827480081467,
    "10.5": 13.940625219403763,
    "100": 359.1342053695754,
    "12345": 103953.5324720479,
    "60001": 600132.410462097,
  };
  // Integers (all that AMI uses): 4 ulps relative. Others: 2e-14 absolute (the recurrence below 10 subtracts two
  // numbers near ln Γ(10) ≈ 12.8, losing a few bits).
  for (const [x, v] of Object.entries(want)) {
    const got = logGamma(Number(x));
    const tol = Number.isInteger(Number(x)) ? 4 * Number.EPSILON * Math.abs(v) : 2e-14;
    assert.ok(Math.abs(got - v) <= tol, `lgamma(${x}) = ${got}, want ${v}`);
  }
});

/** The best total weight over all injective row → column maps (rows ≤ cols), by enumeration. */
const bruteForce = (w: ArrayLike<number>, rows: number, cols: number): number => {
  let best = -Infinity;
  const used = new Array<boolean>(cols).fill(false);
  const go = (r: number, acc: number) => {
    if (r === rows) {
      best = Math.max(best, acc);
      return;
    }
    for (let c = 0; c < cols; c++) {
      if (used[c]) continue;
      used[c] = true;
      go(r + 1, acc + w[r * cols + c]!);
      used[c] = false;
    }
  };
  go(0, 0);
  return best;
};

Deno.test("metrics: Hungarian matching equals brute force on random square and rectangular matrices", () => {
  let seed = 1;
  for (const [rows, cols] of [[1, 1], [2, 2], [3, 3], [4, 6], [6, 4], [5, 5], [7, 7], [3, 7], [7, 2]] as const) {
    for (let trial = 0; trial < 6; trial++) {
      // Small integers make ties frequent (several optimal matchings): the total must still be optimal.
      const w = Array.from(randoms(rows * cols, seed++, 0, 6), Math.floor);
      const match = maxWeightMatching(w, rows, cols);
      const used = new Set<number>();
      let total = 0;
      match.forEach((c, r) => {
        if (c < 0) return;
        assert.ok(!used.has(c), "a column matched twice");
        used.add(c);
        total += w[r * cols + c]!;
      });
      assert.equal(used.size, Math.min(rows, cols));
      const best = rows <= cols ? bruteForce(w, rows, cols) : bruteForce(
        Array.from({ length: rows * cols }, (_, i) => w[(i % rows) * cols + Math.floor(i / rows)]!),
        cols,
        rows,
      );
      assert.equal(total, best, `${rows} x ${cols} trial ${trial}`);
    }
  }
});

Deno.test("metrics: clustering accuracy with more or fewer clusters than classes", () => {
  // 3 classes of 4; 4 clusters: cluster 3 holds two of class 0 and gets no class.
  const t = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
  const p = [0, 0, 3, 3, 1, 1, 1, 0, 2, 2, 2, 2];
  assert.equal(clusteringAccuracy(t, p), (2 + 3 + 4) / 12);
  // 2 clusters for 3 classes: at most two classes can be right.
  assert.equal(clusteringAccuracy(t, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]), 8 / 12);
});

Deno.test("metrics: top-1 accuracy", () => {
  assert.equal(top1([0, 1, 2, 3], [0, 1, 0, 3]), 0.75);
  assert.equal(top1([], []), 0);
  assert.throws(() => top1([0], [0, 1]), RangeError);
});
