import { Effect } from "effect";
import source from "../../kernels/topk.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { type Dispatch, grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** The largest k the kernel keeps (its private heap's size). */
export const TOPK_MAX = 256;
/** The value of an empty output slot (a row with fewer than k candidates): the lowest finite f32. */
export const TOPK_LOWEST = -3.4028234663852886e38;
/** The index of an empty output slot. */
export const TOPK_NONE = 0xffffffff;
/**
 * Candidates one launch scans per row. llvmpipe stops every loop of an invocation after 65535 loop trips in all, so
 * a longer row is scanned in runs of this length, each launch resuming from the heap the previous one left (see
 * kernels/topk.wgsl). Worst case per run on a SIMD width of 16: 16 scan trips per candidate position plus 11 for a
 * heap update, 27 x 1536 ≈ 41,500 trips, and ~3,000 for filling, sorting and writing a heap of 256.
 */
export const TOPK_RUN = 1536;

const WG = 64;

export interface TopkOptions {
  /**
   * Candidates stored column-wise: `values` is [L, rows], row r's candidates down column r (the layout of
   * bank · queriesᵀ, which neighbouring invocations read coalesced). Default: `values` is [rows, L].
   */
  readonly columns?: boolean;
  /** Candidate l's index is base + l (default 0), unless `indices` gives each candidate's index. */
  readonly base?: number;
  /** u32 of `values`' shape: each candidate's index (for merging candidate lists). */
  readonly indices?: Tensor;
  /** Write into columns [outColumn, outColumn + k) of the outputs (default 0): they may be wider than k. */
  readonly outColumn?: number;
  /**
   * Continue from the selection already in the outputs (written by a topk with `sorted: false` or sorted), so that
   * candidates arriving in pieces (bank chunks) are selected together. Default false: start empty.
   */
  readonly resume?: boolean;
  /** Sort the output best first (default true); false leaves it as a heap, to be resumed. */
  readonly sorted?: boolean;
}

/**
 * The k best candidates of every row: the largest values, ties broken by the smaller index, so the result is
 * deterministic; sorted best first unless `sorted: false`. `outValues` f32 and `outIndices` u32 are [rows, W] with
 * outColumn + k ≤ W. A row with fewer than k candidates keeps empty entries (`TOPK_LOWEST`, `TOPK_NONE`) at the end;
 * values that are not >= TOPK_LOWEST (NaN, −inf) never enter. k ≤ `TOPK_MAX`. A row longer than `TOPK_RUN` takes
 * several launches, recorded as one dispatch.
 */
export const topk = Effect.fnUntraced(function* (
  values: Tensor,
  k: number,
  outValues: Tensor,
  outIndices: Tensor,
  options: TopkOptions = {},
) {
  const gpu = yield* Gpu;
  const { columns = false, base = 0, indices, outColumn = 0, resume = false, sorted = true } = options;
  const fail = (message: string) => shapeError("topk", message);
  if (values.dtype !== "f32" || values.shape.length !== 2) return yield* fail(`values ${values} must be 2-D f32`);
  const [a, b] = values.shape as [number, number];
  const [rows, len] = columns ? [b, a] : [a, b];
  if (rows === 0 || len === 0) return yield* fail(`values ${values} hold no candidates`);
  if (!Number.isInteger(k) || k < 1 || k > TOPK_MAX) {
    return yield* fail(`k = ${k} must be an integer in 1..${TOPK_MAX}`);
  }
  if (indices !== undefined && (indices.dtype !== "u32" || indices.size !== values.size)) {
    return yield* fail(`indices ${indices} must be u32 of the shape of values ${values}`);
  }
  for (const [name, t, dtype] of [["outValues", outValues, "f32"], ["outIndices", outIndices, "u32"]] as const) {
    if (t.dtype !== dtype || t.shape.length !== 2 || t.shape[0] !== rows || t.shape[1]! < outColumn + k) {
      return yield* fail(`${name} ${t} must be ${dtype} [${rows}, >= ${outColumn + k}] for values ${values}`);
    }
  }
  if (!Number.isInteger(base) || base < 0 || base + len > TOPK_NONE) return yield* fail(`base ${base}`);
  const written = [outValues.buffer, outIndices.buffer];
  if (outValues.buffer === outIndices.buffer || [values, indices].some((t) => t && written.includes(t.buffer))) {
    return yield* fail(`outValues ${outValues} and outIndices ${outIndices} need buffers of their own`);
  }
  const [strideLen, strideRow] = columns ? [rows, 1] : [1, len];
  const runs = Math.max(1, Math.ceil(len / TOPK_RUN));
  const launches: Dispatch[] = [];
  for (let s = 0; s < runs; s++) {
    launches.push(
      yield* prepare({ name: "topk", source, entryPoint: "select_topk", constants: { WG } }, {
        // Without explicit indices the kernel never reads binding 1; `values` stands in (read-only twice is allowed).
        tensors: [values, indices ?? values, outValues, outIndices],
        params: [
          ["u32", rows],
          ["u32", Math.min(TOPK_RUN, len - s * TOPK_RUN)],
          ["u32", strideLen],
          ["u32", strideRow],
          ["u32", s * TOPK_RUN * strideLen],
          ["u32", base + s * TOPK_RUN],
          ["u32", k],
          ["u32", outValues.shape[1]!],
          ["u32", outColumn],
          ["u32", indices === undefined ? 0 : 1],
          ["u32", s > 0 || resume ? 1 : 0],
          ["u32", s === runs - 1 && sorted ? 1 : 0],
        ],
        workgroups: grid1d(gpu, Math.ceil(rows / WG)),
      }),
    );
  }
  if (launches.length === 1) return launches[0]!;
  return {
    kernel: "topk",
    record: (pass) => {
      for (const d of launches) d.record(pass);
    },
    setParams: () => {
      throw new Error("topk: a selection of several runs has no parameters to set");
    },
  } satisfies Dispatch;
});
