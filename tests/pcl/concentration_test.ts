import assert from "node:assert/strict";
import { Effect } from "effect";
import { concentration, ConcentrationError, concentrationSteps, percentile } from "../../src/pcl/concentration.ts";
import type { Clustering } from "../../src/pcl/kmeans.ts";
import { assertClose, effectTest } from "../helpers.ts";

/** Members' Euclidean distances per cluster → (im2cluster, squared distances), the way faiss hands them over. */
const fromMembers = (members: number[][]) => {
  const im2cluster: number[] = [];
  const distances: number[] = [];
  members.forEach((ds, c) => {
    for (const d of ds) {
      im2cluster.push(c);
      distances.push(Math.fround(d * d)); // faiss's D is float32
    }
  });
  return { im2cluster: Int32Array.from(im2cluster), distances: Float32Array.from(distances) };
};

// docs/algorithm.md §4, τ = 0.2. The vector is printed to 6 decimals; 1e-5 absolute covers that rounding and the
// float32 squared distances (sqrt of a float32 square is within 1e-8 of the original distance).
effectTest(
  "φ: the test vector of docs/algorithm.md §4 (raw, filled, p10/p90, final)",
  Effect.gen(function* () {
    const c4 = Array.from({ length: 10 }, (_, i) => 0.1 + 0.05 * i);
    const { im2cluster, distances } = fromMembers([[0.3, 0.5, 0.4], [0.2, 0.2], [0.6], [], c4, [0.8, 0.9, 1.0, 0.7]]);
    const s = yield* concentrationSteps(im2cluster, distances, 6, 0.2);
    const tol = { atol: 1e-5, rtol: 0 };
    assertClose(s.raw, [0.155949, 0.080486, 0, 0, 0.108488, 0.322085], { ...tol, what: "raw" });
    assertClose(s.filled, [0.155949, 0.080486, 0.322085, 0.322085, 0.108488, 0.322085], { ...tol, what: "filled" });
    assertClose([s.low, s.high], [0.094487, 0.322085], { ...tol, what: "p10, p90" });
    assertClose(s.phi, [0.141218, 0.085562, 0.29166, 0.29166, 0.09824, 0.29166], { ...tol, what: "final φ" });
    assertClose([s.phi.reduce((a, b) => a + b, 0) / 6], [0.2], { atol: 1e-6, rtol: 0, what: "mean φ" });
  }),
);

Deno.test("percentile: NumPy's default linear interpolation, bit for bit", () => {
  // Expected values printed by np.percentile (NumPy 1.24, repr) for the same inputs.
  const cases: Array<[number[], number, number]> = [
    [[1, 2, 3, 4], 10, 1.3],
    [[1, 2, 3, 4], 90, 3.7],
    [[5], 10, 5],
    [[3, 1, 2], 50, 2],
    [[0, 10], 25, 2.5],
    [[0, 10], 75, 7.5],
    [[9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 10, 0.9],
    [[0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.35], 90, 0.78],
    [[0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.35], 10, 0.16000000000000003],
  ];
  for (const [values, q, expected] of cases) assert.equal(percentile(values, q), expected, `${q}th of ${values}`);
});

effectTest(
  "φ: clusters of one member take the maximum, the mean is τ, and φ grows with spread",
  Effect.gen(function* () {
    const { im2cluster, distances } = fromMembers([[0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.3], [0.2, 0.2]]);
    const s = yield* concentrationSteps(im2cluster, distances, 4, 0.1);
    assert.equal(s.filled[2], Math.max(s.raw[0]!, s.raw[1]!, s.raw[3]!));
    assert.ok(s.raw[1]! > s.raw[3]! && s.raw[3]! > s.raw[0]!);
    assertClose([s.phi.reduce((a, b) => a + b, 0) / 4], [0.1], { atol: 1e-7, rtol: 0, what: "mean φ" });
  }),
);

const clustering = (k: number, im2cluster: Int32Array<ArrayBuffer>, distances: Float32Array<ArrayBuffer>) =>
  ({
    k,
    seed: 0,
    centroids: new Float32Array(k),
    prototypes: new Float32Array(k),
    im2cluster,
    distances,
    objective: 0,
    objectives: [],
    splits: [],
    restartObjectives: [0],
    bestRestart: 0,
    trainingPoints: im2cluster.length,
  }) satisfies Clustering;

effectTest(
  "concentration: one φ per clustering, each with mean τ",
  Effect.gen(function* () {
    const a = fromMembers([[0.3, 0.5, 0.4], [0.2, 0.2], [0.6]]);
    const b = fromMembers([[0.1, 0.2], [0.3, 0.3, 0.4], [0.5, 0.6], [0.7, 0.1]]);
    const r = yield* concentration({
      n: 6,
      d: 1,
      clusterings: [clustering(3, a.im2cluster, a.distances), clustering(4, b.im2cluster, b.distances)],
    }, 0.2);
    assert.equal(r.temperature, 0.2);
    assert.deepEqual(r.clusterings.map((c) => c.concentration.length), [3, 4]);
    for (const c of r.clusterings) {
      assertClose([c.concentration.reduce((s, v) => s + v, 0) / c.k], [0.2], { atol: 1e-7, rtol: 0, what: "mean" });
    }
    const direct = yield* concentrationSteps(b.im2cluster, b.distances, 4, 0.2);
    assert.deepEqual(r.clusterings[1]!.concentration, direct.phi);
  }),
);

const fails = <A>(effect: Effect.Effect<A, ConcentrationError>, pattern: RegExp) =>
  Effect.gen(function* () {
    const e = yield* Effect.flip(effect);
    assert.ok(e instanceof ConcentrationError);
    assert.match(e.message, pattern);
  });

effectTest(
  "φ: typed errors for singletons only, bad τ, bad ids, bad distances, length mismatch",
  Effect.gen(function* () {
    const singles = fromMembers([[0.3], [0.2], [0.5]]);
    yield* fails(concentrationSteps(singles.im2cluster, singles.distances, 3, 0.2), /every φ is 0/);
    const ok = fromMembers([[0.3, 0.4], [0.2, 0.1]]);
    yield* fails(concentrationSteps(ok.im2cluster, ok.distances, 2, 0), /temperature must be a positive number/);
    yield* fails(concentrationSteps(ok.im2cluster, ok.distances, 2, NaN), /temperature/);
    yield* fails(concentrationSteps(Int32Array.of(0, 2), Float32Array.of(1, 1), 2, 0.2), /point 1 .* cluster 2/);
    yield* fails(concentrationSteps(Int32Array.of(0, 1), Float32Array.of(1, NaN), 2, 0.2), /point 1 .* NaN/);
    yield* fails(concentrationSteps(Int32Array.of(0, 1), Float32Array.of(1), 2, 0.2), /2 assignments but 1/);
  }),
);
