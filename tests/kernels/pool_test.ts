import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { Tensor } from "../../src/gpu/tensor.ts";
import { convOutputSize } from "../../src/ops/conv2d.ts";
import {
  globalAvgPool,
  globalAvgPoolBackward,
  maxPool2d,
  maxPool2dBackward,
  type MaxPoolOptions,
} from "../../src/ops/pool.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

// ---- CPU reference, float64 ------------------------------------------------------------------------------------

interface Pool {
  readonly x: readonly [number, number, number, number];
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
}

const outSize = (c: Pool) =>
  [
    convOutputSize(c.x[2], c.kernel[0], c.stride[0], c.padding[0]),
    convOutputSize(c.x[3], c.kernel[1], c.stride[1], c.padding[1]),
  ] as const;

/** Max pooling as PyTorch: ties keep the first element in row-major window order, a NaN always wins. */
const cpuMaxPool = (c: Pool, x: ArrayLike<number>) => {
  const [N, C, H, W] = c.x;
  const [OH, OW] = outSize(c);
  const y = new Float64Array(N * C * OH * OW);
  const indices = new Uint32Array(y.length);
  for (let plane = 0; plane < N * C; plane++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let best = -Infinity, at = -1;
        for (let kh = 0; kh < c.kernel[0]; kh++) {
          const ih = oh * c.stride[0] - c.padding[0] + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < c.kernel[1]; kw++) {
            const iw = ow * c.stride[1] - c.padding[1] + kw;
            if (iw < 0 || iw >= W) continue;
            const v = x[plane * H * W + ih * W + iw]!;
            if (at < 0 || v > best || Number.isNaN(v)) [best, at] = [v, ih * W + iw];
          }
        }
        const o = (plane * OH + oh) * OW + ow;
        y[o] = best;
        indices[o] = at;
      }
    }
  }
  return { y, indices };
};

const cpuMaxPoolBackward = (c: Pool, indices: Uint32Array, dy: ArrayLike<number>) => {
  const [N, C, H, W] = c.x;
  const [OH, OW] = outSize(c);
  const dx = new Float64Array(N * C * H * W);
  for (let o = 0; o < dy.length; o++) dx[Math.floor(o / (OH * OW)) * H * W + indices[o]!]! += dy[o]!;
  return dx;
};

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

const runMaxPool = (c: Pool, x: Float32Array<ArrayBuffer>, dyData: Float32Array<ArrayBuffer>) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const [OH, OW] = outSize(c);
    const yShape = [c.x[0], c.x[1], OH, OW];
    const opts: MaxPoolOptions = { kernel: c.kernel, stride: c.stride, padding: c.padding };
    const xt = gpu.upload(x, "f32", c.x, "x");
    const dy = gpu.upload(dyData, "f32", yShape, "dy");
    const y = gpu.tensor(yShape, "f32", "y");
    const y2 = gpu.tensor(yShape, "f32", "y without indices");
    const indices = gpu.tensor(yShape, "u32", "indices");
    const dx = gpu.tensor(c.x, "f32", "dx");
    gpu.write(dx, new Float32Array(dx.size).fill(7)); // the backward must overwrite, not accumulate
    yield* runDispatches([yield* maxPool2d(xt, y, indices, opts), yield* maxPool2d(xt, y2, undefined, opts)]);
    yield* runDispatches([yield* maxPool2dBackward(dy, indices, dx, opts)]);
    return { y: yield* read(y), y2: yield* read(y2), indices: yield* read(indices), dx: yield* read(dx) };
  });

const cases: Array<Pool & { name: string }> = [
  { name: "3x3 s2 p1 (ResNet stem) on 7x7", x: [2, 3, 7, 7], kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
  { name: "3x3 s2 p1 on odd 9x11", x: [1, 5, 9, 11], kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
  { name: "2x2 s2 on odd input (floor)", x: [3, 2, 7, 5], kernel: [2, 2], stride: [2, 2], padding: [0, 0] },
  { name: "3x3 s1 p1 (9-fold overlap)", x: [2, 2, 6, 5], kernel: [3, 3], stride: [1, 1], padding: [1, 1] },
  { name: "2x3 window, stride [1,2], pad [1,1]", x: [1, 3, 5, 8], kernel: [2, 3], stride: [1, 2], padding: [1, 1] },
  { name: "1x1 s2", x: [2, 2, 5, 5], kernel: [1, 1], stride: [2, 2], padding: [0, 0] },
  { name: "many planes (several workgroups)", x: [4, 64, 9, 9], kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
];

// Max pooling copies values: forward and indices are exact. The backward sums at most KH·KW gradients per input in
// f32 against float64: 1e-6 covers the rounding.
cases.forEach((c, i) => {
  gpuTest(
    `maxPool2d forward, indices and backward vs CPU: ${c.name}`,
    Effect.gen(function* () {
      // Negative inputs: a padding taken as 0 instead of -inf would win at the borders.
      const x = randoms(numel(c.x), 10 + i, -2, -1);
      const [OH, OW] = outSize(c);
      const dy = randoms(c.x[0] * c.x[1] * OH * OW, 20 + i);
      const r = yield* runMaxPool(c, x, dy);
      const ref = cpuMaxPool(c, x);
      assert.deepEqual(Array.from(r.y), Array.from(ref.y));
      assert.deepEqual(r.y2, r.y);
      assert.deepEqual(r.indices, ref.indices);
      assertClose(r.dx, cpuMaxPoolBackward(c, ref.indices, dy), { atol: 1e-6, rtol: 1e-6, what: "dx" });
    }),
  );
});

gpuTest(
  "maxPool2d ties go to the first index, a NaN wins",
  Effect.gen(function* () {
    const c: Pool = { x: [1, 2, 6, 6], kernel: [3, 3], stride: [2, 2], padding: [1, 1] };
    // Plane 0: three levels only, so most windows hold ties. Plane 1: constant, then a NaN.
    const x = Float32Array.from(randoms(72, 3), (v, i) => i < 36 ? Math.round(v) : 0.5);
    x[36 + 2 * 6 + 3] = NaN;
    const [OH, OW] = outSize(c);
    const r = yield* runMaxPool(c, x, randoms(2 * OH * OW, 4));
    const ref = cpuMaxPool(c, x);
    assert.deepEqual(Array.from(r.y), Array.from(ref.y));
    assert.deepEqual(r.indices, ref.indices);
    assert.ok(Number.isNaN(r.y[OH * OW + 1 * OW + 1]!) && r.indices[OH * OW + 1 * OW + 1] === 2 * 6 + 3);
    assert.equal(r.indices[OH * OW], 0, "constant plane: the first element of the window");
  }),
);

gpuTest(
  "maxPool2dBackward vs central finite differences",
  Effect.gen(function* () {
    const c: Pool = { x: [2, 2, 5, 6], kernel: [3, 3], stride: [2, 2], padding: [1, 1] };
    // Distinct values at least 0.01 apart, so that a step of 1e-4 never changes an argmax: L is then linear near x.
    const n = numel(c.x);
    const order = Array.from(randoms(n, 8), (v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]);
    const x = new Float32Array(n);
    order.forEach(([, i], rank) => x[i] = rank * 0.01 - 1);
    const [OH, OW] = outSize(c);
    const dy = randoms(2 * 2 * OH * OW, 9);
    const r = yield* runMaxPool(c, x, dy);
    const xs = Float64Array.from(x);
    const loss = () => cpuMaxPool(c, xs).y.reduce((s, y, i) => s + y * dy[i]!, 0);
    const h = 1e-4;
    const fd = Array.from(xs, (_, i) => {
      const keep = xs[i]!;
      xs[i] = keep + h;
      const up = loss();
      xs[i] = keep - h;
      const down = loss();
      xs[i] = keep;
      return (up - down) / (2 * h);
    });
    assertClose(r.dx, fd, { atol: 1e-6, rtol: 1e-6, what: "dx" }); // FD exact up to float64 rounding ~1e-12
  }),
);

// ---- global average pooling --------------------------------------------------------------------------------------

for (const shape of [[2, 3, 5, 3], [1, 1, 1, 1], [2, 3, 7, 7], [3, 130, 4, 5], [2, 4, 28, 28]] as const) {
  gpuTest(
    `globalAvgPool forward and backward vs CPU (and finite differences when small): [${shape}]`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const [N, C, H, W] = shape;
      const HW = H * W;
      const xData = randoms(numel(shape), 30 + C);
      const dyData = randoms(N * C, 40 + C);
      const x = gpu.upload(xData, "f32", shape, "x");
      const dy = gpu.upload(dyData, "f32", [N, C], "dy");
      const y = gpu.tensor([N, C], "f32", "y");
      const dx = gpu.tensor(shape, "f32", "dx");
      yield* runDispatches([yield* globalAvgPool(x, y), yield* globalAvgPoolBackward(dy, dx)]);
      const mean = Array.from({ length: N * C }, (_, p) => {
        let s = 0;
        for (let k = 0; k < HW; k++) s += xData[p * HW + k]!;
        return s / HW;
      });
      // A mean of H·W values in [-1, 1] summed in f32: error below H·W·eps32 ≈ 1e-4 at 28x28, typically far less.
      assertClose(yield* read(y), mean, { atol: 1e-6 * HW, rtol: 1e-6, what: "y" });
      const dxGpu = yield* read(dx);
      assertClose(dxGpu, Array.from(xData, (_, i) => dyData[Math.floor(i / HW)]! / HW), {
        atol: 1e-7,
        rtol: 1e-6,
        what: "dx",
      });
      if (numel(shape) > 200) return;
      // L = Σ dy ⊙ mean(x) is linear in x: central differences are exact up to float64 rounding.
      const xs = Float64Array.from(xData);
      const loss = () => {
        let s = 0;
        for (let p = 0; p < N * C; p++) for (let k = 0; k < HW; k++) s += dyData[p]! * xs[p * HW + k]! / HW;
        return s;
      };
      const fd = Array.from(xs, (_, i) => {
        const keep = xs[i]!;
        xs[i] = keep + 1e-3;
        const up = loss();
        xs[i] = keep - 1e-3;
        const down = loss();
        xs[i] = keep;
        return (up - down) / 2e-3;
      });
      assertClose(dxGpu, fd, { atol: 1e-7, rtol: 1e-6, what: "dx vs finite differences" });
    }),
  );
}

// ---- shape errors ----------------------------------------------------------------------------------------------

gpuTest(
  "pooling shape errors are typed and name the op and the shapes",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const f = (shape: number[]) => gpu.tensor(shape, "f32", "t");
    const u = (shape: number[]) => gpu.tensor(shape, "u32", "i");
    const x = f([2, 3, 7, 7]);
    const opts = { kernel: 3, stride: 2, padding: 1 };
    const expectShapeError = function* (
      effect: Effect.Effect<unknown, { readonly _tag: string; readonly message: string }, Gpu>,
      pattern: RegExp,
    ) {
      const e = yield* Effect.flip(effect);
      assert.equal(e._tag, "ShapeError");
      assert.match(e.message, pattern);
    };
    yield* expectShapeError(maxPool2d(x, f([2, 3, 3, 3]), undefined, opts), /maxPool2d: output .* \[2, 3, 4, 4\]/);
    yield* expectShapeError(maxPool2d(x, f([2, 3, 4, 4]), f([2, 3, 4, 4]), opts), /indices .* must be u32/);
    yield* expectShapeError(maxPool2d(x, f([2, 3, 4, 4]), undefined, { kernel: 3, padding: 2 }), /half the kernel/);
    yield* expectShapeError(maxPool2d(x, f([2, 3, 4, 4]), undefined, { kernel: 9 }), /does not fit/);
    yield* expectShapeError(maxPool2d(x, f([2, 3, 4, 4]), undefined, { kernel: 0 }), /integers >= 1/);
    yield* expectShapeError(maxPool2dBackward(f([2, 3, 4, 4]), u([2, 3, 4, 3]), x, opts), /indices .*\[2, 3, 4, 4\]/);
    yield* expectShapeError(maxPool2dBackward(f([2, 3, 4, 4]), u([2, 3, 4, 4]), f([2, 3, 7]), opts), /4-D/);
    yield* expectShapeError(globalAvgPool(x, f([2, 4])), /globalAvgPool: output .* \[2, 3\]/);
    yield* expectShapeError(globalAvgPoolBackward(f([3, 3]), x), /output gradient .* \[2, 3\]/);
    const y = f([2, 3, 4, 4]);
    const sameBuffer = new Tensor(y.buffer, [2, 3, 4, 4], "u32");
    yield* expectShapeError(maxPool2d(x, y, sameBuffer, opts), /shares a buffer/);
  }),
);
