/**
 * Linear probe: multinomial logistic regression (a linear layer + softmax cross-entropy) on frozen features, trained on
 * the GPU with mini-batch SGD as the official `eval_cls_imagenet.py` does (momentum 0.9, weight decay 0, ×0.1 at
 * 60% and 80% of the epochs), reported as top-1 on the test features.
 *
 * Two departures from that script, both for a probe on a small number of low-dimensional features: every feature is
 * first standardised with the training features' mean and standard deviation (the quality protocol's "standardised
 * backbone features"), which is why the default learning rate is 0.1 and not 5.0 (5.0 suits raw 2048-d ResNet
 * features of tiny magnitude); and the layer starts at zero instead of N(0, 0.01) (the problem is convex, so the start
 * only matters through the number of epochs; zero is exactly reproducible).
 *
 * Deterministic: each epoch's order is the project's seeded permutation (`Sampler`, the last partial batch dropped, a
 * different one every epoch), and every GPU sum runs in a fixed order. One epoch is one submit: a gather of the
 * epoch's rows and targets, then per step the logits, the loss gradient, the weight and bias gradients and the SGD
 * update, all prepared once.
 */
import { Effect } from "effect";
import { Gpu } from "../gpu/gpu.ts";
import { alloc, type Dispatch, read, submit, validated } from "../gpu/kernel.ts";
import { type GpuError, type ShapeError, shapeError } from "../gpu/errors.ts";
import { Tensor } from "../gpu/tensor.ts";
import { Sampler } from "../data/dataset.ts";
import { gatherRows } from "../ops/gather.ts";
import { matmul } from "../ops/matmul.ts";
import { sgdStep } from "../ops/optim.ts";
import { sum } from "../ops/reduce.ts";
import { softmaxCrossEntropyBackward } from "../ops/softmax_ce.ts";
import type { Matrix } from "../io/matrix.ts";
import { top1 } from "./metrics.ts";

export interface ProbeOptions {
  /** Default 100. */
  readonly epochs?: number;
  /** A multiple of 64, at most the number of training rows (default 256). */
  readonly batch?: number;
  /** Default 0.1 (on standardised features). */
  readonly lr?: number;
  readonly momentum?: number;
  readonly weightDecay?: number;
  /** Epochs at which the learning rate is multiplied by 0.1 (default: 60% and 80% of `epochs`, rounded). */
  readonly milestones?: readonly number[];
  /** Seeds the epoch order (default 0). */
  readonly seed?: number;
  /** Number of classes (default: the largest training label + 1). */
  readonly classes?: number;
  /** Standardise the features with the training mean and std (default true). */
  readonly standardise?: boolean;
}

export interface ProbeResult {
  /** Test top-1 accuracy. */
  readonly top1: number;
  readonly trainTop1: number;
  /** Mean cross-entropy over all training rows at the end (float64 on the host). */
  readonly trainLoss: number;
  readonly predictions: Int32Array<ArrayBuffer>;
  /** The layer, on standardised features: weights [F, C] row-major, bias [C]. */
  readonly weights: Float32Array<ArrayBuffer>;
  readonly bias: Float32Array<ArrayBuffer>;
  /** The standardisation applied (mean 0, std 1 when off). */
  readonly mean: Float64Array<ArrayBuffer>;
  readonly std: Float64Array<ArrayBuffer>;
}

export const PROBE_DEFAULTS = { epochs: 100, batch: 256, lr: 0.1, momentum: 0.9, weightDecay: 0, seed: 0 } as const;

/** Per-feature mean and population standard deviation (sklearn's StandardScaler; a constant feature gets std 1). */
export const featureStats = (m: Matrix) => {
  const [n, d] = m.shape;
  const mean = new Float64Array(d), std = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j]! += m.data[i * d + j]!;
  for (let j = 0; j < d; j++) mean[j]! /= n;
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) std[j]! += (m.data[i * d + j]! - mean[j]!) ** 2;
  for (let j = 0; j < d; j++) std[j] = Math.sqrt(std[j]! / n) || 1;
  return { mean, std };
};

export const standardised = (m: Matrix, mean: Float64Array, std: Float64Array): Float32Array<ArrayBuffer> => {
  const d = m.shape[1];
  return Float32Array.from(m.data, (v, i) => (v - mean[i % d]!) / std[i % d]!);
};

/** Logits x·W + b of one row, float64. */
const logitsOf = (x: Float32Array, row: number, d: number, w: Float32Array, b: Float32Array, out: Float64Array) => {
  const c = b.length;
  for (let k = 0; k < c; k++) out[k] = b[k]!;
  for (let j = 0; j < d; j++) {
    const v = x[row * d + j]!;
    if (v !== 0) { for (let k = 0; k < c; k++) out[k]! += v * w[j * c + k]!; }
  }
  return out;
};

/** Predictions (argmax, ties to the smaller class) and mean cross-entropy of a linear layer, float64. */
export const applyLinear = (
  x: Float32Array,
  n: number,
  d: number,
  w: Float32Array,
  b: Float32Array,
  labels?: ArrayLike<number>,
) => {
  const c = b.length;
  const z = new Float64Array(c);
  const predictions = new Int32Array(n);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    logitsOf(x, i, d, w, b, z);
    let best = 0;
    for (let k = 1; k < c; k++) if (z[k]! > z[best]!) best = k;
    predictions[i] = best;
    if (labels !== undefined) {
      let s = 0;
      for (let k = 0; k < c; k++) s += Math.exp(z[k]! - z[best]!);
      loss += z[best]! + Math.log(s) - z[labels[i]!]!;
    }
  }
  return { predictions, loss: n > 0 ? loss / n : 0 };
};

const checkLabels = (what: string, labels: ArrayLike<number>, rows: number, classes: number) => {
  if (labels.length !== rows) return shapeError("linearProbe", `${what}: ${labels.length} labels for ${rows} rows`);
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (!(Number.isInteger(l) && l >= 0 && l < classes)) {
      return shapeError("linearProbe", `${what}: label ${l} at ${i} outside 0..${classes - 1}`);
    }
  }
  return undefined;
};

/** The learning rate of an epoch: lr × 0.1 per milestone reached. */
export const probeLearningRate = (lr: number, milestones: readonly number[], epoch: number): number =>
  lr * 0.1 ** milestones.filter((m) => epoch >= m).length;

/** Trains the probe on (train, trainLabels) and scores it on (test, testLabels). */
export const linearProbe = (
  train: Matrix,
  trainLabels: ArrayLike<number>,
  test: Matrix,
  testLabels: ArrayLike<number>,
  options: ProbeOptions = {},
): Effect.Effect<ProbeResult, GpuError | ShapeError, Gpu> =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const o = { ...PROBE_DEFAULTS, ...options };
    const milestones = options.milestones ?? [Math.round(0.6 * o.epochs), Math.round(0.8 * o.epochs)];
    const [n, d] = train.shape;
    const [nt, dt] = test.shape;
    if (train.data.length !== n * d || test.data.length !== nt * dt || d !== dt || d < 1) {
      return yield* shapeError("linearProbe", `train [${train.shape}] and test [${test.shape}] features do not match`);
    }
    let maxLabel = 0;
    for (let i = 0; i < trainLabels.length; i++) maxLabel = Math.max(maxLabel, trainLabels[i]!);
    const classes = options.classes ?? maxLabel + 1;
    const bad = checkLabels("train", trainLabels, n, classes) ?? checkLabels("test", testLabels, nt, classes);
    if (bad !== undefined) return yield* bad;
    // The default batch shrinks to fit a small training set (whole multiples of 64); an explicit one must fit.
    const B = options.batch ?? Math.min(o.batch, Math.floor(n / 64) * 64);
    if (!(Number.isInteger(B) && B >= 64 && B % 64 === 0 && B <= n)) {
      return yield* shapeError("linearProbe", `batch ${B} must be a multiple of 64 and at most the ${n} training rows`);
    }
    if (!(Number.isInteger(o.epochs) && o.epochs >= 0)) return yield* shapeError("linearProbe", `epochs ${o.epochs}`);

    const { mean, std } = o.standardise === false
      ? { mean: new Float64Array(d), std: new Float64Array(d).fill(1) }
      : featureStats(train);
    const x = standardised(train, mean, std);
    const sampler = new Sampler(n, B, o.seed);
    const steps = sampler.stepsPerEpoch;
    const rows = steps * B;

    const buffers: GPUBuffer[] = [];
    const take = <D extends "f32" | "u32">(shape: readonly number[], dtype: D, label: string) =>
      alloc(shape, dtype, `probe ${label}`).pipe(Effect.tap((t) => Effect.sync(() => buffers.push(t.buffer))));
    return yield* Effect.gen(function* () {
      const features = yield* take([n, d], "f32", "features");
      gpu.write(features, x);
      const targets = yield* take([n, 1], "u32", "targets");
      gpu.write(targets, Uint32Array.from(trainLabels));
      const order = yield* take([rows], "u32", "order");
      const epochX = yield* take([rows, d], "f32", "epoch rows");
      const epochT = yield* take([rows, 1], "u32", "epoch targets");
      // W [d, C] then b [C] in one flat store (b on a 256-byte boundary, as views require), likewise the gradients.
      const biasAt = Math.ceil((d * classes) / 64) * 64;
      const size = biasAt + Math.ceil(classes / 4) * 4;
      const params = yield* take([size], "f32", "params");
      const grads = yield* take([size], "f32", "grads");
      const momentum = yield* take([size], "f32", "momentum");
      const view = (t: Tensor, shape: readonly number[], at: number) => new Tensor(t.buffer, shape, "f32", at * 4);
      const W = view(params, [d, classes], 0), b = view(params, [classes], biasAt);
      const dW = view(grads, [d, classes], 0), db = view(grads, [classes], biasAt);
      const logits = yield* take([B, classes], "f32", "logits");
      const dlogits = yield* take([B, classes], "f32", "dlogits");

      const sgd = yield* sgdStep(params, grads, momentum, {
        lr: o.lr,
        momentum: o.momentum,
        weightDecay: o.weightDecay,
      });
      const biasGrad = yield* sum(dlogits, 0, db);
      const epoch: Dispatch[] = [
        yield* gatherRows(features, order, epochX),
        yield* gatherRows(targets, order, epochT),
      ];
      for (let s = 0; s < steps; s++) {
        const xs = new Tensor(epochX.buffer, [B, d], "f32", s * B * d * 4);
        const ts = new Tensor(epochT.buffer, [B], "u32", s * B * 4);
        epoch.push(
          yield* matmul(xs, W, logits, { bias: b }),
          yield* softmaxCrossEntropyBackward(logits, ts, dlogits),
          yield* matmul(xs, dlogits, dW, { transA: true }),
          biasGrad,
          sgd,
        );
      }
      // The layer and the momentum start at zero: WebGPU zero-fills every new buffer.
      // All epochs are queued at once: each epoch's order and learning rate are queue writes, ordered after the
      // previous epoch's submit, so nothing waits until the parameters are read.
      yield* validated(
        "linearProbe",
        Effect.sync(() => {
          for (let e = 0; e < o.epochs; e++) {
            gpu.write(order, sampler.order(e).slice(0, rows));
            sgd.setHyperparameters({ lr: probeLearningRate(o.lr, milestones, e) });
            submit(gpu, epoch, "probe epoch");
          }
        }),
      );
      const trained = yield* read(params);
      const weights = trained.slice(0, d * classes), bias = trained.slice(biasAt, biasAt + classes);
      const fit = applyLinear(x, n, d, weights, bias, trainLabels);
      const { predictions } = applyLinear(standardised(test, mean, std), nt, d, weights, bias);
      return {
        top1: top1(testLabels, predictions),
        trainTop1: top1(trainLabels, fit.predictions),
        trainLoss: fit.loss,
        predictions,
        weights,
        bias,
        mean,
        std,
      } satisfies ProbeResult;
    }).pipe(Effect.ensuring(Effect.sync(() => buffers.forEach((buf) => buf.destroy()))));
  });
