import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { argmax, mean, sum } from "../../src/ops/reduce.ts";
import { gpuTest, randoms } from "../helpers.ts";

// Tolerances. References are float64 sums of the f32 inputs (exact to far below f32 resolution). An f32 sum of n terms
// in any order is within (n - 1)·2^-24·Σ|x| of the exact sum (the GPU's strided-then-tree order does better, but this
// is the bound that holds for every order). A mean adds one division, which WGSL allows 2.5 ulp: + 3·2^-24·|mean|.
// argmax selects, so it must be exact, ties included.
const U = 2 ** -24;

const assertWithin = (actual: ArrayLike<number>, expected: number[], bound: number[], what: string) => {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= bound[i])) assert.fail(`${what}[${i}] = ${actual[i]}, expected ${expected[i]} ± ${bound[i]}`);
  }
};

/** Float64 sums over an axis of row-major [R, C], with Σ|x| for the error bounds. */
const cpuSum = (x: Float32Array, rows: number, cols: number, axis: 0 | 1) => {
  const n = axis === 0 ? cols : rows;
  const s = new Array<number>(n).fill(0), abs = new Array<number>(n).fill(0);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = x[r * cols + c], k = axis === 0 ? c : r;
      s[k] += v;
      abs[k] += Math.abs(v);
    }
  }
  return { s, abs };
};

/** numpy's argmax per row: the first index of the maximum. */
const cpuArgmax = (x: Float32Array, rows: number, cols: number) =>
  Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let c = 1; c < cols; c++) if (x[r * cols + c] > x[r * cols + best]) best = c;
    return best;
  });

const shapes: Array<[number, number]> = [
  [1, 1],
  [1, 1000],
  [1000, 1],
  [7, 63],
  [63, 65],
  [65, 7],
  [1000, 7], // more rows than columns
  [7, 1000], // more columns than rows, rows longer than a workgroup
  [3, 2049], // rows longer than 8 workgroup widths, with a remainder
];

for (const [rows, cols] of shapes) {
  gpuTest(
    `sum, mean and argmax of [${rows}, ${cols}] match a float64 reference`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const xs = randoms(rows * cols, rows * 7919 + cols, -3, 5); // not centred: sums do not cancel to noise
      // argmax input: values on a coarse grid, so rows have many ties for the maximum
      const ties = xs.map((v) => Math.round(v));
      const x = gpu.upload(xs, "f32", [rows, cols], "x");
      const t = gpu.upload(ties, "f32", [rows, cols], "ties");
      const out = {
        sum0: gpu.tensor([cols], "f32", "sum0"),
        sum1: gpu.tensor([rows], "f32", "sum1"),
        mean0: gpu.tensor([cols], "f32", "mean0"),
        mean1: gpu.tensor([rows], "f32", "mean1"),
        arg: gpu.tensor([rows], "u32", "arg"),
        argTies: gpu.tensor([rows], "u32", "argTies"),
      };
      yield* runDispatches([
        yield* sum(x, 0, out.sum0),
        yield* sum(x, 1, out.sum1),
        yield* mean(x, 0, out.mean0),
        yield* mean(x, 1, out.mean1),
        yield* argmax(x, out.arg),
        yield* argmax(t, out.argTies),
      ]);
      for (const axis of [0, 1] as const) {
        const n = axis === 0 ? rows : cols;
        const { s, abs } = cpuSum(xs, rows, cols, axis);
        const sumBound = abs.map((a) => Math.max(n - 1, 1) * U * a);
        assertWithin(yield* read(axis === 0 ? out.sum0 : out.sum1), s, sumBound, `sum axis ${axis}`);
        const m = s.map((v) => v / n);
        const meanBound = m.map((v, i) => sumBound[i] / n + 3 * U * Math.abs(v));
        assertWithin(yield* read(axis === 0 ? out.mean0 : out.mean1), m, meanBound, `mean axis ${axis}`);
      }
      assert.deepEqual(Array.from(yield* read(out.arg)), cpuArgmax(xs, rows, cols));
      assert.deepEqual(Array.from(yield* read(out.argTies)), cpuArgmax(ties, rows, cols));
    }),
  );
}

gpuTest(
  "argmax: all-equal rows give 0, -Infinity and huge values are handled, the last column can win",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const cols = 300;
    const rows = [
      new Array(cols).fill(-Infinity),
      new Array(cols).fill(2.5),
      Array.from({ length: cols }, (_, c) => (c === cols - 1 ? 1 : -3.4e38)),
      Array.from({ length: cols }, (_, c) => (c === 257 || c === 290 ? 3.4e38 : -Infinity)),
    ];
    const x = gpu.upload(new Float32Array(rows.flat()), "f32", [rows.length, cols], "x");
    const out = gpu.tensor([rows.length], "u32", "out");
    yield* runDispatches([yield* argmax(x, out)]);
    assert.deepEqual(Array.from(yield* read(out)), [0, 0, cols - 1, 257]);
  }),
);

gpuTest(
  "row sums over more than 65535 rows (a 2-D grid of workgroups) and column sums, run twice: identical bits",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const rows = 70000, cols = 2;
    const xs = randoms(rows * cols, 99);
    const x = gpu.upload(xs, "f32", [rows, cols], "x");
    const s1 = gpu.tensor([rows], "f32", "s1");
    const c1 = gpu.tensor([cols], "f32", "c1");
    const c2 = gpu.tensor([cols], "f32", "c2");
    yield* runDispatches([yield* sum(x, 1, s1), yield* sum(x, 0, c1), yield* sum(x, 0, c2)]);
    const got = yield* read(s1);
    for (let r = 0; r < rows; r++) {
      const want = Math.fround(xs[2 * r] + xs[2 * r + 1]); // two terms: one rounding, exactly reproducible
      if (got[r] !== want) assert.fail(`row ${r}: ${got[r]}, expected ${want}`);
    }
    const { s, abs } = cpuSum(xs, rows, cols, 0);
    assertWithin(yield* read(c1), s, abs.map((a) => rows * U * a), "column sums");
    assert.deepEqual(yield* read(c2), yield* read(c1));
  }),
);

gpuTest(
  "shape errors name the kernel: wrong output length, wrong dtype, 1-D input, empty rows for argmax",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const x = gpu.tensor([4, 3], "f32", "x");
    const cases = [
      ["sum", sum(x, 0, gpu.tensor([4], "f32", "o"))],
      ["sum", sum(gpu.tensor([12], "f32", "flat"), 1, gpu.tensor([1], "f32", "o"))],
      ["mean", mean(x, 1, gpu.tensor([4], "u32", "o"))],
      ["mean", mean(gpu.tensor([0, 3], "f32", "empty"), 0, gpu.tensor([3], "f32", "o"))],
      ["argmax", argmax(x, gpu.tensor([4], "f32", "o"))],
      ["argmax", argmax(gpu.tensor([2, 0], "f32", "empty"), gpu.tensor([2], "u32", "o"))],
      ["argmax", argmax(x, gpu.tensor([3], "u32", "o"))],
    ] as const;
    for (const [kernel, effect] of cases) {
      const error = yield* Effect.flip(effect);
      assert.equal(error._tag, "ShapeError", `${kernel}: ${error.message}`);
      assert.ok(error.message.startsWith(`${kernel}:`), error.message);
    }
  }),
);
