import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { Tensor } from "../../src/gpu/tensor.ts";
import { add, axpy, relu, reluBackward, scale } from "../../src/ops/elementwise.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

// Tolerances. Inputs are f32 and references are computed in float64, so the reference of a single op (x + y, a·x) is
// the exact result, and a correctly rounded f32 op is within half an ulp of it: relative 2^-24. We allow one ulp
// (2^-23). axpy rounds twice (a·x, then the add) unless the compiler fuses them: error <= 2^-24 (|a·x| + |y + a·x|),
// so atol = 2^-23 · max|a·x| on top of the relative ulp. relu and its backward only select: exact.
const ULP = 2 ** -23;

const shapes: number[][] = [[1], [7], [63], [65], [1000], [65, 7], [7, 63]];

for (const shape of shapes) {
  const n = shape.reduce((a, b) => a * b, 1);
  gpuTest(
    `elementwise ops match a float64 reference, shape [${shape}]`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const xs = randoms(n, 11 + n, -2, 2);
      const ys = randoms(n, 29 + n, -2, 2);
      xs[0] = 0; // relu and its backward: x = 0 is not > 0
      const a = -0.7310585;
      const x = gpu.upload(xs, "f32", shape, "x");
      const y = gpu.upload(ys, "f32", shape, "y");
      const sum = gpu.tensor(shape, "f32", "sum");
      const scaled = gpu.tensor(shape, "f32", "scaled");
      const acc = gpu.upload(ys, "f32", shape, "acc");
      const r = gpu.tensor(shape, "f32", "r");
      const dx = gpu.tensor(shape, "f32", "dx");
      yield* runDispatches([
        yield* add(x, y, sum),
        yield* scale(x, a, scaled),
        yield* axpy(a, x, acc),
        yield* relu(x, r),
        yield* reluBackward(x, y, dx),
      ]);
      const xd = Array.from(xs), yd = Array.from(ys);
      assertClose(yield* read(sum), xd.map((v, i) => v + yd[i]), { atol: 0, rtol: ULP, what: "add" });
      assertClose(yield* read(scaled), xd.map((v) => a * v), { atol: 0, rtol: ULP, what: "scale" });
      const axMax = Math.max(...xd.map((v) => Math.abs(a * v)));
      assertClose(yield* read(acc), xd.map((v, i) => yd[i] + a * v), { atol: ULP * axMax, rtol: ULP, what: "axpy" });
      assert.deepEqual(Array.from(yield* read(r)), xd.map((v) => (v > 0 ? v : 0)));
      assert.deepEqual(Array.from(yield* read(dx)), xd.map((v, i) => (v > 0 ? yd[i] : 0)));
    }),
  );
}

gpuTest(
  "in-place variants: add into x or y, scale, relu and reluBackward in place, axpy with x = y",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const n = 65;
    const xs = randoms(n, 3), ys = randoms(n, 4);
    const xd = Array.from(xs), yd = Array.from(ys);
    const x = gpu.upload(xs, "f32", [n], "x");
    const y1 = gpu.upload(ys, "f32", [n], "y1");
    const x2 = gpu.upload(xs, "f32", [n], "x2");
    const y2 = gpu.upload(ys, "f32", [n], "y2");
    const twice = gpu.upload(xs, "f32", [n], "twice");
    const s = gpu.upload(xs, "f32", [n], "s");
    const r = gpu.upload(xs, "f32", [n], "r");
    const g = gpu.upload(ys, "f32", [n], "g");
    const self = gpu.upload(ys, "f32", [n], "self");
    yield* runDispatches([
      yield* add(x2, y1, x2), // x2 = x + y
      yield* add(x, y2, y2), // y2 = x + y
      yield* add(twice, twice, twice), // 2x
      yield* scale(s, 3, s),
      yield* relu(r, r),
      yield* reluBackward(x, g, g),
      yield* axpy(0.5, self, self), // 1.5 y
    ]);
    const sum = xd.map((v, i) => v + yd[i]);
    assertClose(yield* read(x2), sum, { atol: 0, rtol: ULP, what: "add into x" });
    assertClose(yield* read(y2), sum, { atol: 0, rtol: ULP, what: "add into y" });
    assert.deepEqual(Array.from(yield* read(twice)), xd.map((v) => 2 * v)); // doubling is exact
    assertClose(yield* read(s), xd.map((v) => 3 * v), { atol: 0, rtol: ULP, what: "scale in place" });
    assert.deepEqual(Array.from(yield* read(r)), xd.map((v) => (v > 0 ? v : 0)));
    assert.deepEqual(Array.from(yield* read(g)), xd.map((v, i) => (v > 0 ? yd[i] : 0)));
    assertClose(yield* read(self), yd.map((v) => 1.5 * v), { atol: 0, rtol: ULP, what: "axpy x = y" });
  }),
);

gpuTest(
  "a prepared axpy recorded twice accumulates twice, and setParams changes its scalar",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const n = 1000;
    const xs = randoms(n, 5);
    const x = gpu.upload(xs, "f32", [n], "x");
    const y = gpu.tensor([n], "f32", "y");
    const step = yield* axpy(0.25, x, y);
    yield* runDispatches([step, step]); // y = 0.25x + 0.25x, exact (powers of two)
    assert.deepEqual(Array.from(yield* read(y)), Array.from(xs, (v) => 0.5 * v));
    step.setParams([["u32", n], ["f32", -0.5]]);
    yield* runDispatches([step]); // y = 0.5x - 0.5x = 0
    assert.deepEqual(Array.from(yield* read(y)), new Array(n).fill(0));
  }),
);

gpuTest(
  "scale over more than 65535 workgroups (a 2-D grid) reaches every element and no more",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const n = 65535 * 256 + 300; // 65537 workgroups of 256: the grid splits over x and y
    const data = new Float32Array(n + 64);
    for (let i = 0; i < data.length; i++) data[i] = (i % 1021) - 510;
    const big = gpu.upload(data, "f32", [n + 64], "big");
    const x = new Tensor(big.buffer, [n], "f32"); // the first n elements; the 64 after them must stay untouched
    yield* runDispatches([yield* scale(x, 2, x)]);
    const out = yield* read(big);
    for (let i = 0; i < n + 64; i++) {
      const want = i < n ? 2 * data[i] : data[i];
      if (out[i] !== want) assert.fail(`element ${i}: ${out[i]}, expected ${want}`);
    }
  }),
);

gpuTest(
  "shape errors: mismatched shapes, non-f32 tensors and overlapping views name the kernel",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const a = gpu.tensor([4, 3], "f32", "a");
    const b = gpu.tensor([3, 4], "f32", "b");
    const c = gpu.tensor([4, 3], "f32", "c");
    const u = gpu.tensor([4, 3], "u32", "u");
    const whole = gpu.tensor([128], "f32", "whole");
    const lo = new Tensor(whole.buffer, [64], "f32", 0);
    const hi = new Tensor(whole.buffer, [64], "f32", 256);
    const cases = [
      ["add", add(a, b, c)],
      ["scale", scale(a, 2, b)],
      ["axpy", axpy(1, a, b)],
      ["relu", relu(u, c)],
      ["reluBackward", reluBackward(a, c, b)],
      ["add", add(lo, lo, hi)],
      ["reluBackward", reluBackward(a, c, a)],
    ] as const;
    for (const [kernel, effect] of cases) {
      const error = yield* Effect.flip(effect);
      assert.equal(error._tag, "ShapeError", `${kernel}: ${error.message}`);
      assert.ok(error.message.startsWith(`${kernel}:`), error.message);
    }
  }),
);
