import { Effect } from "effect";
import source from "../../kernels/optim.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { type Dispatch, grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import { overlaps } from "../gpu/shapes.ts";
import type { Tensor } from "../gpu/tensor.ts";

/**
 * Parameter updates over flat f32 tensors: a whole model's parameters (one buffer, each parameter a view in it) in one
 * dispatch. Tensors of any shape are taken as flat; a pair must have the same number of elements. Lengths divisible
 * by 4 (every model buffer: parameters are padded to 64 floats) run 4 elements per invocation.
 */

const WG = 256;

export interface SgdHyperparameters {
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
}

/** A prepared SGD step; `setHyperparameters` changes lr (every epoch) or the others without preparing again. */
export interface SgdStep extends Dispatch {
  readonly setHyperparameters: (changes: Partial<SgdHyperparameters>) => void;
}

/** A prepared momentum-encoder update; `setMomentum` changes m without preparing again. */
export interface EmaUpdate extends Dispatch {
  readonly setMomentum: (m: number) => void;
}

const checkFlat = (kernel: string, tensors: readonly Tensor[]) => {
  const first = tensors[0]!;
  for (const t of tensors) {
    if (t.dtype !== "f32") return shapeError(kernel, `${t} must be f32`);
    if (t.size !== first.size) return shapeError(kernel, `sizes differ: ${tensors.map(String).join(", ")}`);
  }
  return undefined;
};

/** One invocation per element, or per 4 when the length allows (the bindings' offsets are 16-byte aligned). */
const launch = Effect.fnUntraced(function* (
  entry: "sgd" | "ema",
  tensors: ReadonlyArray<Tensor | undefined>,
  size: number,
  params: (items: number) => ReadonlyArray<readonly ["u32" | "f32", number]>,
) {
  const gpu = yield* Gpu;
  const vec4 = size % 4 === 0;
  const items = vec4 ? size / 4 : size;
  const dispatch = yield* prepare(
    { name: "optim", source, entryPoint: vec4 ? `${entry}4` : entry, constants: { WG } },
    { tensors, params: params(items), workgroups: grid1d(gpu, Math.ceil(items / WG)) },
  );
  return { dispatch, items };
});

/**
 * SGD with momentum and weight decay, exactly as PyTorch's `torch.optim.SGD` (dampening 0, no Nesterov), in place:
 * `g = grad + weightDecay·param; momentumBuffer = momentum·momentumBuffer + g; param −= lr·momentumBuffer`.
 * `momentumBuffer` starts at zero (PyTorch's first-step copy of g is then the same update).
 * Uniforms: `[n, lr, momentum, weightDecay]` (n counts vec4s when the length is divisible by 4).
 */
export const sgdStep = Effect.fnUntraced(function* (
  params: Tensor,
  grads: Tensor,
  momentumBuffer: Tensor,
  hyper: SgdHyperparameters,
) {
  const kernel = "sgdStep";
  const bad = checkFlat(kernel, [params, grads, momentumBuffer]) ??
    (grads.buffer === params.buffer || grads.buffer === momentumBuffer.buffer
      ? shapeError(kernel, `${grads} is read and must not share a buffer with ${params} or ${momentumBuffer}`)
      : overlaps(params, momentumBuffer)
      ? shapeError(kernel, `${params} and ${momentumBuffer} overlap`)
      : undefined);
  if (bad !== undefined) return yield* bad;
  let current = hyper;
  const uniforms = (items: number) =>
    [["u32", items], ["f32", current.lr], ["f32", current.momentum], ["f32", current.weightDecay]] as const;
  const { dispatch, items } = yield* launch("sgd", [params, grads, momentumBuffer], params.size, uniforms);
  return {
    ...dispatch,
    setHyperparameters: (changes) => {
      current = { ...current, ...changes };
      dispatch.setParams(uniforms(items));
    },
  } satisfies SgdStep;
});

/**
 * The momentum encoder's update, as MoCo/PCL: `keyParams ← keyParams·m + queryParams·(1 − m)`, in place over flat
 * tensors of the same length. The two may be views of one buffer (not overlapping). Uniforms: `[n, m, 1 − m]`.
 */
export const emaUpdate = Effect.fnUntraced(function* (keyParams: Tensor, queryParams: Tensor, m: number) {
  const kernel = "emaUpdate";
  const bad = checkFlat(kernel, [keyParams, queryParams]) ??
    (overlaps(keyParams, queryParams) ? shapeError(kernel, `${keyParams} and ${queryParams} overlap`) : undefined);
  if (bad !== undefined) return yield* bad;
  const uniforms = (items: number, m: number) => [["u32", items], ["f32", m], ["f32", 1 - m]] as const;
  const { dispatch, items } = yield* launch(
    "ema",
    [undefined, undefined, undefined, keyParams, queryParams],
    keyParams.size,
    (items) => uniforms(items, m),
  );
  return { ...dispatch, setMomentum: (m) => dispatch.setParams(uniforms(items, m)) } satisfies EmaUpdate;
});
