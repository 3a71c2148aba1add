import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { softmaxCrossEntropy, softmaxCrossEntropyBackward } from "../../src/ops/softmax_ce.ts";
import { gpuTest, randoms } from "../helpers.ts";

// Tolerances (u = 2^-24; references in float64 from the same f32 logits). WGSL allows exp an error of (3 + 2|a|) ulp
// at argument a <= 0, log 3 ulp (2^-21 absolute near 1), division 2.5 ulp. Since |a|·e^a <= 1/e, the row sum
// s = Σ_j exp(x_j − m) >= 1 has relative error <= (2C + 4)·u (exp errors plus the summation's C·u), hence:
//   loss_i:      |Δ| <= 2^-20 + (2C + 8)·u + 4·max|x|·u   (m + log s − x_t: log's error, s's error, two roundings of
//                size |x|)
//   mean:        the rows' bound, plus (N + 3)·u·mean|loss| for the sum of N terms and the division
//   dlogits_ij:  |Δ| <= u·(p_ij·(2C + 12) + 2)/N          (p's relative error, the subtraction, the division by N)
// Gradient check: central differences of the float64 mean loss with h = 1e-6: truncation O(h²), rounding O(1e-16/h);
// we ask 1e-7 of the largest gradient entry.
const U = 2 ** -24;

/** Float64 reference: per-row loss, mean, and the analytic gradient of the mean. */
const cpu = (x: ArrayLike<number>, t: ArrayLike<number>, rows: number, cols: number) => {
  const loss: number[] = [], grad = new Array<number>(rows * cols), prob = new Array<number>(rows * cols);
  for (let i = 0; i < rows; i++) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, x[i * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(x[i * cols + j] - m);
    loss.push(m + Math.log(s) - x[i * cols + t[i]]);
    for (let j = 0; j < cols; j++) {
      prob[i * cols + j] = Math.exp(x[i * cols + j] - m) / s;
      grad[i * cols + j] = (prob[i * cols + j] - (j === t[i] ? 1 : 0)) / rows;
    }
  }
  return { loss, mean: loss.reduce((a, b) => a + b, 0) / rows, grad, prob };
};

const targetsFor = (rows: number, cols: number, seed: number) =>
  Uint32Array.from(randoms(rows, seed, 0, cols), (v) => Math.min(cols - 1, Math.floor(v)));

Deno.test("softmax CE: the float64 analytic gradient matches central finite differences of the mean loss", () => {
  const cases: Array<[string, number, number, number]> = [["C = 1", 3, 1, 1], ["C = 5", 4, 5, 2], [
    "logits ±80",
    3,
    7,
    80,
  ]];
  for (const [what, rows, cols, range] of cases) {
    const x = Array.from(randoms(rows * cols, rows + cols, -range, range));
    const t = targetsFor(rows, cols, 7);
    const { grad } = cpu(x, t, rows, cols);
    const scale = Math.max(...grad.map(Math.abs), 1e-12);
    x.forEach((v, k) => {
      const h = 1e-6 * Math.max(1, Math.abs(v));
      const plus = x.slice(), minus = x.slice();
      plus[k] = v + h;
      minus[k] = v - h;
      const fd = (cpu(plus, t, rows, cols).mean - cpu(minus, t, rows, cols).mean) / (2 * h);
      assert.ok(Math.abs(fd - grad[k]) <= 1e-7 * scale, `${what}: d/dx[${k}] ${grad[k]} vs FD ${fd}`);
    });
  }
});

const cases: Array<[rows: number, cols: number, lo: number, hi: number]> = [
  [1, 1, -1, 1],
  [7, 1, -80, 80], // C = 1: loss 0 and gradient 0 whatever the logit
  [1, 1000, -4, 4],
  [63, 65, -4, 4],
  [65, 7, -4, 4],
  [1000, 7, -4, 4], // more rows than classes
  [7, 1000, -80, 80], // C = 1000, large logits
  [65, 63, -80, 80], // large logits: exp(±80) alone would lose all precision of the sum
  [5, 65, 500, 660], // exp(x) overflows f32 beyond 88.7: only a max-shifted sum survives
  [3, 2049, -10, 10],
];

for (const [rows, cols, lo, hi] of cases) {
  gpuTest(
    `softmax CE forward, mean and backward on [${rows}, ${cols}], logits in [${lo}, ${hi}), match float64`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const xs = randoms(rows * cols, rows * 1009 + cols, lo, hi);
      const ts = targetsFor(rows, cols, rows + 3 * cols);
      const logits = gpu.upload(xs, "f32", [rows, cols], "logits");
      const targets = gpu.upload(ts, "u32", [rows], "targets");
      const loss = gpu.tensor([rows], "f32", "loss");
      const mean = gpu.tensor([1], "f32", "mean");
      const dlogits = gpu.tensor([rows, cols], "f32", "dlogits");
      yield* runDispatches([
        yield* softmaxCrossEntropy(logits, targets, loss, mean),
        yield* softmaxCrossEntropyBackward(logits, targets, dlogits),
      ]);
      const ref = cpu(xs, ts, rows, cols);
      const maxAbs = Math.max(...Array.from(xs, Math.abs));
      const rowBound = 2 ** -20 + (2 * cols + 8) * U + 4 * maxAbs * U;
      const lossGpu = yield* read(loss);
      ref.loss.forEach((v, i) => {
        if (!(Math.abs(lossGpu[i] - v) <= rowBound)) {
          assert.fail(`loss[${i}] = ${lossGpu[i]}, expected ${v} ± ${rowBound}`);
        }
      });
      const meanAbs = ref.loss.reduce((a, b) => a + Math.abs(b), 0) / rows;
      const [meanGpu] = yield* read(mean);
      const meanBound = rowBound + (rows + 3) * U * meanAbs;
      assert.ok(Math.abs(meanGpu! - ref.mean) <= meanBound, `mean ${meanGpu}, expected ${ref.mean} ± ${meanBound}`);
      const dGpu = yield* read(dlogits);
      ref.grad.forEach((v, k) => {
        const bound = U * (ref.prob[k]! * (2 * cols + 12) + 2) / rows;
        if (!(Math.abs(dGpu[k] - v) <= bound)) assert.fail(`dlogits[${k}] = ${dGpu[k]}, expected ${v} ± ${bound}`);
      });
      // each gradient row sums to 0 (softmax sums to 1): a check independent of the reference
      for (let i = 0; i < rows; i++) {
        const s = dGpu.subarray(i * cols, (i + 1) * cols).reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(s) <= (2 * cols + 4) * U / rows, `row ${i} of dlogits sums to ${s}`);
      }
    }),
  );
}

gpuTest(
  "softmax CE: a target out of range gives a NaN loss, a NaN mean and a NaN gradient row; other rows are untouched",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const rows = 4, cols = 9;
    const xs = randoms(rows * cols, 12);
    const ts = Uint32Array.from([2, cols, 0, 0xffffffff]);
    const logits = gpu.upload(xs, "f32", [rows, cols], "logits");
    const targets = gpu.upload(ts, "u32", [rows], "targets");
    const loss = gpu.tensor([rows], "f32", "loss");
    const mean = gpu.tensor([1], "f32", "mean");
    const dlogits = gpu.tensor([rows, cols], "f32", "dlogits");
    yield* runDispatches([
      yield* softmaxCrossEntropy(logits, targets, loss, mean),
      yield* softmaxCrossEntropyBackward(logits, targets, dlogits),
    ]);
    const lossGpu = yield* read(loss), dGpu = yield* read(dlogits);
    const ref = cpu(xs, Uint32Array.from([2, 0, 0, 0]), rows, cols);
    assert.deepEqual([1, 3].map((i) => Number.isNaN(lossGpu[i])), [true, true]);
    assert.ok(Math.abs(lossGpu[0] - ref.loss[0]!) < 1e-5 && Math.abs(lossGpu[2] - ref.loss[2]!) < 1e-5);
    assert.ok(Number.isNaN((yield* read(mean))[0]), "mean");
    for (let k = 0; k < rows * cols; k++) {
      const row = Math.floor(k / cols);
      if (row === 1 || row === 3) assert.ok(Number.isNaN(dGpu[k]), `dlogits[${k}] is NaN`);
      else assert.ok(Math.abs(dGpu[k] - ref.grad[k]!) < 1e-6, `dlogits[${k}]`);
    }
  }),
);

gpuTest(
  "softmax CE shape errors name the kernel",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const logits = gpu.tensor([4, 3], "f32", "logits");
    const targets = gpu.tensor([4], "u32", "targets");
    const loss = gpu.tensor([4], "f32", "loss");
    const mean = gpu.tensor([1], "f32", "mean");
    const cases = [
      ["softmaxCrossEntropy", softmaxCrossEntropy(logits, gpu.tensor([3], "u32", "t"), loss, mean)],
      ["softmaxCrossEntropy", softmaxCrossEntropy(logits, gpu.tensor([4], "i32", "t"), loss, mean)],
      ["softmaxCrossEntropy", softmaxCrossEntropy(logits, targets, gpu.tensor([3], "f32", "l"), mean)],
      ["softmaxCrossEntropy", softmaxCrossEntropy(logits, targets, loss, gpu.tensor([2], "f32", "m"))],
      ["softmaxCrossEntropy", softmaxCrossEntropy(gpu.tensor([12], "f32", "flat"), targets, loss, mean)],
      ["softmaxCrossEntropyBackward", softmaxCrossEntropyBackward(logits, targets, gpu.tensor([3, 4], "f32", "d"))],
      ["softmaxCrossEntropyBackward", softmaxCrossEntropyBackward(logits, targets, logits)],
    ] as const;
    for (const [kernel, effect] of cases) {
      const error = yield* Effect.flip(effect);
      assert.equal(error._tag, "ShapeError", `${kernel}: ${error.message}`);
      assert.ok(error.message.startsWith(`${kernel}:`), error.message);
    }
  }),
);
