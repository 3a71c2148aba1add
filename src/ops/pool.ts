import { Effect } from "effect";
import source from "../../kernels/pool.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, type Params, prepare } from "../gpu/kernel.ts";
import { ShapeError, shapeError } from "../gpu/errors.ts";
import { sameShape } from "../gpu/shapes.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { convOutputSize, type WindowGeometry } from "./conv2d.ts";

/**
 * Pooling over NCHW f32 tensors (kernels/pool.wgsl): max pooling as PyTorch's `max_pool2d` (floor mode, padding as
 * -inf, ties to the first index, argmax stored as ih·W + iw within the plane) and global average pooling, each with
 * its backward. Backwards overwrite their outputs and are deterministic (gathers in a fixed order, no atomics).
 */

export interface MaxPoolOptions {
  /** Window size: one number for both axes, or [rows, columns]. */
  readonly kernel: number | readonly [number, number];
  /** Default: the kernel size (non-overlapping windows), as PyTorch. */
  readonly stride?: number | readonly [number, number];
  /** -inf padding on each side, at most half the kernel (so that every window holds an element). Default 0. */
  readonly padding?: number | readonly [number, number];
}

const WG = 256;

const pair = (v: number | readonly [number, number] | undefined, fallback: readonly [number, number]) =>
  v === undefined ? fallback : typeof v === "number" ? [v, v] as const : v;

const show = (shape: readonly number[]): string => `[${shape.join(", ")}]`;

const checkTensor = (kernel: string, what: string, t: Tensor, shape: readonly number[], dtype: "f32" | "u32") =>
  t.dtype !== dtype || !sameShape(t, shape)
    ? shapeError(kernel, `${what} ${t} must be ${dtype} ${show(shape)}`)
    : undefined;

const check4d = (kernel: string, what: string, t: Tensor) =>
  t.dtype !== "f32" || t.shape.length !== 4 || t.shape.some((s) => !Number.isInteger(s) || s < 1)
    ? shapeError(kernel, `${what} ${t} must be f32 and 4-D [N, C, H, W] with every size at least 1`)
    : undefined;

/** WebGPU forbids binding a buffer read-write and read-only in one dispatch, even for disjoint views. */
const checkDistinct = (kernel: string, outputs: readonly Tensor[], inputs: readonly Tensor[]) => {
  for (const o of outputs) {
    for (const t of [...inputs, ...outputs]) {
      if (t !== o && o.buffer === t.buffer) return shapeError(kernel, `${o} shares a buffer with ${t}`);
    }
  }
  return undefined;
};

interface PoolGeometry extends WindowGeometry {
  readonly C: number;
}

/** The geometry of max pooling an input of shape [N, C, H, W], or a ShapeError naming the bad option. */
const geometry = (kernel: string, input: Tensor, opts: MaxPoolOptions): PoolGeometry | ShapeError => {
  const bad = check4d(kernel, "input", input);
  if (bad !== undefined) return bad;
  const [N, C, H, W] = input.shape as [number, number, number, number];
  const [KH, KW] = pair(opts.kernel, [0, 0]);
  const [sh, sw] = pair(opts.stride, [KH, KW]);
  const [ph, pw] = pair(opts.padding, [0, 0]);
  if (![KH, KW, sh, sw].every((s) => Number.isInteger(s) && s >= 1)) {
    return shapeError(kernel, `kernel ${show([KH, KW])} and stride ${show([sh, sw])} must be integers >= 1`);
  }
  if (!Number.isInteger(ph) || !Number.isInteger(pw) || ph < 0 || pw < 0 || 2 * ph > KH || 2 * pw > KW) {
    return shapeError(kernel, `padding ${show([ph, pw])} must be integers from 0 to half the kernel ${show([KH, KW])}`);
  }
  const OH = convOutputSize(H, KH, sh, ph);
  const OW = convOutputSize(W, KW, sw, pw);
  if (OH < 1 || OW < 1) {
    return shapeError(kernel, `a ${KH}x${KW} window with padding ${show([ph, pw])} does not fit the input ${input}`);
  }
  return { N, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw };
};

const params = (g: PoolGeometry): Params =>
  [g.N * g.C, g.H, g.W, g.OH, g.OW, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw].map((v) => ["u32", v]);

const launch = Effect.fnUntraced(function* (
  entryPoint: string,
  tensors: ReadonlyArray<Tensor | undefined>,
  p: Params,
  invocations: number,
) {
  const gpu = yield* Gpu;
  return yield* prepare({ name: "pool", source, entryPoint, constants: { WG } }, {
    tensors,
    params: p,
    workgroups: grid1d(gpu, Math.ceil(invocations / WG)),
  });
});

/**
 * `y = max_pool2d(x)`: x [N, C, H, W] → y [N, C, OH, OW] with OH = floor((H + 2 ph − KH) / sh) + 1. When
 * `indices` (u32 [N, C, OH, OW]) is given, it receives each window's argmax for `maxPool2dBackward`.
 */
export const maxPool2d = Effect.fnUntraced(function* (
  x: Tensor,
  y: Tensor,
  indices: Tensor | undefined,
  opts: MaxPoolOptions,
) {
  const g = geometry("maxPool2d", x, opts);
  if (g instanceof ShapeError) return yield* g;
  const outShape = [g.N, g.C, g.OH, g.OW];
  const bad = checkTensor("maxPool2d", "output", y, outShape, "f32") ??
    (indices && checkTensor("maxPool2d", "indices", indices, outShape, "u32")) ??
    checkDistinct("maxPool2d", indices ? [y, indices] : [y], [x]);
  if (bad !== undefined) return yield* bad;
  const n = g.N * g.C * g.OH * g.OW;
  return indices
    ? yield* launch("max_pool", [x, y, indices], params(g), n)
    : yield* launch("max_pool_values", [x, y], params(g), n);
});

/**
 * `dx = ∂L/∂x` of `maxPool2d` from dy [N, C, OH, OW] and the forward's indices: dx [N, C, H, W] (its shape gives the
 * input size), with the forward's options. An input that is the argmax of several overlapping windows receives the
 * sum of their gradients, in a fixed order.
 */
export const maxPool2dBackward = Effect.fnUntraced(function* (
  dy: Tensor,
  indices: Tensor,
  dx: Tensor,
  opts: MaxPoolOptions,
) {
  const g = geometry("maxPool2dBackward", dx, opts);
  if (g instanceof ShapeError) return yield* g;
  const outShape = [g.N, g.C, g.OH, g.OW];
  const bad = checkTensor("maxPool2dBackward", "output gradient", dy, outShape, "f32") ??
    checkTensor("maxPool2dBackward", "indices", indices, outShape, "u32") ??
    checkDistinct("maxPool2dBackward", [dx], [dy, indices]);
  if (bad !== undefined) return yield* bad;
  return yield* launch(
    "max_pool_backward",
    [undefined, undefined, undefined, dy, indices, dx],
    params(g),
    g.N * g.C * g.H * g.W,
  );
});

const planeGeometry = (N: number, C: number, H: number, W: number): PoolGeometry => ({
  N,
  C,
  H,
  W,
  OH: 1,
  OW: 1,
  KH: H,
  KW: W,
  sh: 1,
  sw: 1,
  ph: 0,
  pw: 0,
});

/** `y[n, c] = mean over h, w of x[n, c, h, w]`: x [N, C, H, W] → y [N, C]. */
export const globalAvgPool = Effect.fnUntraced(function* (x: Tensor, y: Tensor) {
  const bad = check4d("globalAvgPool", "input", x);
  if (bad !== undefined) return yield* bad;
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const bad2 = checkTensor("globalAvgPool", "output", y, [N, C], "f32") ?? checkDistinct("globalAvgPool", [y], [x]);
  if (bad2 !== undefined) return yield* bad2;
  return yield* launch("global_avg_pool", [x, y], params(planeGeometry(N, C, H, W)), N * C);
});

/** `dx[n, c, h, w] = dy[n, c] / (H·W)`: dy [N, C] → dx [N, C, H, W]. */
export const globalAvgPoolBackward = Effect.fnUntraced(function* (dy: Tensor, dx: Tensor) {
  const bad = check4d("globalAvgPoolBackward", "input gradient", dx);
  if (bad !== undefined) return yield* bad;
  const [N, C, H, W] = dx.shape as [number, number, number, number];
  const bad2 = checkTensor("globalAvgPoolBackward", "output gradient", dy, [N, C], "f32") ??
    checkDistinct("globalAvgPoolBackward", [dx], [dy]);
  if (bad2 !== undefined) return yield* bad2;
  return yield* launch(
    "global_avg_pool_backward",
    [undefined, undefined, undefined, dy, undefined, dx],
    params(planeGeometry(N, C, H, W)),
    N * C * H * W,
  );
});
