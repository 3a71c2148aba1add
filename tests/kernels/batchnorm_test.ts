import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu, type GpuContext } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { Tensor } from "../../src/gpu/tensor.ts";
import {
  type BatchNormAffine,
  batchNormBackward,
  batchNormEval,
  type BatchNormRunning,
  type BatchNormSaved,
  batchNormTrain,
} from "../../src/ops/batchnorm.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

// Tolerances. The GPU works in f32 against float64 references. A statistic here sums at most ~500 values of
// magnitude <= 4 in order (in blocks, then across blocks): relative error ~sqrt(m)·2^-24, observed <= 3e-6 with 459
// values in one block, and y = (x − mean)·invstd·gamma + beta inherits it: atol = rtol = 1e-5 leaves a margin of 3x.
// dx cancels three terms of size |dy|·invstd·|gamma|: atol 1e-5 times that scale. dgamma and dbeta sum up to ~500
// products of magnitude <= ~3: rtol 1e-5 and atol 1e-5·m.
// The float64 CPU backward is checked against central differences of the float64 CPU forward (h = 1e-5: truncation
// error ~h²·|third derivative| ~ 1e-10, rounding ~1e-16·|loss| / h ~ 1e-11), so 1e-7 tests the formula itself.

const EPS = 1e-5;
const MOMENTUM = 0.1;

interface Shape {
  readonly n: number;
  readonly c: number;
  readonly hw: number;
  readonly dims: readonly number[];
}

const shapeOf = (dims: readonly number[]): Shape => ({
  n: dims[0]!,
  c: dims[1]!,
  hw: dims.slice(2).reduce((a, b) => a * b, 1),
  dims,
});

const at = ({ c, hw }: Shape, n: number, ch: number, h: number) => (n * c + ch) * hw + h;

interface Forward {
  readonly y: number[];
  readonly mean: number[]; // [G, C]
  readonly invStd: number[]; // [G, C]
  readonly runningMean: number[];
  readonly runningVar: number[];
}

/** PyTorch's BatchNorm training forward in float64, with split-batch statistics over G contiguous sub-batches. */
const forwardRef = (
  s: Shape,
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  runningMean: ArrayLike<number>,
  runningVar: ArrayLike<number>,
  groups: number,
): Forward => {
  const per = s.n / groups, m = per * s.hw;
  const y = new Array<number>(s.n * s.c * s.hw).fill(0);
  const mean: number[] = [], invStd: number[] = [];
  const rm = Array.from(runningMean), rv = Array.from(runningVar);
  const meanSum = new Array<number>(s.c).fill(0), varSum = new Array<number>(s.c).fill(0);
  for (let g = 0; g < groups; g++) {
    for (let ch = 0; ch < s.c; ch++) {
      let sum = 0;
      for (let n = g * per; n < (g + 1) * per; n++) for (let h = 0; h < s.hw; h++) sum += x[at(s, n, ch, h)]!;
      const mu = sum / m;
      let sq = 0;
      for (let n = g * per; n < (g + 1) * per; n++) {
        for (let h = 0; h < s.hw; h++) sq += (x[at(s, n, ch, h)]! - mu) ** 2;
      }
      const is = 1 / Math.sqrt(sq / m + EPS);
      for (let n = g * per; n < (g + 1) * per; n++) {
        for (let h = 0; h < s.hw; h++) {
          const i = at(s, n, ch, h);
          y[i] = (x[i]! - mu) * is * gamma[ch]! + beta[ch]!;
        }
      }
      mean[g * s.c + ch] = mu;
      invStd[g * s.c + ch] = is;
      meanSum[ch]! += mu;
      varSum[ch]! += sq / (m - 1);
    }
  }
  for (let ch = 0; ch < s.c; ch++) {
    rm[ch] = (1 - MOMENTUM) * rm[ch]! + MOMENTUM * meanSum[ch]! / groups;
    rv[ch] = (1 - MOMENTUM) * rv[ch]! + MOMENTUM * varSum[ch]! / groups;
  }
  return { y, mean, invStd, runningMean: rm, runningVar: rv };
};

const evalRef = (s: Shape, x: ArrayLike<number>, aff: Affine, rm: ArrayLike<number>, rv: ArrayLike<number>) =>
  Array.from(x, (v, i) => {
    const ch = Math.floor(i / s.hw) % s.c;
    return (v - rm[ch]!) / Math.sqrt(rv[ch]! + EPS) * aff.gamma[ch]! + aff.beta[ch]!;
  });

interface Backward {
  readonly dx: number[];
  readonly dgamma: number[];
  readonly dbeta: number[];
}

/** The analytic backward in float64, per group, from the statistics of `forwardRef`. */
const backwardRef = (
  s: Shape,
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  gamma: ArrayLike<number>,
  fwd: Forward,
  groups: number,
): Backward => {
  const per = s.n / groups, m = per * s.hw;
  const dx = new Array<number>(x.length).fill(0);
  const dgamma = new Array<number>(s.c).fill(0), dbeta = new Array<number>(s.c).fill(0);
  for (let g = 0; g < groups; g++) {
    for (let ch = 0; ch < s.c; ch++) {
      const mu = fwd.mean[g * s.c + ch]!, is = fwd.invStd[g * s.c + ch]!;
      let sumDy = 0, sumDyXhat = 0;
      for (let n = g * per; n < (g + 1) * per; n++) {
        for (let h = 0; h < s.hw; h++) {
          const i = at(s, n, ch, h);
          sumDy += dy[i]!;
          sumDyXhat += dy[i]! * (x[i]! - mu) * is;
        }
      }
      for (let n = g * per; n < (g + 1) * per; n++) {
        for (let h = 0; h < s.hw; h++) {
          const i = at(s, n, ch, h);
          const xhat = (x[i]! - mu) * is;
          dx[i] = gamma[ch]! * is * (dy[i]! - sumDy / m - xhat * sumDyXhat / m);
        }
      }
      dbeta[ch]! += sumDy;
      dgamma[ch]! += sumDyXhat;
    }
  }
  return { dx, dgamma, dbeta };
};

interface Affine {
  readonly gamma: Float32Array<ArrayBuffer>;
  readonly beta: Float32Array<ArrayBuffer>;
}

/** Inputs with a channel-dependent offset and scale, so that mean and variance differ by channel. */
const inputs = (s: Shape, seed: number) => {
  const x = randoms(s.n * s.c * s.hw, seed, -1, 1);
  for (let i = 0; i < x.length; i++) {
    const ch = Math.floor(i / s.hw) % s.c;
    x[i] = x[i]! * (0.5 + ch % 3) + (ch % 4) - 1.5;
  }
  const affine: Affine = { gamma: randoms(s.c, seed + 1, 0.5, 1.5), beta: randoms(s.c, seed + 2, -0.5, 0.5) };
  return { x, affine, runningMean: randoms(s.c, seed + 3, -0.2, 0.2), runningVar: randoms(s.c, seed + 4, 0.5, 1.5) };
};

/** BN tensors laid out as the model will have them: parameters, statistics and gradients as views of flat buffers. */
const layout = (gpu: GpuContext, c: number, groups: number) => {
  const slot = Math.ceil(c / 64) * 64; // 256-byte aligned views
  const params = gpu.tensor([2 * slot], "f32", "params");
  const buffers = gpu.tensor([2 * slot], "f32", "buffers");
  const grads = gpu.tensor([2 * slot], "f32", "grads");
  const view = (t: Tensor, i: number, n = c) => new Tensor(t.buffer, [n], "f32", i * slot * 4);
  const affine: BatchNormAffine = { gamma: view(params, 0), beta: view(params, 1) };
  const running: BatchNormRunning = { mean: view(buffers, 0), variance: view(buffers, 1) };
  const saved: BatchNormSaved = {
    mean: gpu.tensor([groups, c], "f32", "saved mean"),
    invStd: gpu.tensor([groups, c], "f32", "saved invStd"),
  };
  return { affine, running, saved, dgamma: view(grads, 0), dbeta: view(grads, 1) };
};

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** Uploads `inputs` into the model-like layout: x, y, dy, dx and every BN tensor. */
const setup = (gpu: GpuContext, dims: readonly number[], groups: number, seed: number) => {
  const s = shapeOf(dims);
  const data = inputs(s, seed);
  const dyHost = randoms(data.x.length, seed + 5, -1, 1);
  const t = layout(gpu, s.c, groups);
  gpu.write(t.affine.gamma, data.affine.gamma);
  gpu.write(t.affine.beta, data.affine.beta);
  gpu.write(t.running.mean, data.runningMean);
  gpu.write(t.running.variance, data.runningVar);
  return {
    s,
    data,
    dyHost,
    ...t,
    x: gpu.upload(data.x, "f32", dims, "x"),
    dy: gpu.upload(dyHost, "f32", dims, "dy"),
    y: gpu.tensor(dims, "f32", "y"),
    dx: gpu.tensor(dims, "f32", "dx"),
  };
};

const TOL = { atol: 1e-5, rtol: 1e-5 };

const cases: ReadonlyArray<readonly [dims: number[], groups: number]> = [
  [[1, 3, 5, 7], 1], // N = 1, statistics over H·W only
  [[2, 4, 3, 3], 1],
  [[5, 1, 3, 5], 1], // C = 1, odd H and W
  [[3, 2, 17, 9], 1], // 153 floats per row
  [[3, 6], 1], // 1-D, N = 3
  [[4, 3, 5], 1], // 1-D over [N, C, L]
  [[8, 3, 3, 3], 2],
  [[8, 5], 4], // 1-D, two samples per group
  [[4, 2, 5, 5], 4], // one sample per group
  [[12, 3, 2, 3], 4],
];

for (const [dims, groups] of cases) {
  const per = dims[0]! / groups;
  // blocks of work: as chosen from the shape, one block per group, and 2 samples a block (a short last one if odd)
  for (const rowsPerBlock of new Set([undefined, per, Math.min(2, per)])) {
    const blocks = rowsPerBlock === undefined ? {} : { rowsPerBlock };
    gpuTest(
      `batchnorm train forward + backward match float64, [${dims}], groups ${groups}, ` +
        `${rowsPerBlock ?? "auto"} samples per block`,
      Effect.gen(function* () {
        const gpu = yield* Gpu;
        const t = setup(gpu, dims, groups, dims.reduce((a, b) => a * 7 + b, groups));
        const { s, data } = t;
        yield* runDispatches([
          yield* batchNormTrain(t.x, t.y, t.affine, t.running, t.saved, { groups, ...blocks }),
          yield* batchNormBackward(t.x, t.dy, t.dx, t.affine.gamma, t.saved, { gamma: t.dgamma, beta: t.dbeta }, {
            groups,
            ...blocks,
          }),
        ]);
        const { gamma, beta } = data.affine;
        const ref = forwardRef(s, data.x, gamma, beta, data.runningMean, data.runningVar, groups);
        assertClose(yield* read(t.y), ref.y, { ...TOL, what: "y" });
        assertClose(yield* read(t.saved.mean), ref.mean, { ...TOL, what: "saved mean" });
        assertClose(yield* read(t.saved.invStd), ref.invStd, { ...TOL, what: "saved invStd" });
        assertClose(yield* read(t.running.mean), ref.runningMean, { ...TOL, what: "running mean" });
        assertClose(yield* read(t.running.variance), ref.runningVar, { ...TOL, what: "running var" });
        const back = backwardRef(s, data.x, t.dyHost, gamma, ref, groups);
        const scale = maxAbs(ref.invStd) * maxAbs(gamma);
        assertClose(yield* read(t.dx), back.dx, { atol: 1e-5 * scale, rtol: 1e-5, what: "dx" });
        const m = per * s.hw;
        assertClose(yield* read(t.dgamma), back.dgamma, { atol: 1e-5 * m, rtol: 1e-5, what: "dgamma" });
        assertClose(yield* read(t.dbeta), back.dbeta, { atol: 1e-5 * m, rtol: 1e-5, what: "dbeta" });
      }),
    );
  }
}

/** loss = Σ dy·y of the float64 training forward, as a function of x, gamma, beta. */
const loss = (
  s: Shape,
  x: ArrayLike<number>,
  aff: Affine | { gamma: number[]; beta: number[] },
  dy: ArrayLike<number>,
  groups: number,
) => {
  const { y } = forwardRef(s, x, aff.gamma, aff.beta, new Array(s.c).fill(0), new Array(s.c).fill(1), groups);
  return y.reduce((acc, v, i) => acc + v * dy[i]!, 0);
};

/** Central differences of `f` at `v` along every coordinate, in float64. */
const numericGradient = (v: ArrayLike<number>, f: (w: number[]) => number, h = 1e-5) =>
  Array.from(v, (_, i) => {
    const plus = Array.from(v), minus = Array.from(v);
    plus[i]! += h;
    minus[i]! -= h;
    return (f(plus) - f(minus)) / (2 * h);
  });

for (const [dims, groups] of [[[2, 2, 2, 3], 1], [[4, 2, 3], 2], [[3, 2], 1], [[1, 2, 3, 1], 1]] as const) {
  gpuTest(
    `batchnorm backward matches central differences of the float64 forward, [${dims}], groups ${groups}`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const t = setup(gpu, dims, groups, 101 + dims.length);
      const { s, data, dyHost } = t;
      const gamma = Array.from(data.affine.gamma), beta = Array.from(data.affine.beta);
      const numeric = {
        dx: numericGradient(data.x, (w) => loss(s, w, { gamma, beta }, dyHost, groups)),
        dgamma: numericGradient(gamma, (w) => loss(s, data.x, { gamma: w, beta }, dyHost, groups)),
        dbeta: numericGradient(beta, (w) => loss(s, data.x, { gamma, beta: w }, dyHost, groups)),
      };
      // the float64 analytic backward is the formula under test: it must agree to rounding of the differences
      const ref = forwardRef(s, data.x, gamma, beta, data.runningMean, data.runningVar, groups);
      const analytic = backwardRef(s, data.x, dyHost, gamma, ref, groups);
      for (const k of ["dx", "dgamma", "dbeta"] as const) {
        assertClose(analytic[k], numeric[k], { atol: 1e-7, rtol: 1e-7, what: `float64 ${k}` });
      }
      yield* runDispatches([
        yield* batchNormTrain(t.x, t.y, t.affine, t.running, t.saved, { groups }),
        yield* batchNormBackward(t.x, t.dy, t.dx, t.affine.gamma, t.saved, { gamma: t.dgamma, beta: t.dbeta }, {
          groups,
        }),
      ]);
      const scale = maxAbs(ref.invStd) * maxAbs(gamma);
      assertClose(yield* read(t.dx), numeric.dx, { atol: 1e-5 * scale, rtol: 1e-5, what: "dx" });
      assertClose(yield* read(t.dgamma), numeric.dgamma, { ...TOL, what: "dgamma" });
      assertClose(yield* read(t.dbeta), numeric.dbeta, { ...TOL, what: "dbeta" });
    }),
  );
}

for (const [dims, groups] of [[[6, 3, 4, 5], 1], [[8, 4], 2], [[8, 2, 3, 3], 4]] as const) {
  gpuTest(
    `batchnorm running statistics after 5 training steps equal the reference, [${dims}], groups ${groups}`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const t = setup(gpu, dims, groups, 7);
      const { s, data } = t;
      const forward = yield* batchNormTrain(t.x, t.y, t.affine, t.running, t.saved, { groups });
      let rm: ArrayLike<number> = data.runningMean, rv: ArrayLike<number> = data.runningVar;
      for (let step = 0; step < 5; step++) {
        const x = inputs(s, 1000 + step).x.map((v) => v * (1 + step)); // a drifting input distribution
        gpu.write(t.x, x);
        yield* runDispatches([forward]);
        ({ runningMean: rm, runningVar: rv } = forwardRef(s, x, data.affine.gamma, data.affine.beta, rm, rv, groups));
      }
      assertClose(yield* read(t.running.mean), rm, { ...TOL, what: "running mean" });
      assertClose(yield* read(t.running.variance), rv, { ...TOL, what: "running var" });
    }),
  );
}

gpuTest(
  "batchnorm train normalises with batch statistics and ignores running ones; eval uses running ones, unchanged",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const dims = [4, 3, 2, 5];
    const t = setup(gpu, dims, 1, 55);
    const { s, data } = t;
    const train = yield* batchNormTrain(t.x, t.y, t.affine, t.running, t.saved);
    const yEval = gpu.tensor(dims, "f32", "y eval");
    const evaluate = yield* batchNormEval(t.x, yEval, t.affine, t.running);
    yield* runDispatches([train]);
    const yTrain = yield* read(t.y);
    // other running statistics: the training output must not move
    gpu.write(t.running.mean, randoms(s.c, 5, 3, 4));
    gpu.write(t.running.variance, randoms(s.c, 6, 5, 6));
    yield* runDispatches([train]);
    assert.deepEqual(yield* read(t.y), yTrain);
    const rm = yield* read(t.running.mean), rv = yield* read(t.running.variance);
    yield* runDispatches([evaluate]);
    assertClose(yield* read(yEval), evalRef(s, data.x, data.affine, rm, rv), { ...TOL, what: "eval y" });
    assert.deepEqual(yield* read(t.running.mean), rm);
    assert.deepEqual(yield* read(t.running.variance), rv);
    const batch = forwardRef(s, data.x, data.affine.gamma, data.affine.beta, rm, rv, 1).y;
    assertClose(yTrain, batch, { ...TOL, what: "train y" });
    assert.ok(Math.max(...Array.from(yield* read(yEval), (v, i) => Math.abs(v - batch[i]!))) > 0.1);
  }),
);

for (const dims of [[1, 3, 5, 7], [3, 6], [5, 1, 3, 5], [70, 3, 2, 2]]) {
  gpuTest(
    `batchnorm eval matches float64, [${dims}]`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const t = setup(gpu, dims, 1, 77);
      yield* runDispatches([yield* batchNormEval(t.x, t.y, t.affine, t.running)]);
      const ref = evalRef(t.s, t.data.x, t.data.affine, t.data.runningMean, t.data.runningVar);
      assertClose(yield* read(t.y), ref, { ...TOL, what: "eval y" });
    }),
  );
}

gpuTest(
  "batchnorm is deterministic: the same inputs give the same bits",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const dims = [16, 3, 6, 6];
    const t = setup(gpu, dims, 2, 9);
    const grads = { gamma: t.dgamma, beta: t.dbeta };
    const step = [
      yield* batchNormTrain(t.x, t.y, t.affine, t.running, t.saved, { groups: 2 }),
      yield* batchNormBackward(t.x, t.dy, t.dx, t.affine.gamma, t.saved, grads, { groups: 2 }),
    ];
    const outputs = function* () {
      gpu.write(t.running.mean, t.data.runningMean);
      gpu.write(t.running.variance, t.data.runningVar);
      yield* runDispatches(step);
      return [yield* read(t.y), yield* read(t.dx), yield* read(t.dgamma), yield* read(t.running.variance)];
    };
    assert.deepEqual(yield* outputs(), yield* outputs());
  }),
);

// llvmpipe silently cuts loops at 65535 iterations per invocation (see Tuning.loopLimit). The longest row the budget
// allows must still be right (this checks the op's iteration count), and one float more must be a ShapeError.
gpuTest(
  "batchnorm at the edge of llvmpipe's loop budget: right at the limit, a ShapeError past it",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    if (gpu.tuning.loopLimit === Number.POSITIVE_INFINITY) return; // no such limit on this adapter
    const dims = [2, 1, 32764];
    const t = setup(gpu, dims, 1, 3);
    const { s, data } = t;
    yield* runDispatches([
      yield* batchNormTrain(t.x, t.y, t.affine, t.running, t.saved),
      yield* batchNormBackward(t.x, t.dy, t.dx, t.affine.gamma, t.saved, { gamma: t.dgamma, beta: t.dbeta }),
    ]);
    const ref = forwardRef(s, data.x, data.affine.gamma, data.affine.beta, data.runningMean, data.runningVar, 1);
    // 65528 values per channel, summed in order by one invocation: error grows ~sqrt(m)·2^-24, tolerances 1e-4
    assertClose(yield* read(t.y), ref.y, { atol: 1e-4, rtol: 1e-4, what: "y" });
    const back = backwardRef(s, data.x, t.dyHost, data.affine.gamma, ref, 1);
    assertClose(yield* read(t.dx), back.dx, { atol: 1e-4 * maxAbs(ref.invStd), rtol: 1e-4, what: "dx" });
    assertClose(yield* read(t.dgamma), back.dgamma, { atol: 1e-2, rtol: 1e-4, what: "dgamma" });
    const past = gpu.tensor([2, 1, 32765], "f32", "past");
    const pastOut = gpu.tensor([2, 1, 32765], "f32", "past out");
    const error = yield* Effect.flip(batchNormTrain(past, pastOut, t.affine, t.running, t.saved));
    assert.equal(error._tag, "ShapeError");
    assert.match(error.message, /stops loops after 65535/);
  }),
);

gpuTest(
  "batchnorm rejects bad shapes and aliasing with a ShapeError naming them",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const t = setup(gpu, [4, 3, 2, 2], 1, 1);
    const grads = { gamma: t.dgamma, beta: t.dbeta };
    const fails = function* (
      what: RegExp,
      op: Effect.Effect<unknown, { readonly _tag: string; readonly message: string }, Gpu>,
    ) {
      const error = yield* Effect.flip(op);
      assert.equal(error._tag, "ShapeError");
      assert.match(error.message, what);
    };
    yield* fails(/groups = 3/, batchNormTrain(t.x, t.y, t.affine, t.running, t.saved, { groups: 3 }));
    const single = gpu.tensor([4, 3], "f32", "single");
    const singleOut = gpu.tensor([4, 3], "f32", "single out");
    yield* fails(
      /one value per channel/,
      batchNormTrain(single, singleOut, t.affine, t.running, t.saved, { groups: 4 }),
    );
    yield* fails(/must be f32 of/, batchNormTrain(t.x, single, t.affine, t.running, t.saved));
    yield* fails(/saved mean/, batchNormTrain(t.x, t.y, t.affine, t.running, t.saved, { groups: 2 }));
    const gamma4 = gpu.tensor([4], "f32", "gamma of 4");
    yield* fails(/gamma gamma of 4/, batchNormEval(t.x, t.y, { ...t.affine, gamma: gamma4 }, t.running));
    // y written into the buffer x is read from: WebGPU would reject the bind group
    const both = gpu.tensor([2, 48], "f32", "x and y");
    const x = new Tensor(both.buffer, [4, 3, 2, 2], "f32", 0);
    const y = new Tensor(both.buffer, [4, 3, 2, 2], "f32", 256);
    yield* fails(/share a buffer/, batchNormTrain(x, y, t.affine, t.running, t.saved));
    // dgamma overlapping dbeta
    yield* fails(
      /overlap/,
      batchNormBackward(t.x, t.dy, t.dx, t.affine.gamma, t.saved, { ...grads, beta: grads.gamma }),
    );
  }),
);
