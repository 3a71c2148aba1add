import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { Tensor } from "../../src/gpu/tensor.ts";
import {
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  type Conv2dOptions,
  type ConvGeometry,
  convOutputSize,
} from "../../src/ops/conv2d.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

// ---- CPU reference, float64 ------------------------------------------------------------------------------------

const geometryOf = (
  [N, Cin, H, W]: readonly number[],
  [Cout, , KH, KW]: readonly number[],
  [sh, sw]: readonly [number, number],
  [ph, pw]: readonly [number, number],
): ConvGeometry => ({
  N: N!,
  Cin: Cin!,
  H: H!,
  W: W!,
  Cout: Cout!,
  KH: KH!,
  KW: KW!,
  sh,
  sw,
  ph,
  pw,
  OH: convOutputSize(H!, KH!, sh, ph),
  OW: convOutputSize(W!, KW!, sw, pw),
});

/** Calls f(n, co, oh, ow, ci, kh, kw, xIndex, yIndex, wIndex) for every tap that lands inside the input. */
const eachTap = (
  g: ConvGeometry,
  f: (yi: number, xi: number, wi: number, co: number) => void,
) => {
  for (let n = 0; n < g.N; n++) {
    for (let co = 0; co < g.Cout; co++) {
      for (let oh = 0; oh < g.OH; oh++) {
        for (let ow = 0; ow < g.OW; ow++) {
          const yi = ((n * g.Cout + co) * g.OH + oh) * g.OW + ow;
          for (let ci = 0; ci < g.Cin; ci++) {
            for (let kh = 0; kh < g.KH; kh++) {
              const ih = oh * g.sh - g.ph + kh;
              if (ih < 0 || ih >= g.H) continue;
              for (let kw = 0; kw < g.KW; kw++) {
                const iw = ow * g.sw - g.pw + kw;
                if (iw < 0 || iw >= g.W) continue;
                f(yi, ((n * g.Cin + ci) * g.H + ih) * g.W + iw, ((co * g.Cin + ci) * g.KH + kh) * g.KW + kw, co);
              }
            }
          }
        }
      }
    }
  }
};

const cpuForward = (g: ConvGeometry, x: ArrayLike<number>, w: ArrayLike<number>, bias?: ArrayLike<number>) => {
  const y = new Float64Array(g.N * g.Cout * g.OH * g.OW);
  if (bias) { for (let i = 0; i < y.length; i++) y[i] = bias[Math.floor(i / (g.OH * g.OW)) % g.Cout]!; }
  eachTap(g, (yi, xi, wi) => y[yi]! += x[xi]! * w[wi]!);
  return y;
};

const cpuBackward = (g: ConvGeometry, x: ArrayLike<number>, w: ArrayLike<number>, dy: ArrayLike<number>) => {
  const dx = new Float64Array(g.N * g.Cin * g.H * g.W);
  const dw = new Float64Array(g.Cout * g.Cin * g.KH * g.KW);
  const db = new Float64Array(g.Cout);
  eachTap(g, (yi, xi, wi) => {
    dx[xi]! += dy[yi]! * w[wi]!;
    dw[wi]! += dy[yi]! * x[xi]!;
  });
  for (let i = 0; i < dy.length; i++) db[Math.floor(i / (g.OH * g.OW)) % g.Cout]! += dy[i]!;
  return { dx, dw, db };
};

// ---- GPU runs -----------------------------------------------------------------------------------------------------

interface Case {
  readonly name: string;
  readonly x: readonly [number, number, number, number];
  readonly w: readonly [number, number, number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly bias: boolean;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Forward, backward-input and backward-weight of one case on the GPU, with the data they were given. */
const runCase = (c: Case, seed: number) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const g = geometryOf(c.x, c.w, c.stride, c.padding);
    const yShape = [g.N, g.Cout, g.OH, g.OW];
    const opts: Conv2dOptions = { stride: c.stride, padding: c.padding };
    const data = {
      x: randoms(numel(c.x), seed),
      w: randoms(numel(c.w), seed + 1),
      b: randoms(g.Cout, seed + 2),
      dy: randoms(numel(yShape), seed + 3),
    };
    const x = gpu.upload(data.x, "f32", c.x, "x");
    const w = gpu.upload(data.w, "f32", c.w, "w");
    const bias = c.bias ? gpu.upload(data.b, "f32", [g.Cout], "bias") : undefined;
    const dy = gpu.upload(data.dy, "f32", yShape, "dy");
    const y = gpu.tensor(yShape, "f32", "y");
    const dx = gpu.tensor(c.x, "f32", "dx");
    const dw = gpu.tensor(c.w, "f32", "dw");
    const db = c.bias ? gpu.tensor([g.Cout], "f32", "db") : undefined;
    // Outputs start non-zero, so that a kernel that accumulates instead of overwriting fails.
    for (const t of [y, dx, dw, ...(db ? [db] : [])]) gpu.write(t, new Float32Array(t.size).fill(7));
    yield* runDispatches([
      yield* conv2d(x, w, bias, y, opts),
      yield* conv2dBackwardInput(dy, w, dx, opts),
      yield* conv2dBackwardWeight(x, dy, dw, db, opts),
    ]);
    return {
      g,
      data,
      y: yield* read(y),
      dx: yield* read(dx),
      dw: yield* read(dw),
      db: db ? yield* read(db) : undefined,
    };
  });

// f32 sums of n products of numbers in [-1, 1] against float64: the result is of order sqrt(n) and f32 rounding
// adds about eps·sqrt(n) per partial sum, so atol = 1e-6·n (n the number of terms) has a wide margin while a wrong
// tap or channel (an error of order 1) fails.
const tolerance = (terms: number) => ({ atol: 1e-6 * terms + 1e-6, rtol: 1e-5 });

const cases: Case[] = [
  { name: "odd sizes, 3x3 s1 p1, bias", x: [2, 3, 7, 9], w: [5, 3, 3, 3], stride: [1, 1], padding: [1, 1], bias: true },
  { name: "3x3 s2 p1 on odd input", x: [3, 4, 9, 7], w: [17, 4, 3, 3], stride: [2, 2], padding: [1, 1], bias: false },
  { name: "1x1 s2 (downsample)", x: [2, 20, 7, 8], w: [18, 20, 1, 1], stride: [2, 2], padding: [0, 0], bias: false },
  { name: "batch 1, Cin 1, Cout 33", x: [1, 1, 11, 13], w: [33, 1, 3, 3], stride: [1, 1], padding: [1, 1], bias: true },
  { name: "7x7 s2 p3 (stem)", x: [2, 3, 15, 17], w: [8, 3, 7, 7], stride: [2, 2], padding: [3, 3], bias: false },
  {
    name: "3x5, stride [2,1], pad [0,2]",
    x: [2, 5, 8, 6],
    w: [7, 5, 3, 5],
    stride: [2, 1],
    padding: [0, 2],
    bias: true,
  },
  {
    name: "2x2 s3 (taps missing rows)",
    x: [2, 3, 10, 11],
    w: [4, 3, 2, 2],
    stride: [3, 3],
    padding: [1, 0],
    bias: true,
  },
  {
    name: "1x1 p1 (padding-only border)",
    x: [1, 2, 3, 4],
    w: [3, 2, 1, 1],
    stride: [1, 1],
    padding: [1, 1],
    bias: true,
  },
  // Over 512 output pixels (several pixel blocks, the last partial), Cin·9 not a multiple of 8, two channel blocks.
  { name: "several blocks", x: [3, 37, 14, 14], w: [20, 37, 3, 3], stride: [1, 1], padding: [1, 1], bias: false },
  // 1000 output pixels: the weight gradient splits them into 3 uneven chunks; Cin 9 leaves one channel in a group.
  {
    name: "weight gradient in chunks",
    x: [5, 9, 10, 20],
    w: [6, 9, 3, 3],
    stride: [1, 1],
    padding: [1, 1],
    bias: true,
  },
  { name: "stride 2, one phase empty", x: [2, 6, 1, 5], w: [5, 6, 1, 3], stride: [2, 2], padding: [0, 1], bias: false },
  // Cin < 4 (the first layer's weight gradient): 2,697 pixels in 2 uneven chunks, a lane's pixel carried across rows
  // (64 pixels = 2 rows + 2 columns of 31); then 2,250 pixels of 3x5 images (64 pixels = 4 images + 4 columns).
  { name: "Cin 1, pixel chunks", x: [3, 1, 29, 31], w: [20, 1, 3, 3], stride: [1, 1], padding: [1, 1], bias: false },
  { name: "Cin 2, small images", x: [150, 2, 3, 5], w: [5, 2, 3, 3], stride: [1, 1], padding: [1, 1], bias: true },
];

cases.forEach((c, i) => {
  gpuTest(
    `conv2d forward and backwards vs CPU: ${c.name}`,
    Effect.gen(function* () {
      const r = yield* runCase(c, 100 * i + 1);
      const { g, data } = r;
      const ref = cpuBackward(g, data.x, data.w, data.dy);
      assertClose(r.y, cpuForward(g, data.x, data.w, c.bias ? data.b : undefined), {
        ...tolerance(g.Cin * g.KH * g.KW),
        what: "y",
      });
      assertClose(r.dx, ref.dx, { ...tolerance(g.Cout * g.KH * g.KW), what: "dx" });
      assertClose(r.dw, ref.dw, { ...tolerance(g.N * g.OH * g.OW), what: "dw" });
      if (r.db) assertClose(r.db, ref.db, { ...tolerance(g.N * g.OH * g.OW), what: "dbias" });
    }),
  );
});

// ---- finite differences ----------------------------------------------------------------------------------------
//
// L = Σ dy ⊙ conv2d(x, w, b) in float64 on tiny shapes. L is linear in each of x, w and b, so central differences
// are exact up to float64 rounding (~1e-12 here): the GPU's f32 analytic gradients must match to 1e-5.

const finiteDifferences = (
  g: ConvGeometry,
  v: { x: Float64Array; w: Float64Array; b: Float64Array },
  dy: Float32Array,
) => {
  const loss = () => cpuForward(g, v.x, v.w, v.b).reduce((s, y, i) => s + y * dy[i]!, 0);
  const h = 1e-3;
  const grad = (t: Float64Array) =>
    Array.from(t, (_, i) => {
      const keep = t[i]!;
      t[i] = keep + h;
      const up = loss();
      t[i] = keep - h;
      const down = loss();
      t[i] = keep;
      return (up - down) / (2 * h);
    });
  return { dx: grad(v.x), dw: grad(v.w), db: grad(v.b) };
};

const tiny: Case[] = [
  { name: "3x3 s2 p1", x: [2, 2, 5, 4], w: [3, 2, 3, 3], stride: [2, 2], padding: [1, 1], bias: true },
  { name: "1x1 s2", x: [2, 3, 5, 5], w: [2, 3, 1, 1], stride: [2, 2], padding: [0, 0], bias: true },
  // Cin >= 4 takes the other weight-gradient kernel (8 input channels per lane), Cin 5 leaves 3 of them idle.
  { name: "3x3 s1 p1, Cin 5", x: [2, 5, 4, 5], w: [3, 5, 3, 3], stride: [1, 1], padding: [1, 1], bias: true },
  {
    name: "2x3, stride [1,2], pad [1,0]",
    x: [1, 2, 4, 7],
    w: [3, 2, 2, 3],
    stride: [1, 2],
    padding: [1, 0],
    bias: true,
  },
];

tiny.forEach((c, i) => {
  gpuTest(
    `conv2d backwards vs central finite differences: ${c.name}`,
    Effect.gen(function* () {
      const r = yield* runCase(c, 7000 + i);
      const v = { x: Float64Array.from(r.data.x), w: Float64Array.from(r.data.w), b: Float64Array.from(r.data.b) };
      const fd = finiteDifferences(r.g, v, r.data.dy);
      assertClose(r.dx, fd.dx, { atol: 1e-5, rtol: 1e-5, what: "dx" });
      assertClose(r.dw, fd.dw, { atol: 1e-5, rtol: 1e-5, what: "dw" });
      assertClose(r.db!, fd.db, { atol: 1e-5, rtol: 1e-5, what: "dbias" });
    }),
  );
});

gpuTest(
  "conv2d is deterministic: the same inputs give the same bits",
  Effect.gen(function* () {
    const c = cases[8]!;
    const a = yield* runCase(c, 5);
    const b = yield* runCase(c, 5);
    assert.deepEqual(a.y, b.y);
    assert.deepEqual(a.dx, b.dx);
    assert.deepEqual(a.dw, b.dw);
  }),
);

// ---- shape errors ----------------------------------------------------------------------------------------------

gpuTest(
  "conv2d shape errors are typed and name the op and the shapes",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const t = (shape: number[], label = "t") => gpu.tensor(shape, "f32", label);
    const x = t([2, 3, 8, 8], "x");
    const w = t([4, 3, 3, 3], "w");
    const y = t([2, 4, 8, 8], "y");
    const expectShapeError = function* (
      effect: Effect.Effect<unknown, { readonly _tag: string; readonly message: string }, Gpu>,
      pattern: RegExp,
    ) {
      const e = yield* Effect.flip(effect);
      assert.equal(e._tag, "ShapeError");
      assert.match(e.message, pattern);
    };
    const p1 = { padding: 1 };
    yield* expectShapeError(
      conv2d(x, t([4, 2, 3, 3]), undefined, y, p1),
      /conv2d: .*input channels.*\[Cout, 3, KH, KW\]/,
    );
    yield* expectShapeError(
      conv2d(x, w, undefined, t([2, 4, 6, 6]), p1),
      /conv2d: output .* must be f32 \[2, 4, 8, 8\]/,
    );
    yield* expectShapeError(conv2d(x, w, undefined, y, { padding: 1, stride: 2 }), /\[2, 4, 4, 4\]/);
    yield* expectShapeError(conv2d(x, w, t([5]), y, p1), /bias .* must be f32 \[4\]/);
    yield* expectShapeError(conv2d(x, t([4, 3, 9, 9]), undefined, y), /does not fit/);
    yield* expectShapeError(conv2d(x, w, undefined, y, { stride: 0 }), /stride/);
    yield* expectShapeError(conv2d(x, w, undefined, y, { padding: -1 }), /padding/);
    yield* expectShapeError(conv2d(t([2, 3, 8]), w, undefined, y), /4-D/);
    // Two views of one buffer: WebGPU cannot bind them read-only and read-write in one dispatch.
    const shared = t([2 * 4 * 8 * 8 + 512], "shared");
    const yView = new Tensor(shared.buffer, [2, 4, 8, 8], "f32", 2048);
    yield* expectShapeError(
      conv2d(new Tensor(shared.buffer, [2, 3, 8, 8], "f32"), w, undefined, yView, p1),
      /shares a buffer/,
    );
    yield* expectShapeError(conv2dBackwardInput(t([2, 4, 7, 7]), w, x, p1), /conv2dBackwardInput: output gradient/);
    yield* expectShapeError(
      conv2dBackwardWeight(x, y, t([4, 3, 3, 3]), t([3]), p1),
      /conv2dBackwardWeight: bias gradient/,
    );
    yield* expectShapeError(conv2dBackwardWeight(x, y, t([4, 2, 3, 3]), undefined, p1), /input channels/);
  }),
);
