import { Effect } from "effect";
import source from "../../kernels/gather.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 256;

/**
 * `out[b] = x[index[b]]` for rows: x [N, d], index u32 [B], out [B, d] of x's dtype. It copies 32-bit words, so f32,
 * u32 and i32 all work; u8 (packed four to a word) does not. Indices may repeat. An index outside [0, N) yields a row of
 * zero words: the kernel cannot fail, so keeping indices in range is the caller's duty.
 */
export const gatherRows = Effect.fnUntraced(function* (x: Tensor, index: Tensor, out: Tensor) {
  const gpu = yield* Gpu;
  if (x.shape.length !== 2 || x.dtype === "u8") {
    return yield* shapeError("gatherRows", `x ${x} must be 2-D [N, d] of a 32-bit dtype`);
  }
  const [rows, cols] = x.shape as [number, number];
  if (index.dtype !== "u32" || index.shape.length !== 1) {
    return yield* shapeError("gatherRows", `index ${index} must be u32 [B]`);
  }
  const batch = index.shape[0]!;
  if (out.dtype !== x.dtype || out.shape.length !== 2 || out.shape[0] !== batch || out.shape[1] !== cols) {
    return yield* shapeError(
      "gatherRows",
      `out ${out} must be ${x.dtype} [${batch}, ${cols}] for x ${x}, index ${index}`,
    );
  }
  if (out.buffer === x.buffer || out.buffer === index.buffer) {
    return yield* shapeError("gatherRows", `out ${out} must have a buffer of its own`);
  }
  const n = batch * cols;
  return yield* prepare({ name: "gather", source, entryPoint: "gather_rows", constants: { WG } }, {
    tensors: [x, index, out],
    params: [["u32", rows], ["u32", cols], ["u32", n]],
    workgroups: grid1d(gpu, Math.ceil(n / WG)),
  });
});
