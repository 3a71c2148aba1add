import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu, type GpuContext } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { Tensor } from "../../src/gpu/tensor.ts";
import { emaUpdate, sgdStep } from "../../src/ops/optim.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

// Tolerances. The GPU updates in f32, the references in float64, over 5 steps. Each step rounds a handful of times
// (half an ulp each) and carries the earlier errors along with factors <= 1 + lr·wd, so the drift stays within a few
// ulps of the largest magnitude involved; we allow 8 ulps (8·2^-23 relative to max |reference|).
const ULP = 2 ** -23;
const within = (expected: ArrayLike<number>, what: string) => ({
  atol: 8 * ULP * Math.max(...Array.from(expected, Math.abs)),
  rtol: 0,
  what,
});

/** `n` floats at element offset 64·slot of a flat buffer, as a model's parameter views are laid out. */
const view = (buffer: Tensor, slot: number, n: number) => new Tensor(buffer.buffer, [n], "f32", slot * 256);

const flat = (gpu: GpuContext, n: number, label: string) => gpu.tensor([64 + Math.ceil(n / 64) * 64], "f32", label);

/** PyTorch's SGD step in float64, in place on p and buf. */
const sgdRef = (p: number[], g: ArrayLike<number>, buf: number[], lr: number, momentum: number, wd: number) => {
  for (let i = 0; i < p.length; i++) {
    const d = g[i]! + wd * p[i]!;
    buf[i] = momentum * buf[i]! + d;
    p[i] = p[i]! - lr * buf[i]!;
  }
};

const lrs = [0.1, 0.03, 0.03, 0.003, 0.0003]; // changed every step, as a schedule changes it every epoch

for (const n of [1, 7, 64, 1000, 4099]) {
  gpuTest(
    `sgd step with momentum and weight decay equals float64 PyTorch SGD over 5 steps of changing lr, n = ${n}`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const momentum = 0.9, weightDecay = 0.05;
      // parameters, gradients and momentum as views one slot into their flat buffers
      const params = view(flat(gpu, n, "params"), 1, n);
      const grads = view(flat(gpu, n, "grads"), 1, n);
      const buffer = view(flat(gpu, n, "momentum"), 1, n);
      const p = Array.from(randoms(n, n, -1, 1));
      gpu.write(params, Float32Array.from(p));
      const buf = new Array<number>(n).fill(0);
      const step = yield* sgdStep(params, grads, buffer, { lr: lrs[0]!, momentum, weightDecay });
      for (const [k, lr] of lrs.entries()) {
        const g = randoms(n, 100 * n + k, -1, 1);
        gpu.write(grads, g);
        step.setHyperparameters({ lr });
        yield* runDispatches([step]);
        sgdRef(p, g, buf, lr, momentum, weightDecay);
        // PyTorch's first step sets the buffer to g itself (here g + wd·p): the zero start must give just that
        if (k === 0) assertClose(yield* read(buffer), buf, within(buf, "first-step momentum buffer"));
      }
      assertClose(yield* read(params), p, within(p, "params"));
      assertClose(yield* read(buffer), buf, within(buf, "momentum buffer"));
    }),
  );
}

gpuTest(
  "sgd without momentum or weight decay is p −= lr·grad; setHyperparameters switches momentum on later",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const n = 13;
    const params = gpu.upload(randoms(n, 1), "f32", [n], "params");
    const grads = gpu.tensor([n], "f32", "grads");
    const buffer = gpu.tensor([n], "f32", "momentum");
    const p = Array.from(randoms(n, 1)), buf = new Array<number>(n).fill(0);
    const step = yield* sgdStep(params, grads, buffer, { lr: 0.5, momentum: 0, weightDecay: 0 });
    for (let k = 0; k < 4; k++) {
      if (k === 2) step.setHyperparameters({ momentum: 0.9, weightDecay: 1e-4 }); // lr stays 0.5
      const g = randoms(n, 50 + k);
      gpu.write(grads, g);
      yield* runDispatches([step]);
      sgdRef(p, g, buf, 0.5, k < 2 ? 0 : 0.9, k < 2 ? 0 : 1e-4);
      assertClose(yield* read(params), p, within(p, `params after step ${k}`));
    }
  }),
);

/** MoCo's momentum update in float64: θk ← θk·m + θq·(1 − m). */
const emaRef = (k: number[], q: ArrayLike<number>, m: number) => {
  for (let i = 0; i < k.length; i++) k[i] = k[i]! * m + q[i]! * (1 - m);
};

for (const n of [1, 6, 64, 1001]) {
  gpuTest(
    `momentum encoder update equals float64 over 5 steps, m changed midway, key and query in one buffer, n = ${n}`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      // both encoders as views of one buffer: allowed (the query side is bound read_write too)
      const both = gpu.tensor([2 * (64 + Math.ceil(n / 64) * 64)], "f32", "encoders");
      const keyParams = view(both, 0, n);
      const queryParams = view(both, 1 + Math.ceil(n / 64), n);
      const k = Array.from(randoms(n, 3 * n, -1, 1));
      gpu.write(keyParams, Float32Array.from(k));
      const update = yield* emaUpdate(keyParams, queryParams, 0.999);
      for (let step = 0; step < 5; step++) {
        const m = step < 3 ? 0.999 : 0.5;
        if (step === 3) update.setMomentum(m);
        const q = randoms(n, 7 * n + step, -1, 1); // the query encoder moves between updates
        gpu.write(queryParams, q);
        yield* runDispatches([update]);
        emaRef(k, q, m);
      }
      assertClose(yield* read(keyParams), k, within(k, "key params"));
    }),
  );
}

gpuTest(
  "sgd and the momentum update reject mismatched sizes and illegal sharing with a ShapeError",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const a = gpu.tensor([8], "f32", "a"), b = gpu.tensor([8], "f32", "b"), short = gpu.tensor([7], "f32", "short");
    const hyper = { lr: 0.1, momentum: 0.9, weightDecay: 0 };
    const fails = function* (
      what: RegExp,
      op: Effect.Effect<unknown, { readonly _tag: string; readonly message: string }, Gpu>,
    ) {
      const error = yield* Effect.flip(op);
      assert.equal(error._tag, "ShapeError");
      assert.match(error.message, what);
    };
    yield* fails(/sizes differ/, sgdStep(a, b, short, hyper));
    yield* fails(/must not share a buffer/, sgdStep(a, a, b, hyper));
    yield* fails(/overlap/, sgdStep(a, b, a, hyper));
    yield* fails(/sizes differ/, emaUpdate(a, short, 0.99));
    const both = gpu.tensor([16], "f32", "both");
    yield* fails(
      /overlap/,
      emaUpdate(new Tensor(both.buffer, [12], "f32", 0), new Tensor(both.buffer, [12], "f32", 16), 0.99),
    );
  }),
);
