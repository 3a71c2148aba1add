import { Effect } from "effect";
import source from "../../kernels/fill.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { type Dispatch, grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 256;

const words = (t: Tensor): number => t.byteLength / 4;

/** `out[i] = value` for every 32-bit word of `out` (a u32/i32 tensor gets the bits of the f32 value). */
export const fill = Effect.fnUntraced(function* (out: Tensor, value: number) {
  const gpu = yield* Gpu;
  const n = words(out);
  return yield* prepare({ name: "fill", source, entryPoint: "fill", constants: { WG } }, {
    tensors: [undefined, out],
    params: [["u32", n], ["f32", value], ["u32", 0]],
    workgroups: grid1d(gpu, Math.ceil(n / WG)),
  });
});

/** `out = x`, word for word; the two must have the same byte length. */
export const copy = Effect.fnUntraced(function* (x: Tensor, out: Tensor) {
  const gpu = yield* Gpu;
  if (x.byteLength !== out.byteLength) return yield* shapeError("copy", `${x} and ${out} differ in size`);
  const n = words(out);
  return yield* prepare({ name: "fill", source, entryPoint: "copy", constants: { WG } }, {
    tensors: [x, out],
    params: [["u32", n], ["f32", 0], ["u32", 0]],
    workgroups: grid1d(gpu, Math.ceil(n / WG)),
  });
});

/** A copy of `x` into `out` at a movable element offset (e.g. a ring buffer's write pointer). */
export interface CopyAt extends Dispatch {
  /** Moves the destination for the next recordings; `at + x.size` must stay within `out`. */
  readonly setOffset: (at: number) => void;
}

/** `out[at + i] = x[i]` over the words of `x` (a slice of `out` whose start can move every step without re-preparing). */
export const copyAt = Effect.fnUntraced(function* (x: Tensor, out: Tensor, at: number) {
  const gpu = yield* Gpu;
  const n = words(x);
  const bad = (at: number) =>
    at < 0 || at + n > words(out) ? shapeError("copyAt", `${x} at ${at} does not fit in ${out}`) : undefined;
  const invalid = bad(at);
  if (invalid !== undefined) return yield* invalid;
  const d = yield* prepare({ name: "fill", source, entryPoint: "copy_at", constants: { WG } }, {
    tensors: [x, out],
    params: [["u32", n], ["f32", 0], ["u32", at]],
    workgroups: grid1d(gpu, Math.ceil(n / WG)),
  });
  return {
    ...d,
    setOffset: (at: number) => {
      const problem = bad(at);
      if (problem !== undefined) throw problem;
      d.setParams([["u32", n], ["f32", 0], ["u32", at]]);
    },
  } satisfies CopyAt;
});
