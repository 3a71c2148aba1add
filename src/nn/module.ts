import { Effect } from "effect";
import type { GpuError, ShapeError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/gpu.ts";
import type { Dispatch } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** How a module is bound to an input: BN mode, whether gradients flow, split-batch BN groups. */
export interface BindOptions {
  /** Training mode: BN normalises with batch statistics and updates its running statistics. */
  readonly train: boolean;
  /** Allocate gradients and prepare the backward pass. */
  readonly grad: boolean;
  /** Batch-norm statistics over this many contiguous sub-batches (our single-device ShuffleBN replacement). */
  readonly bnGroups?: number;
}

/**
 * A module bound to one input tensor (so to one batch size): its output, the gradient of its output that the next
 * module's backward fills, and the dispatches of both passes, prepared once and recorded every step.
 */
export interface Bound {
  readonly y: Tensor<"f32">;
  /** Gradient of the loss with respect to `y`; present when bound with `grad`. */
  readonly dy: Tensor<"f32"> | undefined;
  readonly forward: readonly Dispatch[];
  /** Reads `dy`, writes the parameters' gradients and, when given one at bind time, the input's gradient `dx`. */
  readonly backward: readonly Dispatch[];
}

export type BindError = GpuError | ShapeError;

/**
 * A layer with explicit forward and backward passes. `bind` allocates everything a batch size needs (activations,
 * gradients, saved statistics), so that a training step allocates nothing.
 */
export interface Module {
  /** Output shape for an input shape; a shape the module cannot take fails with a ShapeError naming it. */
  readonly outputShape: (input: readonly number[]) => Effect.Effect<readonly number[], ShapeError>;
  /**
   * Forward FLOPs for an input shape, 2 per multiply-add of the convolutions and matmuls (the usual count; the
   * elementwise, normalisation and pooling work is not counted). Absent: none of those. Fails as `outputShape`.
   */
  readonly flops?: (input: readonly number[]) => Effect.Effect<number, ShapeError>;
  readonly bind: (
    x: Tensor<"f32">,
    dx: Tensor<"f32"> | undefined,
    opts: BindOptions,
  ) => Effect.Effect<Bound, BindError, Gpu>;
}

/** A module's forward FLOPs for an input shape: 0 for one that declares none (see `Module.flops`). */
export const flopsOf = (m: Module, input: readonly number[]): Effect.Effect<number, ShapeError> =>
  m.flops?.(input) ?? Effect.as(m.outputShape(input), 0);

/** Modules applied in order; the backward runs in reverse, each writing the previous module's output gradient. */
export const sequential = (...modules: readonly Module[]): Module => ({
  outputShape: (input) => Effect.reduce(modules, () => input, (shape, m) => m.outputShape(shape)),
  flops: Effect.fnUntraced(function* (input) {
    let shape = input, total = 0;
    for (const m of modules) {
      total += yield* flopsOf(m, shape);
      shape = yield* m.outputShape(shape);
    }
    return total;
  }),
  bind: Effect.fnUntraced(function* (x, dx, opts) {
    const bound: Bound[] = [];
    let input = x;
    let inputGrad = dx;
    for (const m of modules) {
      const b = yield* m.bind(input, inputGrad, opts);
      bound.push(b);
      input = b.y;
      inputGrad = b.dy;
    }
    const last = bound[bound.length - 1];
    return {
      y: last?.y ?? x,
      dy: last === undefined ? dx : last.dy,
      forward: bound.flatMap((b) => b.forward),
      backward: bound.toReversed().flatMap((b) => b.backward),
    };
  }),
});
