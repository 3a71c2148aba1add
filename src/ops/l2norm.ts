import { Effect } from "effect";
import source from "../../kernels/l2norm.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import { sameShape, sharedBuffer } from "../gpu/shapes.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { rowWorkgroup } from "./reduce.ts";

/** The clamp of the norm, as torch.nn.functional.normalize: y = x / max(‖x‖, eps). */
export const L2_EPS = 1e-12;

/** ShapeError unless all are f32 of the first's 2-D shape, and the output shares no buffer with an input. */
const check = (kernel: string, inputs: readonly Tensor[], out: Tensor) => {
  const first = inputs[0]!;
  if (first.shape.length !== 2) return shapeError(kernel, `${first} must be 2-D [rows, d]`);
  for (const t of [...inputs, out]) {
    if (t.dtype !== "f32") return shapeError(kernel, `${t} must be f32`);
    if (!sameShape(t, first)) return shapeError(kernel, `shapes differ: ${[...inputs, out].map(String).join(", ")}`);
  }
  const [shared] = sharedBuffer(inputs, [out]) ?? [];
  return shared && shapeError(kernel, `${out} must not share a buffer with the input ${shared}`);
};

const launch = Effect.fnUntraced(
  function* (entryPoint: string, tensors: ReadonlyArray<Tensor | undefined>, eps: number) {
    const gpu = yield* Gpu;
    const [rows, cols] = tensors[0]!.shape as [number, number];
    return yield* prepare({ name: "l2norm", source, entryPoint, constants: { WG: rowWorkgroup(cols) } }, {
      tensors,
      params: [["u32", rows], ["u32", cols], ["f32", eps]],
      workgroups: grid1d(gpu, rows),
    });
  },
);

/** Row-wise `y_i = x_i / max(‖x_i‖, eps)` for f32 [N, d]; `y` is a separate tensor of the same shape. */
export const l2normalize = Effect.fnUntraced(function* (x: Tensor, y: Tensor, eps: number = L2_EPS) {
  const bad = check("l2normalize", [x], y);
  if (bad !== undefined) return yield* bad;
  return yield* launch("forward", [x, undefined, undefined, y], eps);
});

/**
 * The gradient of `l2normalize`: `dx = (dy − y (y·dy)) / ‖x‖` per row, given the forward's input `x` and output `y`
 * and the output gradient `dy`. Where the clamp is active (‖x‖ < eps, e.g. a zero row) the denominator is the
 * constant eps and the exact gradient is `dx = dy / eps`, which is what this gives (as torch's autograd does).
 */
export const l2normalizeBackward = Effect.fnUntraced(
  function* (x: Tensor, y: Tensor, dy: Tensor, dx: Tensor, eps: number = L2_EPS) {
    const bad = check("l2normalizeBackward", [x, y, dy], dx);
    if (bad !== undefined) return yield* bad;
    return yield* launch("backward", [x, y, dy, dx], eps);
  },
);
