import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { L2_EPS, l2normalize, l2normalizeBackward } from "../../src/ops/l2norm.ts";
import { gpuTest, randoms } from "../helpers.ts";

// Tolerances (u = 2^-24; references in float64 from the same f32 inputs).
// Forward: ‖x‖² is a sum of d positive terms, relative error <= (d - 1)·u; the square root halves it and adds its own
// error (WGSL: 2.5 ulp with its reciprocal), the division 2.5 ulp more. Every y_i inherits the relative error of the
// row's norm: |Δy_i| <= (d/2 + 8)·u·|y_i|.
// Backward: dx_j = (dy_j − y_j s)/‖x‖ with s = y·dy; s carries an absolute error of about (d + 2)·u·Σ|y_k dy_k|, and the
// subtraction can cancel, so the bound is absolute per row: (d + 10)·u·(max|dy| + max|y|·Σ|y_k dy_k|) / ‖x‖.
// Gradient check: central differences in float64 with h = 1e-6·max(1, |x|) have truncation error O(h²) and rounding
// error O(1e-16/h), so they agree with the analytic gradient to ~1e-9 relative to the row's gradient scale; we ask 1e-7.
const U = 2 ** -24;
const EPS = Math.fround(L2_EPS); // the f32 eps the kernel compares against

const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));

/** Float64 reference of one row's forward. */
const cpuForward = (x: ArrayLike<number>, eps = EPS): number[] => {
  const denom = Math.max(norm(x), eps);
  return Array.from(x, (v) => v / denom);
};

/** Float64 analytic gradient of one row: (dy − y (y·dy)) / ‖x‖, or dy / eps where ‖x‖ < eps. */
const cpuBackward = (x: ArrayLike<number>, dy: ArrayLike<number>, eps = EPS): number[] => {
  const n = norm(x);
  if (n < eps) return Array.from(dy, (g) => g / eps);
  const y = cpuForward(x, eps);
  const s = y.reduce((acc, v, i) => acc + v * dy[i], 0);
  return y.map((v, i) => (dy[i] - v * s) / n);
};

const rowsOf = (a: Float32Array, rows: number, cols: number) =>
  Array.from({ length: rows }, (_, r) => Array.from(a.subarray(r * cols, (r + 1) * cols)));

// The CPU analytic backward is the gradient of the CPU forward: central differences of L(x) = Σ_j w_j y_j(x).
Deno.test("l2normalize: the float64 analytic backward matches central finite differences", () => {
  const cases: Array<[string, number[]]> = [
    ["d = 1", [0.37]],
    ["d = 7", Array.from(randoms(7, 1, -2, 2))],
    ["d = 65", Array.from(randoms(65, 2, -2, 2))],
    ["norm < eps (clamped)", Array.from(randoms(5, 3), (v) => v * 1e-13)],
  ];
  for (const [what, x] of cases) {
    const w = Array.from(randoms(x.length, 40 + x.length, -1, 1));
    const loss = (z: number[]) => cpuForward(z).reduce((s, v, i) => s + w[i] * v, 0);
    const analytic = cpuBackward(x, w);
    const scale = Math.max(...analytic.map(Math.abs), 1e-300);
    x.forEach((v, k) => {
      const h = what.startsWith("norm") ? 1e-16 : 1e-6 * Math.max(1, Math.abs(v));
      const plus = x.slice(), minus = x.slice();
      plus[k] = v + h;
      minus[k] = v - h;
      const fd = (loss(plus) - loss(minus)) / (2 * h);
      assert.ok(Math.abs(fd - analytic[k]) <= 1e-7 * scale, `${what}: d/dx[${k}] ${analytic[k]} vs FD ${fd}`);
    });
  }
});

const shapes: Array<[number, number]> = [
  [1, 1],
  [7, 1],
  [1, 1000],
  [63, 65],
  [65, 7],
  [1000, 7], // more rows than columns
  [7, 1000],
  [3, 2048],
  [2, 2049],
];

for (const [rows, cols] of shapes) {
  gpuTest(
    `l2normalize and its backward on [${rows}, ${cols}] match float64 references`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const xs = randoms(rows * cols, rows * 31 + cols, -3, 3);
      const dys = randoms(rows * cols, rows * 37 + cols + 1, -1, 1);
      const x = gpu.upload(xs, "f32", [rows, cols], "x");
      const dy = gpu.upload(dys, "f32", [rows, cols], "dy");
      const y = gpu.tensor([rows, cols], "f32", "y");
      const dx = gpu.tensor([rows, cols], "f32", "dx");
      yield* runDispatches([yield* l2normalize(x, y), yield* l2normalizeBackward(x, y, dy, dx)]);
      const yGpu = yield* read(y), dxGpu = yield* read(dx);
      const xr = rowsOf(xs, rows, cols), dyr = rowsOf(dys, rows, cols);
      const yr = rowsOf(yGpu, rows, cols), dxr = rowsOf(dxGpu, rows, cols);
      for (let r = 0; r < rows; r++) {
        const want = cpuForward(xr[r]!);
        want.forEach((v, j) => {
          const bound = (cols / 2 + 8) * U * Math.abs(v) + 1e-30;
          if (!(Math.abs(yr[r]![j]! - v) <= bound)) assert.fail(`y[${r}, ${j}] = ${yr[r]![j]}, expected ${v}`);
        });
        // the GPU backward from the GPU's own y, against the float64 analytic gradient
        const g = cpuBackward(xr[r]!, dyr[r]!);
        const ydy = want.reduce((s, v, j) => s + Math.abs(v * dyr[r]![j]!), 0);
        const scale = (Math.max(...dyr[r]!.map(Math.abs)) + Math.max(...want.map(Math.abs)) * ydy) / norm(xr[r]!);
        const bound = (cols + 10) * U * scale;
        g.forEach((v, j) => {
          if (!(Math.abs(dxr[r]![j]! - v) <= bound)) {
            assert.fail(`dx[${r}, ${j}] = ${dxr[r]![j]}, expected ${v} ± ${bound}`);
          }
        });
      }
    }),
  );
}

gpuTest(
  "l2normalize: rows are unit length; zero and tiny rows are clamped by eps, forward and backward",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const d = 65;
    const rows = [
      Array.from(randoms(d, 8, -100, 100)), // a long row
      new Array(d).fill(0), // zero row: y = 0, dx = dy / eps
      Array.from(randoms(d, 9), (v) => v * 1e-14), // ‖x‖ < eps: y = x / eps, dx = dy / eps
    ];
    const dys = randoms(3 * d, 10);
    const x = gpu.upload(new Float32Array(rows.flat()), "f32", [3, d], "x");
    const dy = gpu.upload(dys, "f32", [3, d], "dy");
    const y = gpu.tensor([3, d], "f32", "y");
    const dx = gpu.tensor([3, d], "f32", "dx");
    yield* runDispatches([yield* l2normalize(x, y), yield* l2normalizeBackward(x, y, dy, dx)]);
    const yr = rowsOf(yield* read(y), 3, d), dxr = rowsOf(yield* read(dx), 3, d), dyr = rowsOf(dys, 3, d);
    assert.ok(Math.abs(norm(yr[0]!) - 1) < 1e-6, `‖y_0‖ = ${norm(yr[0]!)}`);
    assert.deepEqual(yr[1], new Array(d).fill(0));
    const tiny = cpuForward(rows[2]!.map(Math.fround));
    tiny.forEach((v, j) => assert.ok(Math.abs(yr[2]![j]! - v) <= 1e-6 * Math.abs(v), `tiny y[${j}]`));
    assert.ok(norm(yr[2]!) < 1, "a row below eps is not scaled up to unit length");
    for (const r of [1, 2]) {
      dyr[r]!.forEach((g, j) => {
        const want = g / EPS;
        assert.ok(Math.abs(dxr[r]![j]! - want) <= 1e-6 * Math.abs(want), `dx[${r}, ${j}] = ${dxr[r]![j]}, ${want}`);
      });
    }
  }),
);

gpuTest(
  "l2normalize shape errors name the kernel",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const x = gpu.tensor([4, 3], "f32", "x");
    const cases = [
      ["l2normalize", l2normalize(x, gpu.tensor([3, 4], "f32", "y"))],
      ["l2normalize", l2normalize(gpu.tensor([12], "f32", "flat"), gpu.tensor([12], "f32", "y"))],
      ["l2normalize", l2normalize(x, x)],
      ["l2normalizeBackward", l2normalizeBackward(x, x, x, gpu.tensor([4, 3], "u32", "dx"))],
      [
        "l2normalizeBackward",
        l2normalizeBackward(x, gpu.tensor([4, 2], "f32", "y"), x, gpu.tensor([4, 3], "f32", "dx")),
      ],
    ] as const;
    for (const [kernel, effect] of cases) {
      const error = yield* Effect.flip(effect);
      assert.equal(error._tag, "ShapeError", `${kernel}: ${error.message}`);
      assert.ok(error.message.startsWith(`${kernel}:`), error.message);
    }
  }),
);
