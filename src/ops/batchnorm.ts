import { Effect } from "effect";
import source from "../../kernels/batchnorm.wgsl" with { type: "text" };
import { Gpu, type GpuContext } from "../gpu/gpu.ts";
import { alloc, bindByName, grid1d, prepare, sequence } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import { overlaps, sameShape, sharedBuffer } from "../gpu/shapes.ts";
import type { Tensor } from "../gpu/tensor.ts";

/**
 * Batch normalisation over x [N, C, ...] (BatchNorm2d for [N, C, H, W], BatchNorm1d for [N, C] or [N, C, L]), as
 * PyTorch computes it, with optional split-batch statistics (`groups`). Each op is prepared once and recorded as one
 * `Dispatch` (the training ops as three dispatches in a row; see kernels/batchnorm.wgsl).
 *
 * Aliasing: WebGPU forbids binding one buffer read-only and read-write in a dispatch, so a tensor the op only reads
 * (x, dy, gamma, beta) must not share a buffer with one it writes; written tensors must not overlap each other. Both
 * are ShapeErrors at preparation. gamma and beta may be views of one parameter buffer, running mean and variance
 * views of one buffer of BN statistics, dgamma and dbeta views of one gradient buffer.
 */

/** gamma (weight) and beta (bias), f32 [C]. */
export interface BatchNormAffine {
  readonly gamma: Tensor;
  readonly beta: Tensor;
}

/** Running estimates, f32 [C], updated in place by the training forward (PyTorch's `running_mean`/`running_var`). */
export interface BatchNormRunning {
  readonly mean: Tensor;
  readonly variance: Tensor;
}

/** What the training forward keeps for the backward, f32 [G, C]: each group's batch mean and 1/sqrt(var + eps). */
export interface BatchNormSaved {
  readonly mean: Tensor;
  readonly invStd: Tensor;
}

export interface BatchNormOptions {
  /** Split-batch BN: statistics over each of `groups` contiguous sub-batches of N / groups samples. Default 1. */
  readonly groups?: number;
  /** Added to the variance before the square root. Default 1e-5, as PyTorch. */
  readonly eps?: number;
  /** Weight of the batch statistic in the running estimate. Default 0.1, as PyTorch. */
  readonly momentum?: number;
  /** Samples per block of work (one invocation per block and channel); chosen from the shape when absent. */
  readonly rowsPerBlock?: number;
}

const WG = 64;

/** Invocations wanted per dispatch: 16 workgroups, enough to keep llvmpipe's threads busy, few partials to combine. */
const LANES = 1024;

interface Layout {
  readonly n: number;
  readonly c: number;
  readonly hw: number;
}

const layoutOf = (kernel: string, x: Tensor) => {
  if (x.dtype !== "f32") return shapeError(kernel, `${x} must be f32`);
  if (x.shape.length < 2) return shapeError(kernel, `${x} must be [N, C] or [N, C, ...spatial]`);
  const [n, c, ...rest] = x.shape as [number, number, ...number[]];
  const hw = rest.reduce((a, b) => a * b, 1);
  if (n * c * hw === 0) return shapeError(kernel, `${x} is empty`);
  return { n, c, hw } satisfies Layout;
};

/**
 * Loop iterations of the busiest invocation with blocks of `rows` samples (an upper bound over the four kernels; the
 * forward's partial pass reads its block twice, the apply passes combine up to G·B partials).
 */
const iterations = ({ n, hw }: Layout, groups: number, rows: number): number => {
  const blocks = Math.ceil(n / groups / rows);
  return Math.max(2 * rows * (hw + 1), 2 * blocks + rows * (hw + 1) + 2 * groups * (blocks + 1)) + 4;
};

interface Plan {
  readonly rows: number;
  readonly blocks: number;
}

/** Samples per block: about LANES invocations in all, fewer samples where the loop budget demands it. */
const planBlocks = (kernel: string, gpu: GpuContext, layout: Layout, groups: number, requested?: number) => {
  const per = layout.n / groups;
  let rows = requested ?? Math.max(1, Math.min(per, Math.floor((per * groups * layout.c) / LANES)));
  if (!Number.isInteger(rows) || rows < 1) {
    return shapeError(kernel, `rowsPerBlock = ${rows} must be a positive integer`);
  }
  rows = Math.min(rows, per);
  const budget = gpu.tuning.loopLimit;
  while (requested === undefined && rows > 1 && iterations(layout, groups, rows) > budget) rows = Math.ceil(rows / 2);
  const needed = iterations(layout, groups, rows);
  if (needed > budget) {
    return shapeError(
      kernel,
      `[${layout.n}, ${layout.c}, ${layout.hw}] (groups ${groups}, ${rows} samples per block) needs ${needed} loop ` +
        `iterations in one invocation; this adapter (${gpu.adapter.description}) silently stops loops after ${budget}`,
    );
  }
  return { rows, blocks: Math.ceil(per / rows) } satisfies Plan;
};

const checkVector = (kernel: string, what: string, t: Tensor, length: number) =>
  t.dtype !== "f32" || t.size !== length
    ? shapeError(kernel, `${what} ${t} must be f32 with ${length} elements`)
    : undefined;

/** The WebGPU binding rule and plain sanity: reads apart from writes' buffers, writes apart from each other. */
const checkAliasing = (kernel: string, reads: readonly Tensor[], writes: readonly Tensor[]) => {
  const shared = sharedBuffer(reads, writes);
  if (shared !== undefined) {
    const [r, w] = shared;
    return shapeError(kernel, `${r} is read and ${w} written, but they share a buffer (WebGPU forbids this)`);
  }
  for (let i = 0; i < writes.length; i++) {
    for (let j = i + 1; j < writes.length; j++) {
      if (overlaps(writes[i]!, writes[j]!)) return shapeError(kernel, `${writes[i]} and ${writes[j]} overlap`);
    }
  }
  return undefined;
};

const checkGroups = (kernel: string, x: Tensor, { n, hw }: Layout, groups: number) => {
  if (!Number.isInteger(groups) || groups < 1 || n % groups !== 0) {
    return shapeError(kernel, `groups = ${groups} must be a positive integer dividing N = ${n} of ${x}`);
  }
  if ((n / groups) * hw < 2) {
    return shapeError(kernel, `${x} with groups = ${groups} has one value per channel and group: no variance`);
  }
  return undefined;
};

/** The storage bindings of kernels/batchnorm.wgsl, in binding order. */
const BINDINGS = [
  "x",
  "y",
  "gamma",
  "beta",
  "runningMean",
  "runningVar",
  "saveMean",
  "saveInvStd",
  "dy",
  "dx",
  "dgamma",
  "dbeta",
  "partial",
] as const;

type Binding = typeof BINDINGS[number];
type Bindings = { readonly [name in Binding]?: Tensor };

const bind = bindByName(BINDINGS);

/**
 * What each pass of a training op binds: the forward's and the backward's partial pass, their apply pass, then their
 * per-channel pass. No pass binds more than WebGPU's default of 8 storage buffers per shader stage.
 */
const PASSES = {
  train_forward: [
    ["x", "partial"],
    ["x", "y", "gamma", "beta", "saveMean", "saveInvStd", "partial"],
    ["runningMean", "runningVar", "partial"],
  ],
  train_backward: [
    ["x", "saveMean", "dy", "partial"],
    ["x", "gamma", "saveMean", "saveInvStd", "dy", "dx", "partial"],
    ["saveInvStd", "dgamma", "dbeta", "partial"],
  ],
} as const satisfies Record<string, readonly [readonly Binding[], readonly Binding[], readonly Binding[]]>;

/**
 * The three dispatches of a training op (partial statistics, apply, per-channel results), sharing a scratch of
 * [2, G·B, C].
 */
const partialThenApply = Effect.fnUntraced(function* (
  kernel: string,
  stage: keyof typeof PASSES,
  layout: Layout,
  groups: number,
  blocks: Plan,
  tensors: Bindings,
  eps: number,
  momentum: number,
) {
  const gpu = yield* Gpu;
  const { n, c, hw } = layout;
  const partial = yield* alloc([2, groups * blocks.blocks, c], "f32", `${kernel} partial`);
  const all: Bindings = { ...tensors, partial };
  const launch = {
    params: [
      ["u32", n],
      ["u32", c],
      ["u32", hw],
      ["u32", groups],
      ["u32", blocks.rows],
      ["u32", blocks.blocks],
      ["f32", eps],
      ["f32", momentum],
    ] as const,
    workgroups: grid1d(gpu, Math.ceil((groups * blocks.blocks * c) / WG)),
  };
  const spec = (entryPoint: string) => ({ name: "batchnorm", source, entryPoint, constants: { WG } });
  // each entry point binds only what it uses
  const used = (names: readonly Binding[]) => bind(Object.fromEntries(names.map((name) => [name, all[name]])));
  const [first, second, third] = PASSES[stage];
  return sequence(kernel, [
    yield* prepare(spec(`${stage}_partial`), { ...launch, tensors: used(first) }),
    yield* prepare(spec(`${stage}_apply`), { ...launch, tensors: used(second) }),
    yield* prepare(spec(`${stage}_channel`), {
      ...launch,
      tensors: used(third),
      workgroups: grid1d(gpu, Math.ceil(c / WG)),
    }),
  ]);
});

const checkOutput = (kernel: string, x: Tensor, out: Tensor) =>
  !sameShape(x, out) || out.dtype !== "f32" ? shapeError(kernel, `${out} must be f32 of ${x}'s shape`) : undefined;

/**
 * Training forward: `y = gamma · (x − mean) / sqrt(var + eps) + beta` with the batch (or group) statistics; saves
 * mean and 1/sqrt(var + eps) per group into `saved` ([G, C]); updates `running` in place with the unbiased variance,
 * averaged over the groups. Three dispatches recorded as one (a scratch tensor is allocated here, once).
 */
export const batchNormTrain = Effect.fnUntraced(function* (
  x: Tensor,
  y: Tensor,
  affine: BatchNormAffine,
  running: BatchNormRunning,
  saved: BatchNormSaved,
  options: BatchNormOptions = {},
) {
  const kernel = "batchNormTrain";
  const gpu = yield* Gpu;
  const { groups = 1, eps = 1e-5, momentum = 0.1 } = options;
  const layout = layoutOf(kernel, x);
  if (!("n" in layout)) return yield* layout;
  const { c } = layout;
  const bad = checkOutput(kernel, x, y) ??
    checkGroups(kernel, x, layout, groups) ??
    checkVector(kernel, "gamma", affine.gamma, c) ?? checkVector(kernel, "beta", affine.beta, c) ??
    checkVector(kernel, "running mean", running.mean, c) ??
    checkVector(kernel, "running variance", running.variance, c) ??
    checkVector(kernel, "saved mean", saved.mean, groups * c) ??
    checkVector(kernel, "saved invStd", saved.invStd, groups * c) ??
    checkAliasing(kernel, [x, affine.gamma, affine.beta], [
      y,
      running.mean,
      running.variance,
      saved.mean,
      saved.invStd,
    ]);
  if (bad !== undefined) return yield* bad;
  const blocks = planBlocks(kernel, gpu, layout, groups, options.rowsPerBlock);
  if (!("rows" in blocks)) return yield* blocks;
  const tensors = {
    x,
    y,
    gamma: affine.gamma,
    beta: affine.beta,
    runningMean: running.mean,
    runningVar: running.variance,
    saveMean: saved.mean,
    saveInvStd: saved.invStd,
  };
  return yield* partialThenApply(kernel, "train_forward", layout, groups, blocks, tensors, eps, momentum);
});

/**
 * Evaluation forward: `y = gamma · (x − running mean) / sqrt(running var + eps) + beta`; running stats unchanged.
 * One dispatch.
 */
export const batchNormEval = Effect.fnUntraced(function* (
  x: Tensor,
  y: Tensor,
  affine: BatchNormAffine,
  running: BatchNormRunning,
  options: Pick<BatchNormOptions, "eps" | "rowsPerBlock"> = {},
) {
  const kernel = "batchNormEval";
  const gpu = yield* Gpu;
  const { eps = 1e-5 } = options;
  const layout = layoutOf(kernel, x);
  if (!("n" in layout)) return yield* layout;
  const { n, c, hw } = layout;
  const bad = checkOutput(kernel, x, y) ??
    checkVector(kernel, "gamma", affine.gamma, c) ?? checkVector(kernel, "beta", affine.beta, c) ??
    checkVector(kernel, "running mean", running.mean, c) ??
    checkVector(kernel, "running variance", running.variance, c) ??
    // running stats are declared read_write (shared with the training forward): keep them off x's and y's buffers
    checkAliasing(kernel, [x, affine.gamma, affine.beta], [y, running.mean, running.variance]);
  if (bad !== undefined) return yield* bad;
  const blocks = planBlocks(kernel, gpu, layout, 1, options.rowsPerBlock);
  if (!("rows" in blocks)) return yield* blocks;
  return yield* prepare({ name: "batchnorm", source, entryPoint: "eval_forward", constants: { WG } }, {
    tensors: bind({
      x,
      y,
      gamma: affine.gamma,
      beta: affine.beta,
      runningMean: running.mean,
      runningVar: running.variance,
    }),
    params: [
      ["u32", n],
      ["u32", c],
      ["u32", hw],
      ["u32", 1],
      ["u32", blocks.rows],
      ["u32", blocks.blocks],
      ["f32", eps],
      ["f32", 0],
    ],
    workgroups: grid1d(gpu, Math.ceil((blocks.blocks * c) / WG)),
  });
});

/** Gradients of the affine parameters, f32 [C]; overwritten (not accumulated) by the backward. */
export interface BatchNormGrads {
  readonly gamma: Tensor;
  readonly beta: Tensor;
}

/**
 * Training backward from `saved` (as the training forward left it, with the same `groups`): overwrites `dx` (x's
 * shape), `grads.gamma` and `grads.beta` ([C]). Per group, with x̂ = (x − mean)·invstd:
 * dx = gamma·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)), dgamma = Σ dy·x̂, dbeta = Σ dy. Three dispatches recorded as one.
 */
export const batchNormBackward = Effect.fnUntraced(function* (
  x: Tensor,
  dy: Tensor,
  dx: Tensor,
  gamma: Tensor,
  saved: BatchNormSaved,
  grads: BatchNormGrads,
  options: Pick<BatchNormOptions, "groups" | "rowsPerBlock"> = {},
) {
  const kernel = "batchNormBackward";
  const gpu = yield* Gpu;
  const { groups = 1 } = options;
  const layout = layoutOf(kernel, x);
  if (!("n" in layout)) return yield* layout;
  const { c } = layout;
  const bad = checkOutput(kernel, x, dy) ?? checkOutput(kernel, x, dx) ??
    checkGroups(kernel, x, layout, groups) ??
    checkVector(kernel, "gamma", gamma, c) ??
    checkVector(kernel, "saved mean", saved.mean, groups * c) ??
    checkVector(kernel, "saved invStd", saved.invStd, groups * c) ??
    checkVector(kernel, "dgamma", grads.gamma, c) ?? checkVector(kernel, "dbeta", grads.beta, c) ??
    // saved stats are declared read_write (shared with the training forward)
    checkAliasing(kernel, [x, dy, gamma], [dx, grads.gamma, grads.beta, saved.mean, saved.invStd]);
  if (bad !== undefined) return yield* bad;
  const blocks = planBlocks(kernel, gpu, layout, groups, options.rowsPerBlock);
  if (!("rows" in blocks)) return yield* blocks;
  const tensors = {
    x,
    gamma,
    saveMean: saved.mean,
    saveInvStd: saved.invStd,
    dy,
    dx,
    dgamma: grads.gamma,
    dbeta: grads.beta,
  };
  return yield* partialThenApply(kernel, "train_backward", layout, groups, blocks, tensors, 1e-5, 0);
});
