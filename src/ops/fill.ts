import { Effect } from "effect";
import source from "../../kernels/fill.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, prepare } from "../gpu/kernel.ts";
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
    params: [["u32", n], ["f32", value]],
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
    params: [["u32", n], ["f32", 0]],
    workgroups: grid1d(gpu, Math.ceil(n / WG)),
  });
});
