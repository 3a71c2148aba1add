import assert from "node:assert/strict";
import { Effect } from "effect";
import { ShapeError } from "../../src/gpu/errors.ts";
import { knnClassify, nearestNeighbours, type Neighbours, vote } from "../../src/eval/knn.ts";
import { TOPK_NONE } from "../../src/ops/topk.ts";
import type { Matrix } from "../../src/io/matrix.ts";
import { gpuTest, randoms } from "../helpers.ts";

const matrix = (data: Float32Array<ArrayBuffer>, n: number, d: number): Matrix => ({ data, shape: [n, d] });

/** Float64 cosine similarities and neighbours (value desc, index asc), and the InstDisc vote: the reference. */
const cpuNeighbours = (bank: Matrix, queries: Matrix, k: number) => {
  const [nb, d] = bank.shape, nq = queries.shape[0];
  const norm = (m: Matrix, r: number) => {
    let s = 0;
    for (let j = 0; j < d; j++) s += m.data[r * d + j]! ** 2;
    return Math.max(Math.sqrt(s), 1e-12);
  };
  const bankNorms = Array.from({ length: nb }, (_, r) => norm(bank, r));
  return Array.from({ length: nq }, (_, q) => {
    const qn = norm(queries, q);
    const sims = Array.from({ length: nb }, (_, i) => {
      let s = 0;
      for (let j = 0; j < d; j++) s += queries.data[q * d + j]! * bank.data[i * d + j]!;
      return { i, s: s / (qn * bankNorms[i]!) };
    });
    sims.sort((a, b) => b.s - a.s || a.i - b.i);
    return sims; // all of them: the tolerance check looks past position k
  }).map((row) => ({ top: row.slice(0, k), next: row[k] }));
};

const cpuVote = (sims: { i: number; s: number }[], labels: ArrayLike<number>, k: number, classes: number, t = 0.07) => {
  const scores = new Float64Array(classes);
  for (const { i, s } of sims.slice(0, k)) scores[labels[i]!]! += Math.exp(s / t);
  let best = 0;
  for (let c = 1; c < classes; c++) if (scores[c]! > scores[best]!) best = c;
  return { best, scores };
};

/**
 * GPU neighbours against the float64 reference. Similarities: f32 dot products of f32-rounded unit vectors, d ≤ 64
 * terms, so within 1e-6 of the float64 value. Indices: equal wherever the reference's similarity at that position
 * is more than 4e-6 away from its neighbours' (else two rows may swap legitimately); and the set is the right one
 * unless the k-th and (k+1)-th similarities are that close.
 */
const assertNeighbours = (got: Neighbours, want: ReturnType<typeof cpuNeighbours>, what: string) => {
  const k = got.k;
  want.forEach(({ top, next }, r) => {
    top.forEach(({ i, s }, j) => {
      const at = r * k + j;
      assert.ok(
        Math.abs(got.similarities[at]! - s) < 1e-6,
        `${what}: query ${r} slot ${j}: ${got.similarities[at]} vs ${s}`,
      );
      const prev = top[j - 1]?.s ?? Infinity, after = top[j + 1]?.s ?? next?.s ?? -Infinity;
      if (prev - s > 4e-6 && s - after > 4e-6) assert.equal(got.indices[at], i, `${what}: query ${r} slot ${j}`);
    });
  });
};

const CASES = [
  { name: "one bank chunk", nb: 700, nq: 150, d: 19, k: 20, options: {} },
  {
    name: "several bank chunks and query chunks",
    nb: 1001,
    nq: 130,
    d: 8,
    k: 37,
    options: { bankChunk: 300, queryChunk: 64 },
  },
  { name: "k larger than a bank chunk", nb: 250, nq: 70, d: 33, k: 120, options: { bankChunk: 100 } },
  { name: "bank rows beyond one top-k run (2048)", nb: 5000, nq: 70, d: 12, k: 50, options: {} },
] as const;

for (const c of CASES) {
  gpuTest(
    `knn: neighbours and votes equal a float64 reference (${c.name}: bank ${c.nb}, queries ${c.nq}, d ${c.d}, ` +
      `k ${c.k})`,
    Effect.gen(function* () {
      const bank = matrix(randoms(c.nb * c.d, 1 + c.nb, -1, 1), c.nb, c.d);
      const queries = matrix(randoms(c.nq * c.d, 2 + c.nq, -1, 1), c.nq, c.d);
      const got = yield* nearestNeighbours(bank, queries, c.k, c.options);
      const want = cpuNeighbours(bank, queries, c.k);
      assertNeighbours(got, want, c.name);
      // Votes: the same prediction unless the reference's two best class scores are within 1e-4 (relative) of each
      // other, which the 1e-6 similarity error (× 1/T ≈ 14 in the exponent) could flip.
      const classes = 5;
      const labels = Int32Array.from(randoms(c.nb, 3, 0, classes), Math.floor);
      for (const k of [1, Math.min(7, c.k), c.k]) {
        const predictions = vote(got, labels, k, classes);
        want.forEach(({ top }, r) => {
          const { best, scores } = cpuVote(top, labels, k, classes);
          const sorted = [...scores].sort((a, b) => b - a);
          if (sorted[0]! - sorted[1]! > 1e-4 * sorted[0]!) assert.equal(predictions[r], best, `k ${k} query ${r}`);
        });
      }
      // Same inputs, same bits.
      const again = yield* nearestNeighbours(bank, queries, c.k, c.options);
      assert.deepEqual(again.indices, got.indices);
      assert.deepEqual(again.similarities, got.similarities);
    }),
  );
}

gpuTest(
  "knn: well separated clusters are classified perfectly at k = 20 and 200",
  Effect.gen(function* () {
    const classes = 4, d = 16, perClass = 300, nq = 200;
    const centre = (c: number, j: number) => (j % classes === c ? 5 : 0);
    const noise = randoms((classes * perClass + nq) * d, 5, -1, 1);
    const make = (n: number, label: (i: number) => number, offset: number) =>
      Float32Array.from({ length: n * d }, (_, x) => centre(label(Math.floor(x / d)), x % d) + noise[offset + x]!);
    const bankLabels = Int32Array.from({ length: classes * perClass }, (_, i) => i % classes);
    const queryLabels = Int32Array.from({ length: nq }, (_, i) => (i * 3) % classes);
    const bank = matrix(make(classes * perClass, (i) => bankLabels[i]!, 0), classes * perClass, d);
    const queries = matrix(make(nq, (i) => queryLabels[i]!, classes * perClass * d), nq, d);
    const result = yield* knnClassify(bank, bankLabels, queries, queryLabels);
    assert.deepEqual(result.map((r) => [r.k, r.top1]), [[20, 1], [200, 1]]);
  }),
);

gpuTest(
  "knn: ties go to the smaller bank index, then to the smaller class; a small bank pads with no neighbour",
  Effect.gen(function* () {
    // Bank rows 0..3 are the same direction (exact ties), row 4 the opposite; labels 1, 0, 0, 1, 2.
    const bank = matrix(Float32Array.from([1, 2, 2, 4, 4, 8, 0.5, 1, -1, -2]), 5, 2);
    const labels = Int32Array.from([1, 0, 0, 1, 2]);
    const queries = matrix(Float32Array.from([1, 2]), 1, 2);
    const n = yield* nearestNeighbours(bank, queries, 7);
    assert.deepEqual(Array.from(n.indices), [0, 1, 2, 3, 4, TOPK_NONE, TOPK_NONE]);
    assert.equal(vote(n, labels, 1, 3)[0], 1);
    assert.equal(vote(n, labels, 2, 3)[0], 0); // classes 1 and 0 one equal weight each: the smaller class
    assert.equal(vote(n, labels, 4, 3)[0], 0); // 2 vs 2
    assert.equal(vote(n, labels, 7, 3)[0], 0); // the padding slots vote for nobody
  }),
);

gpuTest(
  "knn: mismatched shapes, labels and k are ShapeErrors",
  Effect.gen(function* () {
    const bank = matrix(new Float32Array(12).fill(1), 4, 3), queries = matrix(new Float32Array(6).fill(1), 2, 3);
    const labels = Int32Array.from([0, 1, 0, 1]), ql = Int32Array.from([0, 1]);
    for (
      const bad of [
        knnClassify(bank, labels, matrix(new Float32Array(8), 2, 4), ql),
        knnClassify(bank, labels.subarray(1), queries, ql),
        knnClassify(bank, labels, queries, ql, { ks: [300] }),
        knnClassify(bank, labels, queries, ql, { ks: [] }),
        knnClassify(bank, Int32Array.from([0, 1, -1, 1]), queries, ql),
        knnClassify(bank, labels, queries, ql, { queryChunk: 100 }),
        knnClassify(matrix(Float32Array.from([1, NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 4, 3), labels, queries, ql),
      ]
    ) {
      const e = yield* Effect.flip(bad);
      assert.ok(e instanceof ShapeError, String(e));
    }
  }),
);
