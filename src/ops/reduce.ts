import { Effect } from "effect";
import source from "../../kernels/reduce.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";

/**
 * Workgroup size of the one-workgroup-per-row kernels: the power of two at or above the row length, within [32, 256],
 * so short rows do not pay for idle invocations. A shape always gets the same size, hence the same order of summation
 * and the same bits.
 */
export const rowWorkgroup = (cols: number): number => Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(cols || 1))));

const COL_WG = 64;

export type Axis = 0 | 1;

const check2d = (kernel: string, x: Tensor) =>
  x.shape.length !== 2
    ? shapeError(kernel, `${x} must be 2-D [rows, cols]`)
    : x.dtype !== "f32"
    ? shapeError(kernel, `${x} must be f32`)
    : undefined;

const reduceSum = Effect.fnUntraced(function* (kernel: string, x: Tensor, axis: Axis, out: Tensor, mean: boolean) {
  const gpu = yield* Gpu;
  const bad = check2d(kernel, x);
  if (bad !== undefined) return yield* bad;
  const [rows, cols] = x.shape as [number, number];
  if (axis !== 0 && axis !== 1) return yield* shapeError(kernel, `axis must be 0 or 1, not ${axis}`);
  const kept = axis === 0 ? cols : rows;
  const reduced = axis === 0 ? rows : cols;
  if (out.dtype !== "f32" || out.shape.length !== 1 || out.shape[0] !== kept) {
    return yield* shapeError(kernel, `${x} over axis ${axis} gives f32 [${kept}], not ${out}`);
  }
  if (out.buffer === x.buffer) return yield* shapeError(kernel, `${out} must not share a buffer with ${x}`);
  if (mean && reduced === 0) return yield* shapeError(kernel, `the mean of ${x} over its empty axis ${axis}`);
  const params = [["u32", rows], ["u32", cols], ["f32", mean ? reduced : 1]] as const;
  if (axis === 1) {
    return yield* prepare(
      { name: "reduce", source, entryPoint: "sum_rows", constants: { WG: rowWorkgroup(cols) } },
      { tensors: [x, out], params, workgroups: grid1d(gpu, rows) },
    );
  }
  return yield* prepare(
    { name: "reduce", source, entryPoint: "sum_cols", constants: { WG: COL_WG } },
    { tensors: [x, out], params, workgroups: grid1d(gpu, Math.ceil(cols / COL_WG)) },
  );
});

/**
 * `out = Σ x` over `axis` of a 2-D f32 tensor [R, C]: axis 0 gives [C] (column sums), axis 1 gives [R] (row sums).
 * Deterministic (fixed summation order for a given shape). Uniforms: `[["u32", R], ["u32", C], ["f32", 1]]`.
 */
export const sum = (x: Tensor, axis: Axis, out: Tensor) => reduceSum("sum", x, axis, out, false);

/** `out = mean of x` over `axis` of [R, C], as `sum` then one division by the reduced length. */
export const mean = (x: Tensor, axis: Axis, out: Tensor) => reduceSum("mean", x, axis, out, true);

/**
 * `out[r] = argmax_c x[r, c]` for a 2-D f32 tensor [R, C], into u32 [R]: the first index of the maximum on ties, as
 * numpy. Rows holding NaN give an unspecified index.
 */
export const argmax = Effect.fnUntraced(function* (x: Tensor, out: Tensor) {
  const gpu = yield* Gpu;
  const bad = check2d("argmax", x);
  if (bad !== undefined) return yield* bad;
  const [rows, cols] = x.shape as [number, number];
  if (cols === 0) return yield* shapeError("argmax", `${x} has empty rows`);
  if (out.dtype !== "u32" || out.shape.length !== 1 || out.shape[0] !== rows) {
    return yield* shapeError("argmax", `${x} gives u32 [${rows}], not ${out}`);
  }
  if (out.buffer === x.buffer) return yield* shapeError("argmax", `${out} must not share a buffer with ${x}`);
  return yield* prepare(
    { name: "reduce", source, entryPoint: "argmax_rows", constants: { WG: rowWorkgroup(cols) } },
    { tensors: [x, undefined, out], params: [["u32", rows], ["u32", cols], ["f32", 1]], workgroups: grid1d(gpu, rows) },
  );
});
