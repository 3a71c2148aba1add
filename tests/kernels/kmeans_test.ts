import assert from "node:assert/strict";
import { Effect, References } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { runDispatches } from "../../src/gpu/kernel.ts";
import { read } from "../../src/gpu/kernel.ts";
import * as K from "../../src/ops/kmeans.ts";
import * as F from "../../src/pcl/faiss.ts";
import { SequentialRng } from "../../src/data/rng.ts";
import type { Matrix } from "../../src/io/matrix.ts";
import { cluster, type Clustering, kmeans, KMeansError } from "../../src/pcl/kmeans.ts";
import { runStageCluster } from "../../src/cli/stage_cluster.ts";
import { writeNpy } from "../../src/io/npy.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { ArtifactStore, Pipeline, runPipeline } from "../../src/graph/mod.ts";
import { clusterStage, concentrationStage } from "../../src/pcl/estep.ts";
import { assertClose, effectTest, gpuTest, randoms, tempDir } from "../helpers.ts";

// ---------------------------------------------------------------------------------------------------------------
// The CPU reference: faiss's k-means (docs/algorithm.md §3) in float64, written from the description rather than from
// src/, sharing only the seeded random generator (the streams are ours, not faiss's).

interface Reference {
  readonly centroids: Float64Array;
  readonly labels: Int32Array;
  readonly dist: Float64Array;
  readonly objectives: number[];
  readonly splits: number[];
}

const nearest = (x: Float32Array, i: number, d: number, c: Float64Array, k: number) => {
  let best = Infinity, arg = 0;
  for (let j = 0; j < k; j++) {
    let s = 0;
    for (let t = 0; t < d; t++) s += (x[i * d + t]! - c[j * d + t]!) ** 2;
    if (s < best) [best, arg] = [s, j];
  }
  return [arg, best] as const;
};

/**
 * faiss's split_clusters choice, written from its description: for each empty ci in order, scan cj = 0, 1, ...
 * cyclically, accepting cj when a uniform draw is below (size_j − 1) / (n − k) (float32); the two then share the
 * size. Sizes are updated in place.
 */
const referenceSplits = (size: Float32Array, n: number) => {
  const k = size.length;
  const rng = new SequentialRng(1234);
  const plan: Array<[number, number]> = [];
  for (let ci = 0; ci < k; ci++) {
    if (size[ci] !== 0) continue;
    let cj = 0;
    while (!(rng.float() < Math.fround((size[cj]! - 1) / Math.fround(n - k)))) cj = (cj + 1) % k;
    plan.push([ci, cj]);
    size[ci] = size[cj]! / 2;
    size[cj] = size[cj]! - size[ci]!;
  }
  return plan;
};

const referenceKMeans = (
  x: Float32Array,
  n: number,
  d: number,
  k: number,
  init: Float64Array,
  niter: number,
  spherical = false,
  all: { x: Float32Array; n: number } = { x, n },
): Reference => {
  const c = Float64Array.from(init);
  const normalize = () => {
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let t = 0; t < d; t++) s += c[j * d + t]! ** 2;
      if (s > 0) { for (let t = 0; t < d; t++) c[j * d + t]! /= Math.sqrt(s); }
    }
  };
  if (spherical) normalize();
  const objectives: number[] = [], splits: number[] = [];
  for (let it = 0; it < niter; it++) {
    const labels = new Int32Array(n);
    let objective = 0;
    for (let i = 0; i < n; i++) {
      const [a, s] = nearest(x, i, d, c, k);
      labels[i] = a;
      objective += s;
    }
    objectives.push(objective);
    const size = new Float32Array(k);
    c.fill(0);
    for (let i = 0; i < n; i++) {
      size[labels[i]!]! += 1;
      for (let t = 0; t < d; t++) c[labels[i]! * d + t]! += x[i * d + t]!;
    }
    for (let j = 0; j < k; j++) if (size[j]! > 0) { for (let t = 0; t < d; t++) c[j * d + t]! /= size[j]!; }
    const plan = referenceSplits(size, n);
    for (const [ci, cj] of plan) {
      for (let t = 0; t < d; t++) {
        const v = c[cj * d + t]!;
        const e = t % 2 === 0 ? 1 / 1024 : -1 / 1024;
        c[ci * d + t] = v * (1 + e);
        c[cj * d + t] = v * (1 - e);
      }
    }
    splits.push(plan.length);
    if (spherical) normalize();
  }
  const labels = new Int32Array(all.n);
  const dist = new Float64Array(all.n);
  for (let i = 0; i < all.n; i++) [labels[i], dist[i]] = nearest(all.x, i, d, c, k);
  return { centroids: c, labels, dist, objectives, splits };
};

const rowsOf = (x: Float32Array, d: number, rows: ArrayLike<number>) => {
  const out = new Float64Array(rows.length * d);
  for (let r = 0; r < rows.length; r++) for (let t = 0; t < d; t++) out[r * d + t] = x[rows[r]! * d + t]!;
  return out;
};

/** Gaussian blobs: `k` centres uniform in [−spread, spread]^d, points at N(centre, sigma²) (Box–Muller). */
const blobs = (n: number, d: number, k: number, sigma: number, seed: number, spread = 1) => {
  const centres = randoms(k * d, seed, -spread, spread);
  const u = randoms(2 * n * d, seed + 1, 1e-7, 1);
  const data = new Float32Array(n * d);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % k;
    for (let t = 0; t < d; t++) {
      const j = i * d + t;
      const g = Math.sqrt(-2 * Math.log(u[2 * j]!)) * Math.cos(2 * Math.PI * u[2 * j + 1]!);
      data[j] = centres[labels[i]! * d + t]! + sigma * g;
    }
  }
  return { features: { data, shape: [n, d] } as Matrix, labels };
};

const uniform = (n: number, d: number, seed: number): Matrix => ({ data: randoms(n * d, seed), shape: [n, d] });

// Tolerances against the float64 reference: centroids 1e-4 (the brief's bar; float32 means of a few hundred points
// are within ~1e-6), squared distances 1e-4 absolute + relative (float32 ‖x‖² − 2x·c + ‖c‖² cancels to ~1e-6 of
// ‖x‖² + ‖c‖²), objectives 1e-4 relative (sums of such distances). Assignments must be identical: the data sets
// have no near-ties at float32 resolution (checked by the margin assertion).
const compare = (got: Clustering, ref: Reference, x: Float32Array, d: number, what: string) => {
  assert.deepEqual(got.splits, ref.splits, `${what}: splits per iteration`);
  assert.deepEqual(Array.from(got.im2cluster), Array.from(ref.labels), `${what}: assignments`);
  assertClose(got.centroids, ref.centroids, { atol: 1e-4, rtol: 0, what: `${what}: centroids` });
  assertClose(got.distances, ref.dist, { atol: 1e-4, rtol: 1e-4, what: `${what}: distances` });
  assertClose(got.objectives, ref.objectives, { atol: 1e-4, rtol: 1e-4, what: `${what}: objectives` });
  // the margin between the nearest and second-nearest centroid, so that "identical" is a fair demand
  const k = got.k;
  let margin = Infinity;
  for (let i = 0; i < ref.labels.length; i++) {
    const ds = Array.from({ length: k }, (_, j) => {
      let s = 0;
      for (let t = 0; t < d; t++) s += (x[i * d + t]! - ref.centroids[j * d + t]!) ** 2;
      return s;
    }).sort((a, b) => a - b);
    margin = Math.min(margin, ds[1]! - ds[0]!);
  }
  assert.ok(margin > 1e-5, `${what}: near-tie in the data (margin ${margin})`);
};

const withInit = (f: Matrix, k: number, init: Float64Array, niter: number, extra = {}) =>
  kmeans(f, k, { init: Float32Array.from(init), niter, nredo: 1, ...extra });

// ---------------------------------------------------------------------------------------------------------------

gpuTest(
  "k-means = CPU reference from the same initial centroids: blobs, d = 6 (padded to 8)",
  Effect.gen(function* () {
    const { features: f } = blobs(600, 6, 4, 0.15, 11);
    const init = rowsOf(f.data, 6, [5, 17, 300, 411]);
    const got = yield* withInit(f, 4, init, 8);
    compare(got, referenceKMeans(f.data, 600, 6, 4, init, 8), f.data, 6, "blobs");
  }),
);

gpuTest(
  "k-means = CPU reference from the same initial centroids: uniform data, d = 16, K = 7",
  Effect.gen(function* () {
    const f = uniform(500, 16, 5);
    const init = rowsOf(f.data, 16, [0, 1, 2, 3, 4, 5, 6]);
    const got = yield* withInit(f, 7, init, 10);
    compare(got, referenceKMeans(f.data, 500, 16, 7, init, 10), f.data, 16, "uniform");
  }),
);

gpuTest(
  "k-means = CPU reference with K = 300 (two radix passes) and N = 2500 (three radix blocks)",
  Effect.gen(function* () {
    const f = uniform(2500, 4, 9);
    const init = rowsOf(f.data, 4, F.initialRows(2500, 300, 0, 0));
    const got = yield* withInit(f, 300, init, 3);
    const ref = referenceKMeans(f.data, 2500, 4, 300, init, 3);
    assert.deepEqual(Array.from(got.im2cluster), Array.from(ref.labels));
    assertClose(got.centroids, ref.centroids, { atol: 1e-4, rtol: 0, what: "centroids" });
  }),
);

gpuTest(
  "empty clusters: a centroid far from all data is split as faiss does (rule and perturbation)",
  Effect.gen(function* () {
    const { features: f } = blobs(400, 5, 3, 0.2, 21);
    const init = rowsOf(f.data, 5, [0, 1, 2, 3]);
    init.fill(40, 15, 20); // the fourth centroid: nothing comes near it
    const got = yield* withInit(f, 4, init, 6);
    const ref = referenceKMeans(f.data, 400, 5, 4, init, 6);
    assert.ok(got.splits[0]! >= 1, `no split happened: ${got.splits}`);
    compare(got, ref, f.data, 5, "far centroid");
  }),
);

gpuTest(
  "empty clusters: duplicated and far initial centroids (several splits at once, ties to the lowest index)",
  Effect.gen(function* () {
    const f = uniform(300, 7, 31);
    const init = rowsOf(f.data, 7, [0, 0, 0, 1, 1, 2, 3, 3]); // later copies in lanes y, z (of 0), x (of 3), w (of 6)
    init.fill(-30, 7 * 5, 7 * 6); // centroid 5 far away
    const got = yield* withInit(f, 8, init, 6);
    const ref = referenceKMeans(f.data, 300, 7, 8, init, 6);
    assert.ok(got.splits[0]! >= 3, `expected at least 3 splits in the first iteration: ${got.splits}`);
    compare(got, ref, f.data, 7, "duplicates");
  }),
);

gpuTest(
  "windows: a cluster that empties in the second iteration is split as faiss does, whatever the window (1, 2, 3, 6)",
  Effect.gen(function* () {
    // 1-D (x, 0): centroid 1 starts between 4 and 8 and keeps both; after the first update, centroid 0 (mean 3.25)
    // is nearer to 4 and centroid 2 (mean 8.75) to 8, so centroid 1 empties in iteration 2, after the window's
    // speculative iterations have run past it.
    const xs = [3, 3.5, 4, 8, 8.5, 9];
    const f: Matrix = { data: Float32Array.from(xs.flatMap((x) => [x, 0])), shape: [6, 2] };
    const init = Float64Array.of(1.9, 0, 6, 0, 10.1, 0);
    const ref = referenceKMeans(f.data, 6, 2, 3, init, 6);
    assert.deepEqual(ref.splits.slice(0, 2), [0, 1], "the data should empty a cluster in iteration 2 only");
    const runs = [];
    for (const window of [1, 2, 3, 6]) {
      const got = yield* withInit(f, 3, init, 6, { window });
      compare(got, ref, f.data, 2, `window ${window}`);
      runs.push(got);
    }
    for (const got of runs.slice(1)) {
      assert.deepEqual(got.centroids, runs[0]!.centroids);
      assert.deepEqual(got.objectives, runs[0]!.objectives);
    }
  }),
);

gpuTest(
  "windows: splits in the first iteration and restarts give the same bits with one iteration per readback",
  Effect.gen(function* () {
    const f = uniform(300, 7, 31);
    const init = rowsOf(f.data, 7, [0, 0, 0, 1, 1, 2, 3, 3]);
    const [one, all] = [yield* withInit(f, 8, init, 6, { window: 1 }), yield* withInit(f, 8, init, 6)];
    assert.ok(all.splits[0]! >= 3, `expected splits in the first iteration: ${all.splits}`);
    assert.deepEqual(all.centroids, one.centroids);
    assert.deepEqual(all.im2cluster, one.im2cluster);
    const u = uniform(400, 3, 41);
    const [a, b] = [
      yield* kmeans(u, 9, { niter: 6, nredo: 3, seed: 3, window: 2 }),
      yield* kmeans(u, 9, { niter: 6, nredo: 3, seed: 3 }),
    ];
    assert.deepEqual(a.restartObjectives, b.restartObjectives);
    assert.deepEqual(a.centroids, b.centroids);
  }),
);

gpuTest(
  "restarts: the lowest objective wins, and equals a single run from that restart's initial points",
  Effect.gen(function* () {
    const f = uniform(400, 3, 41);
    const got = yield* kmeans(f, 9, { niter: 6, nredo: 4, seed: 3 });
    assert.equal(got.restartObjectives.length, 4);
    assert.equal(got.objective, Math.min(...got.restartObjectives));
    assert.equal(got.bestRestart, got.restartObjectives.indexOf(got.objective));
    assert.ok(new Set(got.restartObjectives).size > 1, "restarts should differ on uniform data");
    const init = rowsOf(f.data, 3, F.initialRows(400, 9, 3, got.bestRestart));
    const single = yield* withInit(f, 9, init, 6);
    assert.deepEqual(single.centroids, got.centroids);
    assert.deepEqual(single.im2cluster, got.im2cluster);
    assert.deepEqual(single.distances, got.distances);
    // given initial centroids, every restart starts from them: the same objective each time
    const fixed = yield* kmeans(f, 9, { init: Float32Array.from(init), niter: 6, nredo: 3 });
    assert.deepEqual(fixed.restartObjectives, [single.objective, single.objective, single.objective]);
    assert.deepEqual(fixed.centroids, single.centroids);
  }),
);

gpuTest(
  "determinism: same seed, same bits; another seed, other initial points",
  Effect.gen(function* () {
    const { features: f } = blobs(700, 8, 6, 0.3, 51);
    const a = yield* kmeans(f, 6, { niter: 5, nredo: 2, seed: 7 });
    const b = yield* kmeans(f, 6, { niter: 5, nredo: 2, seed: 7 });
    assert.deepEqual(a.centroids, b.centroids);
    assert.deepEqual(a.im2cluster, b.im2cluster);
    assert.deepEqual(a.distances, b.distances);
    assert.deepEqual(a.restartObjectives, b.restartObjectives);
    assert.notDeepEqual(F.initialRows(700, 6, 7, 0), F.initialRows(700, 6, 8, 0));
  }),
);

gpuTest(
  "spherical: centroids normalised after every update, as the CPU reference",
  Effect.gen(function* () {
    const { features: f } = blobs(300, 4, 3, 0.2, 61);
    const init = rowsOf(f.data, 4, [3, 100, 200]);
    const got = yield* withInit(f, 3, init, 5, { spherical: true });
    compare(got, referenceKMeans(f.data, 300, 4, 3, init, 5, true), f.data, 4, "spherical");
    for (let c = 0; c < 3; c++) {
      const norm = Math.hypot(...got.centroids.subarray(c * 4, c * 4 + 4));
      assertClose([norm], [1], { atol: 1e-6, rtol: 0, what: "centroid norm" });
    }
  }),
);

gpuTest(
  "subsampling: trains on K · maxPointsPerCentroid seeded rows, then assigns all N points",
  Effect.gen(function* () {
    const { features: f } = blobs(400, 6, 4, 0.25, 71);
    const sample = F.trainingRows(400, 4, 25, 5)!;
    assert.equal(sample.length, 100);
    const got = yield* kmeans(f, 4, { niter: 5, nredo: 1, seed: 5, maxPointsPerCentroid: 25 });
    assert.equal(got.trainingPoints, 100);
    const train = Float32Array.from(rowsOf(f.data, 6, sample));
    const init = rowsOf(train, 6, F.initialRows(100, 4, 5, 0));
    const ref = referenceKMeans(train, 100, 6, 4, init, 5, false, { x: f.data, n: 400 });
    compare(got, ref, f.data, 6, "subsampled");
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// Chunking: forced tiny chunks give the same bits as one chunk (assignments are per row; centroid sums continue one
// running float32 sum across chunks in index order).

const sameBits = (a: Clustering, b: Clustering, what: string) => {
  assert.deepEqual(a.centroids, b.centroids, `${what}: centroids`);
  assert.deepEqual(a.im2cluster, b.im2cluster, `${what}: im2cluster`);
  assert.deepEqual(a.distances, b.distances, `${what}: distances`);
  assert.deepEqual(a.objectives, b.objectives, `${what}: objectives`);
};

gpuTest(
  "chunked = unchunked, bit for bit: host input, GPU input as aligned views, GPU input padded (d = 5, 8, 2)",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    for (const d of [5, 8, 2]) {
      const { features: f } = blobs(300, d, 5, 0.3, 80 + d);
      const options = { niter: 4, nredo: 2, seed: 1 };
      const whole = yield* kmeans(f, 5, options);
      const chunked = yield* kmeans(f, 5, { ...options, chunkRows: 64 });
      sameBits(whole, chunked, `host d=${d}`);
      const t = gpu.upload(f.data, "f32", [300, d], "features");
      sameBits(whole, yield* kmeans(t, 5, options), `device d=${d}`);
      sameBits(whole, yield* kmeans(t, 5, { ...options, chunkRows: 50 }), `device chunked d=${d}`);
      // subsampled training set gathered across chunks
      const sub = { ...options, maxPointsPerCentroid: 30 };
      sameBits(yield* kmeans(f, 5, sub), yield* kmeans(t, 5, { ...sub, chunkRows: 70 }), `subsample d=${d}`);
    }
  }),
);

effectTest(
  "assign8 (the GPU tuning) and assign16 (llvmpipe's) give the same bits; N and K not multiples of the blocks",
  Effect.gen(function* () {
    const f = uniform(301, 12, 141);
    const options = { niter: 3, nredo: 1, seed: 2 };
    const withTuning = (matmul: "tiled" | "register") =>
      kmeans(f, 37, options).pipe(Effect.provide(Gpu.layerFrom(navigator.gpu, { tuning: { matmul } })));
    sameBits(yield* withTuning("tiled"), yield* withTuning("register"), "assign8 vs assign16");
  }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")),
);

// ---------------------------------------------------------------------------------------------------------------
// Quality and the multi-K entry point.

/** Adjusted mutual information, arithmetic normalisation (sklearn ≥ 0.22's default), natural log. */
const ami = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  const n = a.length;
  const ids = (v: ArrayLike<number>) => {
    const m = new Map<number, number>();
    return Array.from(v, (x) => m.get(x) ?? (m.set(x, m.size), m.size - 1));
  };
  const [u, v] = [ids(a), ids(b)];
  const r = Math.max(...u) + 1, c = Math.max(...v) + 1;
  const table = Array.from({ length: r }, () => new Array(c).fill(0));
  u.forEach((x, i) => table[x][v[i]!]++);
  const rows = table.map((row) => row.reduce((s, x) => s + x, 0));
  const cols = Array.from({ length: c }, (_, j) => table.reduce((s, row) => s + row[j], 0));
  const entropy = (counts: number[]) => -counts.reduce((s, x) => (x > 0 ? s + (x / n) * Math.log(x / n) : s), 0);
  let mi = 0;
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < c; j++) {
      const x = table[i][j];
      if (x > 0) mi += (x / n) * Math.log((n * x) / (rows[i]! * cols[j]!));
    }
  }
  const logFact = new Float64Array(n + 1);
  for (let i = 1; i <= n; i++) logFact[i] = logFact[i - 1]! + Math.log(i);
  let emi = 0; // expected MI under the hypergeometric model (Vinh, Epps & Bailey 2010)
  for (const ai of rows) {
    for (const bj of cols) {
      for (let nij = Math.max(1, ai + bj - n); nij <= Math.min(ai, bj); nij++) {
        const logP = logFact[ai]! + logFact[bj]! + logFact[n - ai]! + logFact[n - bj]! - logFact[n]! -
          logFact[nij]! - logFact[ai - nij]! - logFact[bj - nij]! - logFact[n - ai - bj + nij]!;
        emi += (nij / n) * Math.log((n * nij) / (ai * bj)) * Math.exp(logP);
      }
    }
  }
  const mean = (entropy(rows) + entropy(cols)) / 2;
  return (mi - emi) / (mean - emi);
};

Deno.test("AMI helper: 1 for equal partitions up to renaming, about 0 for independent ones", () => {
  const a = Array.from({ length: 200 }, (_, i) => i % 4);
  assertClose([ami(a, a.map((x) => 3 - x))], [1], { atol: 1e-12, rtol: 0, what: "AMI" });
  const noise = Array.from(randoms(200, 3), (x) => Math.floor((x + 1) * 2.5));
  assert.ok(Math.abs(ami(a, noise)) < 0.05, `AMI of independent labels: ${ami(a, noise)}`);
  // sklearn's own test vector (test_supervised.py): AMI 0.27821 with arithmetic normalisation (0.27502 with 'max')
  const a17 = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3];
  const b17 = [1, 1, 1, 1, 2, 1, 2, 2, 2, 2, 3, 1, 3, 3, 3, 2, 2];
  assertClose([ami(a17, b17)], [0.27821], { atol: 5e-6, rtol: 0, what: "AMI" });
});

// Random-restart k-means can settle with two centroids in one blob and one centroid over two blobs; on these tight
// blobs a restart escapes that about half the time, so K = #blobs gets 12 restarts (in a trial, blobs drawn with
// each of 12 data seeds were all recovered). Over-clustering, PCL's use, must never mix blobs.
gpuTest(
  "quality: well-separated Gaussian blobs are recovered (AMI ≥ 0.99 at K = 4), and K = 16 keeps every cluster " +
    "inside one blob",
  Effect.gen(function* () {
    const { features: f, labels } = blobs(1500, 16, 4, 0.05, 91);
    const result = yield* cluster(f, { ks: [4, 16], nredo: 12, niter: 10 });
    const [k4, k16] = result.clusterings as [Clustering, Clustering];
    assert.deepEqual([result.n, result.d, k4.seed, k16.seed], [1500, 16, 0, 1]);
    const score = ami(labels, k4.im2cluster);
    assert.ok(score >= 0.99, `AMI ${score}`);
    for (let c = 0; c < 16; c++) {
      const members = new Set<number>();
      k16.im2cluster.forEach((x, i) => x === c && members.add(labels[i]!));
      assert.ok(members.size <= 1, `cluster ${c} of K = 16 spans blobs ${[...members]}`);
    }
    for (const c of [k4, k16]) {
      for (let j = 0; j < c.k; j++) {
        const p = c.prototypes.subarray(j * 16, j * 16 + 16);
        assertClose([Math.hypot(...p)], [1], { atol: 1e-6, rtol: 0, what: "prototype norm" });
      }
    }
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// Limits and errors.

gpuTest(
  "K = N: the centroids are the points, every distance 0 (to rounding)",
  Effect.gen(function* () {
    const f = uniform(40, 3, 101);
    const got = yield* kmeans(f, 40, { niter: 5, nredo: 3 });
    assert.deepEqual(got.centroids, f.data);
    assert.deepEqual(Array.from(got.im2cluster), Array.from({ length: 40 }, (_, i) => i));
    // ‖x‖² − 2x·c + ‖c‖² with c = x cancels only to float32 rounding of ‖x‖² (~1, so ~1e-7; exactly 0 on some
    // back ends, not on others), as in faiss
    assertClose(got.distances, new Array(40).fill(0), { atol: 1e-6, rtol: 0, what: "distances" });
    assert.equal(got.objective, 0);
  }),
);

const rejects = (effect: Effect.Effect<unknown, unknown, Gpu>, pattern: RegExp) =>
  Effect.gen(function* () {
    const e = yield* Effect.flip(effect);
    assert.ok(e instanceof KMeansError, `expected a KMeansError, got ${e}`);
    assert.match(e.message, pattern);
  });

gpuTest(
  "typed errors: K > N, K < 2, non-integer K, empty input, bad options",
  Effect.gen(function* () {
    const f = uniform(10, 3, 111);
    yield* rejects(kmeans(f, 11), /K = 11 exceeds the 10 points/);
    yield* rejects(kmeans(f, 1), /K = 1: k-means needs at least 2 clusters/);
    yield* rejects(kmeans(f, 0), /at least 2 clusters/);
    yield* rejects(kmeans(f, 2.5), /K must be an integer/);
    yield* rejects(cluster(f, { ks: [3, 20] }), /K = 20 exceeds/);
    yield* rejects(cluster(f, { ks: [] }), /no K/);
    yield* rejects(kmeans({ data: new Float32Array(0), shape: [0, 3] }, 2), /non-empty/);
    yield* rejects(kmeans(f, 2, { nredo: 0 }), /nredo must be an integer >= 1/);
    yield* rejects(kmeans(f, 2, { window: 0 }), /window must be an integer >= 1, not 0/);
    yield* rejects(kmeans(f, 2, { init: new Float32Array(5) }), /init has 5 values, not K x d = 2 x 3/);
  }),
);

gpuTest(
  "typed errors: non-finite features name how many and the first row and column (host and GPU, chunked)",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const f = uniform(200, 6, 121);
    f.data[130 * 6 + 4] = Infinity;
    f.data[150 * 6 + 0] = NaN;
    f.data[199 * 6 + 5] = -Infinity;
    const pattern = /3 non-finite values \(NaN or ±Inf\); the first is at row 130, column 4/;
    yield* rejects(kmeans(f, 3), pattern);
    const t = gpu.upload(f.data, "f32", [200, 6], "features");
    yield* rejects(kmeans(t, 3), pattern);
    yield* rejects(kmeans(t, 3, { chunkRows: 64 }), pattern);
    const one = uniform(5, 2, 1);
    one.data[3] = NaN;
    yield* rejects(kmeans(one, 2), /1 non-finite value \(NaN or ±Inf\); the first is at row 1, column 1/);
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// The radix sort on its own: stable, for every pass count.

for (const [n, k] of [[1, 2], [1000, 2], [3000, 300], [5000, 100_000]] as const) {
  gpuTest(
    `radix sort: ${n} keys below ${k} (${K.radixPasses(k)} pass${K.radixPasses(k) > 1 ? "es" : ""}), stable`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const keys = Uint32Array.from(randoms(n, n + k, 0, k), Math.floor);
      const u32 = (label: string, size: number) => gpu.tensor([size], "u32", label);
      const scratch = {
        keysA: u32("ka", n),
        valsA: u32("va", n),
        keysB: u32("kb", n),
        valsB: u32("vb", n),
        hist: u32("h", K.radixHistSize(n)),
      };
      const sort = yield* K.radixSort(gpu.upload(keys, "u32", [n], "keys"), n, k, scratch);
      yield* runDispatches(sort.dispatches);
      const order = Array.from(yield* read(sort.order));
      const expected = Array.from({ length: n }, (_, i) => i).sort((a, b) => keys[a]! - keys[b]! || a - b);
      assert.deepEqual(order, expected);
    }),
  );
}

Deno.test("split plan: faiss's rule, on random sizes with many empty clusters, and where only the rule decides", () => {
  for (let seed = 0; seed < 20; seed++) {
    const k = 200;
    const draws = randoms(k, 1000 + seed, 0, 1);
    // a third of the clusters empty, the rest of sizes 1 to 30: splits chain through halved sizes
    const sizes = Float32Array.from(draws, (u, i) => (i % 3 === 0 ? 0 : 1 + Math.floor(u * 30)));
    const n = sizes.reduce((a, b) => a + b, 0);
    const mine = sizes.slice(), theirs = sizes.slice();
    assert.deepEqual(F.splitPlan(mine, n), referenceSplits(theirs, n), `seed ${seed}`);
    assert.deepEqual(mine, theirs, `sizes after the splits, seed ${seed}`);
    assert.equal(mine.reduce((a, b) => a + b, 0), n); // splitting shares sizes, never creates points
  }
  // n = k: p = (size − 1) / 0 is +Inf only for a cluster of two; clusters of one (NaN) are never chosen
  const sizes = new Float32Array(50).fill(1);
  sizes[0] = 0;
  sizes[49] = 2;
  assert.deepEqual(F.splitPlan(sizes, 50), [[0, 49]]);
  assert.deepEqual(Array.from(sizes.subarray(48)), [1, 1]);
  assert.deepEqual(F.splitPlan(Float32Array.of(0, 1, 1), 2), []); // n < k: nothing to split from
});

// ---------------------------------------------------------------------------------------------------------------
// The stages in a graph: typed composition, and artifacts that decode to the values that were stored.

gpuTest(
  "graph: cluster → concentration as a Pipeline; a second run resumes from artifacts with the same values",
  Effect.gen(function* () {
    const { features: f } = blobs(200, 4, 3, 0.1, 151);
    const pipeline = Pipeline.from(clusterStage({ ks: [3, 6], niter: 3, nredo: 1 })).then(concentrationStage(0.2));
    const options = { run: "kmeans-test", config: { ks: [3, 6] } };
    const first = yield* runPipeline(pipeline, f, options);
    assert.deepEqual(first.clusterings.map((c) => c.k), [3, 6]);
    const again = yield* runPipeline(pipeline, f, options);
    assert.deepEqual(again, first);
    assert.ok(again.clusterings[1]!.concentration instanceof Float32Array);
  }).pipe(Effect.provide(ArtifactStore.memory)),
);

gpuTest(
  "stage cluster on a tiny .npy writes a safetensors file with the expected tensors and metadata",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-");
    const { features: f } = blobs(120, 4, 3, 0.1, 131);
    yield* writeNpy(`${dir}/feats.npy`, f);
    const out = `${dir}/protos.safetensors`;
    yield* runStageCluster({
      features: `${dir}/feats.npy`,
      tensor: undefined,
      out,
      temperature: 0.2,
      options: { ks: [3, 5], niter: 4, nredo: 2, seed: 0, maxPointsPerCentroid: 1000, spherical: false },
    });
    const { tensors, metadata } = yield* readSafetensors(out);
    const expected = [3, 5].flatMap((k) =>
      ["centroids", "prototypes", "im2cluster", "distances", "concentration"].map((t) => `k${k}.${t}`)
    );
    assert.deepEqual([...tensors.keys()].sort(), expected.sort());
    assert.deepEqual(tensors.get("k5.centroids")!.shape, [5, 4]);
    assert.equal(tensors.get("k3.im2cluster")!.dtype, "I32");
    assert.deepEqual(tensors.get("k3.im2cluster")!.shape, [120]);
    assert.deepEqual(tensors.get("k5.concentration")!.shape, [5]);
    const phi = tensors.get("k3.concentration")!.data as Float32Array;
    assertClose([phi.reduce((a, b) => a + b, 0) / 3], [0.2], { atol: 1e-6, rtol: 0, what: "mean φ" });
    assert.equal(metadata.format, "pcl-prototypes");
    assert.deepEqual(JSON.parse(metadata.ks!), [3, 5]);
    assert.equal(JSON.parse(metadata.k5!).seed, 1);
    const direct = yield* kmeans(f, 3, { niter: 4, nredo: 2, seed: 0 });
    assert.deepEqual(tensors.get("k3.centroids")!.data, direct.centroids);
  }),
);
