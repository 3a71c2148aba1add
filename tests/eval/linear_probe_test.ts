import assert from "node:assert/strict";
import { Effect } from "effect";
import { ShapeError } from "../../src/gpu/errors.ts";
import { Sampler } from "../../src/data/dataset.ts";
import {
  applyLinear,
  featureStats,
  linearProbe,
  probeLearningRate,
  standardised,
} from "../../src/eval/linear_probe.ts";
import type { Matrix } from "../../src/io/matrix.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

const matrix = (data: Float32Array<ArrayBuffer>, n: number, d: number): Matrix => ({ data, shape: [n, d] });

/** n points in d dimensions, classes separated by a margin along the first `classes` coordinates, plus offset/scale. */
const separable = (n: number, d: number, classes: number, seed: number) => {
  const noise = randoms(n * d, seed, -1, 1);
  const labels = Int32Array.from({ length: n }, (_, i) => (i * 7 + seed) % classes);
  // Class c has coordinate c at +3, the others within ±1: the linear rule argmax over the first C coordinates works.
  // Offsets and scales per feature give the standardisation something to do.
  const data = Float32Array.from({ length: n * d }, (_, x) => {
    const i = Math.floor(x / d), j = x % d;
    return (noise[x]! + (j === labels[i]! ? 4 : 0)) * (1 + j) + 10 * j;
  });
  return { x: matrix(data, n, d), labels };
};

gpuTest(
  "probe: linearly separable data reach 100% on train and test",
  Effect.gen(function* () {
    const train = separable(640, 12, 4, 1), test = separable(300, 12, 4, 2);
    const r = yield* linearProbe(train.x, train.labels, test.x, test.labels, { epochs: 20, batch: 64 });
    assert.equal(r.trainTop1, 1);
    assert.equal(r.top1, 1);
    assert.ok(r.trainLoss < 0.05, `train loss ${r.trainLoss}`);
  }),
);

/**
 * The same SGD in float64 on the host: for each epoch the sampler's order, per step the mean softmax cross-entropy
 * gradient of a batch, weight decay on every parameter, PyTorch's momentum buffer.
 */
const cpuProbe = (
  x: Float32Array,
  labels: Int32Array,
  n: number,
  d: number,
  c: number,
  o: { epochs: number; batch: number; lr: number; momentum: number; weightDecay: number; milestones: number[] },
) => {
  const w = new Float64Array(d * c), b = new Float64Array(c);
  const mw = new Float64Array(d * c), mb = new Float64Array(c);
  const sampler = new Sampler(n, o.batch, 0);
  for (let e = 0; e < o.epochs; e++) {
    const lr = probeLearningRate(o.lr, o.milestones, e);
    for (let s = 0; s < sampler.stepsPerEpoch; s++) {
      const gw = new Float64Array(d * c), gb = new Float64Array(c);
      for (const i of sampler.indices(e, s)) {
        const z = Array.from({ length: c }, (_, k) => {
          let v = b[k]!;
          for (let j = 0; j < d; j++) v += x[i * d + j]! * w[j * c + k]!;
          return v;
        });
        const m = Math.max(...z);
        const ez = z.map((v) => Math.exp(v - m));
        const total = ez.reduce((a, v) => a + v, 0);
        for (let k = 0; k < c; k++) {
          const g = (ez[k]! / total - (k === labels[i] ? 1 : 0)) / o.batch;
          gb[k]! += g;
          for (let j = 0; j < d; j++) gw[j * c + k]! += x[i * d + j]! * g;
        }
      }
      const update = (p: Float64Array, g: Float64Array, buf: Float64Array) => {
        for (let t = 0; t < p.length; t++) {
          buf[t] = o.momentum * buf[t]! + g[t]! + o.weightDecay * p[t]!;
          p[t]! -= lr * buf[t]!;
        }
      };
      update(w, gw, mw);
      update(b, gb, mb);
    }
  }
  return { w, b };
};

// Tolerance: 6 steps of f32 arithmetic (sums of 64 products per gradient entry) against float64, on O(1) values:
// 2e-5 absolute on the parameters and 1e-5 on the loss is ~100 f32 ulps, while a wrong sign, a missing 1/B, momentum
// or weight decay term, a learning rate 2% off or the wrong epoch order moves them by 2e-4 or more (checked).
gpuTest(
  "probe: parameters and loss after a few SGD steps equal a float64 reference (momentum, weight decay, lr steps)",
  Effect.gen(function* () {
    const n = 150, d = 6, c = 3;
    const x = matrix(randoms(n * d, 11, -2, 3), n, d);
    const labels = Int32Array.from(randoms(n, 12, 0, c), Math.floor);
    const o = { epochs: 3, batch: 64, lr: 0.5, momentum: 0.9, weightDecay: 0.01, milestones: [1, 2] };
    const r = yield* linearProbe(x, labels, x, labels, { ...o, classes: c });
    const { mean, std } = featureStats(x);
    const xs = standardised(x, mean, std);
    const ref = cpuProbe(xs, labels, n, d, c, o);
    assertClose(r.weights, ref.w, { atol: 2e-5, rtol: 0, what: "weights" });
    assertClose(r.bias, ref.b, { atol: 2e-5, rtol: 0, what: "bias" });
    const refLoss = applyLinear(xs, n, d, Float32Array.from(ref.w), Float32Array.from(ref.b), labels).loss;
    assert.ok(Math.abs(r.trainLoss - refLoss) < 1e-5, `loss ${r.trainLoss}, reference ${refLoss}`);
    assert.ok(refLoss < Math.log(c) - 0.01, "the steps did move the loss below chance");
    // Standardisation: the train features have mean 0 and std 1 per column.
    for (let j = 0; j < d; j++) {
      let s = 0, s2 = 0;
      for (let i = 0; i < n; i++) (s += xs[i * d + j]!), (s2 += xs[i * d + j]! ** 2);
      assert.ok(Math.abs(s / n) < 1e-6 && Math.abs(s2 / n - 1) < 1e-5, `column ${j}`);
    }
  }),
);

gpuTest(
  "probe: deterministic for a seed, and the seed changes the order",
  Effect.gen(function* () {
    const train = separable(256, 8, 3, 5), test = separable(64, 8, 3, 6);
    const o = { epochs: 3, batch: 64 };
    const a = yield* linearProbe(train.x, train.labels, test.x, test.labels, o);
    const b = yield* linearProbe(train.x, train.labels, test.x, test.labels, o);
    const other = yield* linearProbe(train.x, train.labels, test.x, test.labels, { ...o, seed: 1 });
    assert.deepEqual(a.weights, b.weights);
    assert.deepEqual(a.bias, b.bias);
    assert.notDeepEqual(a.weights, other.weights);
  }),
);

gpuTest(
  "probe: bad batch, labels and shapes are ShapeErrors",
  Effect.gen(function* () {
    const { x, labels } = separable(128, 4, 2, 1);
    for (
      const bad of [
        linearProbe(x, labels, x, labels, { batch: 100 }),
        linearProbe(x, labels, x, labels, { batch: 192 }),
        linearProbe(x, labels.subarray(1), x, labels),
        linearProbe(x, labels, x, Int32Array.from(labels, (l) => l + 5)),
        linearProbe(x, labels, matrix(new Float32Array(10), 2, 5), labels.subarray(0, 2)),
      ]
    ) {
      const e = yield* Effect.flip(bad);
      assert.ok(e instanceof ShapeError, String(e));
    }
  }),
);
