import { Effect } from "effect";
import { type ShapeError, shapeError } from "../gpu/errors.ts";
import { alloc, type Dispatch } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { batchNormBackward, batchNormEval, batchNormTrain } from "../ops/batchnorm.ts";
import { conv2d, conv2dBackwardInput, conv2dBackwardWeight, convOutputSize } from "../ops/conv2d.ts";
import { relu as reluOp, reluBackward } from "../ops/elementwise.ts";
import { l2normalize, l2normalizeBackward } from "../ops/l2norm.ts";
import { matmul } from "../ops/matmul.ts";
import { globalAvgPool, globalAvgPoolBackward, maxPool2d, maxPool2dBackward } from "../ops/pool.ts";
import { sum } from "../ops/reduce.ts";
import type { BindOptions, Module } from "./module.ts";
import type { ParamBuilder, Slot } from "./params.ts";

/** The output and, when training, its gradient: what every module allocates for itself. */
const outputs = Effect.fnUntraced(function* (name: string, shape: readonly number[], opts: BindOptions) {
  const y = yield* alloc(shape, "f32", `${name}.y`);
  const dy = opts.grad ? yield* alloc(shape, "f32", `${name}.dy`) : undefined;
  return { y, dy };
});

const rankError = (kernel: string, shape: readonly number[], rank: number) =>
  shape.length !== rank ? shapeError(kernel, `expects a ${rank}-D input, got [${shape}]`) : undefined;

/** `shape`, or the failure `bad` when there is one: how every `outputShape` ends. */
const shapeOr = (bad: ShapeError | undefined, shape: () => readonly number[]) =>
  bad !== undefined ? Effect.fail(bad) : Effect.succeed(shape());

/** [N, C, OH, OW] for a window of `k` over [N, C, H, W], or a ShapeError when the window does not fit. */
const windowed = (
  kernel: string,
  s: readonly number[],
  channels: number,
  k: number,
  stride: number,
  padding: number,
) => {
  const [oh, ow] = [convOutputSize(s[2], k, stride, padding), convOutputSize(s[3], k, stride, padding)];
  return shapeOr(
    oh < 1 || ow < 1 ? shapeError(kernel, `a ${k}x${k} window with padding ${padding} does not fit [${s}]`) : undefined,
    () => [s[0], channels, oh, ow],
  );
};

/**
 * How convolution weights start: `kaiming-normal-fan-out` is torchvision's ResNet init, N(0, 2 / (out·k²));
 * `uniform-fan-in` is `nn.Conv2d`'s own (`kaiming_uniform_(a=√5)`), U(±1/√(in·k²)): smaller weights, and with BN
 * after the convolution a larger effective learning rate.
 */
export type ConvInit = "kaiming-normal-fan-out" | "uniform-fan-in";

export interface Conv2dOptions {
  readonly kernel: number;
  readonly stride?: number;
  readonly padding?: number;
  readonly bias?: boolean;
  /** Default `kaiming-normal-fan-out`. */
  readonly init?: ConvInit | undefined;
}

/** 2-D convolution, NCHW; weights `[out, in, k, k]` drawn as `o.init` says; a bias as `nn.Conv2d`'s. */
export const conv2dLayer = (p: ParamBuilder, inChannels: number, outChannels: number, o: Conv2dOptions): Module => {
  const { kernel: k, stride = 1, padding = 0 } = o;
  const bound = 1 / Math.sqrt(inChannels * k * k);
  const weight = p.param(
    "weight",
    [outChannels, inChannels, k, k],
    o.init === "uniform-fan-in"
      ? { kind: "uniform", bound }
      : { kind: "normal", std: Math.sqrt(2 / (outChannels * k * k)) },
  );
  const bias = o.bias ? p.param("bias", [outChannels], { kind: "uniform", bound }) : undefined;
  const conv = { stride, padding };
  const outputShape = (s: readonly number[]) => {
    const bad = rankError("conv2d", s, 4) ??
      (s[1] !== inChannels ? shapeError("conv2d", `expects ${inChannels} input channels, got [${s}]`) : undefined);
    return bad !== undefined ? Effect.fail(bad) : windowed("conv2d", s, outChannels, k, stride, padding);
  };
  return {
    outputShape,
    flops: (s) => Effect.map(outputShape(s), ([n, , oh, ow]) => 2 * n * outChannels * oh * ow * inChannels * k * k),
    bind: Effect.fnUntraced(function* (x, dx, opts) {
      const { y, dy } = yield* outputs("conv2d", yield* outputShape(x.shape), opts);
      const forward = [yield* conv2d(x, weight.value, bias?.value, y, conv)];
      const backward: Dispatch[] = [];
      if (dy !== undefined) {
        backward.push(yield* conv2dBackwardWeight(x, dy, weight.grad, bias?.grad, conv));
        if (dx !== undefined) backward.push(yield* conv2dBackwardInput(dy, weight.value, dx, conv));
      }
      return { y, dy, forward, backward };
    }),
  };
};

/** Batch normalisation over (N, H, W) per channel for 4-D inputs, over N for 2-D ones; PyTorch's defaults. */
export const batchNorm = (p: ParamBuilder, channels: number): Module => {
  const gamma = p.param("weight", [channels], { kind: "constant", value: 1 });
  const beta = p.param("bias", [channels], { kind: "constant", value: 0 });
  const running = {
    mean: p.buffer("running_mean", [channels], { kind: "constant", value: 0 }),
    variance: p.buffer("running_var", [channels], { kind: "constant", value: 1 }),
  };
  return {
    outputShape: (s) =>
      shapeOr(
        (s.length !== 2 && s.length !== 4) || s[1] !== channels
          ? shapeError("batchNorm", `expects [N, ${channels}] or [N, ${channels}, H, W], got [${s}]`)
          : undefined,
        () => s,
      ),
    bind: Effect.fnUntraced(function* (x, dx, opts) {
      const { y, dy } = yield* outputs("batchNorm", x.shape, opts);
      const affine = { gamma: gamma.value, beta: beta.value };
      const stats = { mean: running.mean.value, variance: running.variance.value };
      if (!opts.train) return { y, dy, forward: [yield* batchNormEval(x, y, affine, stats)], backward: [] };
      const groups = opts.bnGroups ?? 1;
      const saved = {
        mean: yield* alloc([groups * channels], "f32", "batchNorm.savedMean"),
        invStd: yield* alloc([groups * channels], "f32", "batchNorm.savedInvStd"),
      };
      const forward = [yield* batchNormTrain(x, y, affine, stats, saved, { groups })];
      if (dy === undefined) return { y, dy, forward, backward: [] };
      if (dx === undefined) return yield* shapeError("batchNorm", "needs an input gradient buffer when training");
      const grads = { gamma: gamma.grad, beta: beta.grad };
      return { y, dy, forward, backward: [yield* batchNormBackward(x, dy, dx, gamma.value, saved, grads, { groups })] };
    }),
  };
};

/** y = x·Wᵀ + b with PyTorch's `nn.Linear` layout and default initialisation (uniform ±1/√in). */
export const linear = (p: ParamBuilder, inFeatures: number, outFeatures: number, withBias = true): Module => {
  const bound = 1 / Math.sqrt(inFeatures);
  const weight = p.param("weight", [outFeatures, inFeatures], { kind: "uniform", bound });
  const bias: Slot | undefined = withBias ? p.param("bias", [outFeatures], { kind: "uniform", bound }) : undefined;
  const outputShape = (s: readonly number[]) =>
    shapeOr(
      s.length !== 2 || s[1] !== inFeatures
        ? shapeError("linear", `expects [N, ${inFeatures}], got [${s}]`)
        : undefined,
      () => [s[0], outFeatures],
    );
  return {
    outputShape,
    flops: (s) => Effect.map(outputShape(s), ([n]) => 2 * n * inFeatures * outFeatures),
    bind: Effect.fnUntraced(function* (x, dx, opts) {
      const { y, dy } = yield* outputs("linear", yield* outputShape(x.shape), opts);
      const forward = [yield* matmul(x, weight.value, y, { transB: true, ...(bias ? { bias: bias.value } : {}) })];
      const backward: Dispatch[] = [];
      if (dy !== undefined) {
        backward.push(yield* matmul(dy, x, weight.grad, { transA: true }));
        if (bias !== undefined) backward.push(yield* sum(dy, 0, bias.grad));
        if (dx !== undefined) backward.push(yield* matmul(dy, weight.value, dx));
      }
      return { y, dy, forward, backward };
    }),
  };
};

/** Elementwise max(x, 0). */
export const relu: Module = {
  outputShape: Effect.succeed,
  bind: Effect.fnUntraced(function* (x, dx, opts) {
    const { y, dy } = yield* outputs("relu", x.shape, opts);
    const backward = dy !== undefined && dx !== undefined ? [yield* reluBackward(x, dy, dx)] : [];
    return { y, dy, forward: [yield* reluOp(x, y)], backward };
  }),
};

/** Row-wise L2 normalisation: the encoders' output lies on the unit sphere. */
export const l2Normalize: Module = {
  outputShape: (s) =>
    shapeOr(s.length !== 2 ? shapeError("l2Normalize", `expects [N, d], got [${s}]`) : undefined, () => s),
  bind: Effect.fnUntraced(function* (x, dx, opts) {
    const { y, dy } = yield* outputs("l2Normalize", x.shape, opts);
    const backward = dy !== undefined && dx !== undefined ? [yield* l2normalizeBackward(x, y, dy, dx)] : [];
    return { y, dy, forward: [yield* l2normalize(x, y)], backward };
  }),
};

/** Mean over H and W: [N, C, H, W] to [N, C]. */
export const globalAvgPoolLayer: Module = {
  outputShape: (s) => shapeOr(rankError("globalAvgPool", s, 4), () => [s[0], s[1]]),
  bind: Effect.fnUntraced(function* (x, dx, opts) {
    const { y, dy } = yield* outputs("globalAvgPool", [x.shape[0], x.shape[1]], opts);
    const backward = dy !== undefined && dx !== undefined ? [yield* globalAvgPoolBackward(dy, dx)] : [];
    return { y, dy, forward: [yield* globalAvgPool(x, y)], backward };
  }),
};

/** Max pooling with a square window (the ResNet ImageNet stem: 3x3, stride 2, padding 1). */
export const maxPool = (kernel: number, stride: number, padding: number): Module => {
  const outputShape = (s: readonly number[]) => {
    const bad = rankError("maxPool2d", s, 4);
    return bad !== undefined ? Effect.fail(bad) : windowed("maxPool2d", s, s[1], kernel, stride, padding);
  };
  return {
    outputShape,
    bind: Effect.fnUntraced(function* (x, dx, opts) {
      const shape = yield* outputShape(x.shape);
      const { y, dy } = yield* outputs("maxPool2d", shape, opts);
      const indices = yield* alloc(shape, "u32", "maxPool2d.indices");
      const pool = { kernel, stride, padding };
      const forward = [yield* maxPool2d(x, y, indices, pool)];
      const backward = dy !== undefined && dx !== undefined ? [yield* maxPool2dBackward(dy, indices, dx, pool)] : [];
      return { y, dy, forward, backward };
    }),
  };
};

/** A module's output shape for `x`, or a ShapeError for a shape it cannot take (`m.outputShape(x.shape)`). */
export const shapeOf = (m: Module, x: Tensor): Effect.Effect<readonly number[], ShapeError> => m.outputShape(x.shape);
