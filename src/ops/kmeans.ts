/**
 * k-means kernels (kernels/kmeans.wgsl): assignment, objective, the radix sort by cluster, the window's record and
 * restore, accumulation, splits, norms, gathers. The host-side steps (faiss's seeded choices and split plan) are in
 * src/pcl/faiss.ts.
 *
 * Matrices are row chunks `[rows, dp]` f32 with `dp` a multiple of 4 (rows padded with zeros), read as vec4.
 */
import { Effect } from "effect";
import source from "../../kernels/kmeans.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { type Dispatch, grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";

const WG = 64;
const RADIX = 256;
/** Elements per radix block (TILES x RADIX in the kernel). */
export const RADIX_BLOCK = 4 * RADIX;
/** Rows per partial sum of the objective. */
export const OBJECTIVE_BLOCK = 256;

const spec = (entryPoint: string) => ({ name: "kmeans", source, entryPoint, constants: { WG } });

const is2d = (t: Tensor, cols: number) => t.dtype === "f32" && t.shape.length === 2 && t.shape[1] === cols;

const check = (kernel: string, ok: boolean, message: () => string) =>
  ok ? Effect.void : Effect.fail(shapeError(kernel, message()));

/** Centroid count rounded up to the 16 centroids `assign` scores at a time (the length `cnorm` needs). */
export const paddedK = (k: number): number => Math.ceil(k / 16) * 16;

/**
 * Nearest centroid of every row of `x` [rows, dp]: `labels[first + r]`, `dist[first + r]` (squared L2, clamped at
 * 0), and `counts[countBase + c] += 1` for each row (zero `counts` first). `cnorm` [paddedK(k)] holds ‖c‖².
 * 16 rows per invocation under the "register" tuning (llvmpipe), 8 elsewhere (a GPU's registers hold 8 x 16 dot
 * products without spilling); both give the same bits.
 */
export const assign = Effect.fnUntraced(function* (
  x: Tensor,
  centroids: Tensor,
  cnorm: Tensor,
  labels: Tensor,
  dist: Tensor,
  counts: Tensor,
  first: number,
  countBase: number,
) {
  const gpu = yield* Gpu;
  const [rows, dp] = x.shape as [number, number];
  const k = centroids.shape[0]!;
  yield* check(
    "kmeans.assign",
    x.dtype === "f32" && x.shape.length === 2 && dp % 4 === 0,
    () => `${x}: need f32 [rows, 4m]`,
  );
  yield* check("kmeans.assign", is2d(centroids, dp) && k > 0, () => `${centroids} must be f32 [k, ${dp}]`);
  yield* check(
    "kmeans.assign",
    cnorm.dtype === "f32" && cnorm.size >= paddedK(k),
    () => `${cnorm} must be f32 [${paddedK(k)}] (K padded to 16)`,
  );
  yield* check(
    "kmeans.assign",
    labels.dtype === "u32" && dist.dtype === "f32" && first + rows <= Math.min(labels.size, dist.size),
    () => `rows ${first}..${first + rows} do not fit ${labels} (u32) and ${dist} (f32)`,
  );
  yield* check(
    "kmeans.assign",
    counts.dtype === "u32" && countBase + k <= counts.size,
    () => `${counts} (u32) has no room for ${k} counts at ${countBase}`,
  );
  const block = gpu.tuning.matmul === "register" ? 16 : 8;
  return yield* prepare(spec(`assign${block}`), {
    tensors: [x, centroids, cnorm, labels, dist, counts],
    params: [["u32", rows], ["u32", k], ["u32", dp / 4], ["u32", first], ["u32", countBase]],
    workgroups: grid1d(gpu, Math.ceil(rows / block / WG)),
  });
});

/** `partial[b] = Σ dist[256 b .. 256 b + 255]` (in order) over the first `n` distances. */
export const objectivePartials = Effect.fnUntraced(function* (dist: Tensor, n: number, partial: Tensor) {
  const gpu = yield* Gpu;
  const blocks = Math.ceil(n / OBJECTIVE_BLOCK);
  yield* check("kmeans.objective", dist.dtype === "f32" && n <= dist.size, () => `${dist} has fewer than ${n} values`);
  yield* check(
    "kmeans.objective",
    partial.dtype === "f32" && partial.size >= blocks,
    () => `${partial} has room for fewer than ${blocks} partial sums`,
  );
  return yield* prepare(spec("objective"), {
    tensors: [dist, partial],
    params: [["u32", n]],
    workgroups: grid1d(gpu, Math.ceil(blocks / WG)),
  });
});

/** Buffers a radix sort of `n` keys needs (`keys`/`vals` twice, for ping-pong, and the histogram table). */
export interface RadixScratch {
  readonly keysA: Tensor;
  readonly valsA: Tensor;
  readonly keysB: Tensor;
  readonly valsB: Tensor;
  readonly hist: Tensor;
}

export const radixBlocks = (n: number): number => Math.max(1, Math.ceil(n / RADIX_BLOCK));
export const radixHistSize = (n: number): number => RADIX * radixBlocks(n);
/** 8-bit passes needed for keys below `k`. */
export const radixPasses = (k: number): number => Math.max(1, Math.ceil(Math.log2(Math.max(2, k)) / 8));

/**
 * A stable sort of the point indices 0..n−1 by `keys` (u32 [n], every key < k): the dispatches, and the tensor that
 * holds the sorted indices once they have run. Points of one cluster come out in increasing index.
 */
export const radixSort = Effect.fnUntraced(function* (keys: Tensor, n: number, k: number, s: RadixScratch) {
  const gpu = yield* Gpu;
  const blocks = radixBlocks(n);
  const ok = keys.dtype === "u32" && keys.size >= n &&
    [s.keysA, s.valsA, s.keysB, s.valsB].every((t) => t.dtype === "u32" && t.size >= n) &&
    s.hist.dtype === "u32" && s.hist.size >= RADIX * blocks;
  yield* check("kmeans.radix", ok, () => `keys ${keys} or scratch too small for ${n} u32 keys`);
  const scan = yield* prepare(
    { name: "kmeans", source, entryPoint: "radix_scan" },
    { tensors: [undefined, undefined, s.hist], params: [["u32", RADIX * blocks]], workgroups: [1] },
  );
  const dispatches: Dispatch[] = [];
  let inKeys = keys, inVals = s.valsB, outKeys = s.keysA, outVals = s.valsA;
  for (let pass = 0; pass < radixPasses(k); pass++) {
    const params = [["u32", n], ["u32", 8 * pass], ["u32", blocks], ["u32", pass === 0 ? 1 : 0]] as const;
    const grid = grid1d(gpu, blocks);
    dispatches.push(
      yield* prepare({ name: "kmeans", source, entryPoint: "radix_count" }, {
        tensors: [inKeys, undefined, s.hist],
        params,
        workgroups: grid,
      }),
      scan,
      yield* prepare({ name: "kmeans", source, entryPoint: "radix_scatter" }, {
        tensors: [inKeys, inVals, s.hist, outKeys, outVals],
        params,
        workgroups: grid,
      }),
    );
    [inKeys, inVals] = [outKeys, outVals];
    [outKeys, outVals] = pass % 2 === 0 ? [s.keysB, s.valsB] : [s.keysA, s.valsA];
  }
  return { dispatches, order: inVals };
});

/**
 * Centroid sums over chunk `chunk` (of `chunks`) of the training rows: `sums[c] (+)= Σ x[order[m] − first]` over
 * `m in starts[chunk·k + c] .. + sizes[chunk·k + c]`; the first chunk starts from 0, the last divides by the size.
 */
export const accumulate = Effect.fnUntraced(function* (
  x: Tensor,
  order: Tensor,
  starts: Tensor,
  sizes: Tensor,
  sums: Tensor,
  first: number,
  chunk: number,
  chunks: number,
) {
  const gpu = yield* Gpu;
  const [k, dp] = sums.shape as [number, number];
  yield* check("kmeans.accumulate", is2d(x, dp) && dp % 4 === 0, () => `${x} must be f32 [rows, ${dp}]`);
  yield* check(
    "kmeans.accumulate",
    starts.dtype === "u32" && sizes.dtype === "u32" && starts.size >= chunks * k && sizes.size >= chunks * k,
    () => `${starts} and ${sizes} must be u32 [${chunks} x ${k}]`,
  );
  return yield* prepare(spec("accumulate"), {
    tensors: [x, order, starts, sizes, sums],
    params: [["u32", k], ["u32", dp / 4], ["u32", first], ["u32", chunk], ["u32", chunks]],
    workgroups: grid1d(gpu, Math.ceil((k * dp) / 4 / WG)),
  });
});

/** Where an iteration's sizes and objective partials go in the trace, and its centroids and norms in the history. */
export interface Window {
  /** u32 [slots · (chunks·k + partials)]: per slot the cluster sizes by chunk, then the partial sums' bits. */
  readonly trace: Tensor;
  /** f32 [slots · (k·dp + paddedK(k))]: per slot the centroids, then their squared norms. */
  readonly history: Tensor;
  readonly slots: number;
}

/** Values of one slot of `Window.trace` and `Window.history`. */
export const windowSlot = (k: number, dp: number, chunks: number, partials: number) => ({
  trace: chunks * k + partials,
  history: k * dp + paddedK(k),
});

/**
 * After an iteration's assignment, before its update: `starts` [chunks·k] from the sizes (clusters in order, chunks
 * within a cluster), and the sizes, the objective's `partials` sums, the centroids and their norms into `slot`.
 */
export const record = Effect.fnUntraced(function* (
  sizes: Tensor,
  partial: Tensor,
  centroids: Tensor,
  cnorm: Tensor,
  starts: Tensor,
  window: Window,
  slot: number,
) {
  const gpu = yield* Gpu;
  const [k, dp] = centroids.shape as [number, number];
  const chunks = sizes.size / k, partials = partial.size;
  yield* check(
    "kmeans.record",
    sizes.dtype === "u32" && Number.isInteger(chunks) && starts.dtype === "u32" && starts.size >= sizes.size,
    () => `${sizes} and ${starts} must be u32 [chunks x ${k}]`,
  );
  yield* check("kmeans.record", cnorm.size === paddedK(k), () => `${cnorm} must be f32 [${paddedK(k)}]`);
  yield* check("kmeans.record", slot >= 0 && slot < window.slots, () => `slot ${slot} of ${window.slots}`);
  const per = windowSlot(k, dp, chunks, partials);
  yield* check(
    "kmeans.record",
    window.trace.dtype === "u32" && window.trace.size >= window.slots * per.trace &&
      window.history.dtype === "f32" && window.history.size >= window.slots * per.history,
    () =>
      `${window.trace} (u32) and ${window.history} (f32) need ${window.slots} slots of ${per.trace}, ${per.history}`,
  );
  const d4 = dp / 4, cnorm4 = paddedK(k) / 4;
  return yield* prepare(spec("record"), {
    tensors: [sizes, partial, centroids, cnorm, starts, window.trace, window.history],
    params: [["u32", k], ["u32", chunks], ["u32", partials], ["u32", d4], ["u32", cnorm4], ["u32", slot]],
    workgroups: grid1d(gpu, Math.ceil(Math.max(k * chunks, partials, k * d4, cnorm4) / WG)),
  });
});

/** The centroids and norms `record` kept in a slot, written back (choose the slot with `setSlot`). */
export const restore = Effect.fnUntraced(function* (window: Window, centroids: Tensor, cnorm: Tensor) {
  const gpu = yield* Gpu;
  const [k, dp] = centroids.shape as [number, number];
  yield* check("kmeans.restore", cnorm.size === paddedK(k), () => `${cnorm} must be f32 [${paddedK(k)}]`);
  const d4 = dp / 4, cnorm4 = paddedK(k) / 4;
  const params = (slot: number) => [["u32", k], ["u32", d4], ["u32", cnorm4], ["u32", slot]] as const;
  const dispatch = yield* prepare(spec("restore"), {
    tensors: [window.history, centroids, cnorm],
    params: params(0),
    workgroups: grid1d(gpu, Math.ceil(Math.max(k * d4, cnorm4) / WG)),
  });
  return {
    dispatch,
    setSlot: (slot: number) => {
      if (!(slot >= 0 && slot < window.slots)) throw new RangeError(`slot ${slot} of ${window.slots}`);
      dispatch.setParams(params(slot));
    },
  };
});

/** Applies a split plan (`plan` = pairs [empty, split], `splits` of them; change it with `setSplits`). */
export const split = Effect.fnUntraced(function* (plan: Tensor, centroids: Tensor) {
  const gpu = yield* Gpu;
  const [k, dp] = centroids.shape as [number, number];
  yield* check("kmeans.split", plan.dtype === "u32" && plan.size >= 2 * k, () => `${plan} must be u32 [${2 * k}]`);
  const d4 = dp / 4;
  const dispatch = yield* prepare(spec("split"), {
    tensors: [plan, centroids],
    params: [["u32", d4], ["u32", 0]],
    workgroups: grid1d(gpu, Math.ceil(d4 / WG)),
  });
  return { dispatch, setSplits: (splits: number) => dispatch.setParams([["u32", d4], ["u32", splits]]) };
});

/** `cnorm[c] = ‖c‖²`, after scaling each nonzero centroid to unit norm when `normalize`. */
export const norms = Effect.fnUntraced(function* (centroids: Tensor, cnorm: Tensor, normalize: boolean) {
  const gpu = yield* Gpu;
  const [k, dp] = centroids.shape as [number, number];
  yield* check("kmeans.norms", cnorm.dtype === "f32" && cnorm.size >= k, () => `${cnorm} must be f32 [${k}]`);
  return yield* prepare(spec("norms"), {
    tensors: [centroids, cnorm],
    params: [["u32", k], ["u32", dp / 4], ["u32", normalize ? 1 : 0]],
    workgroups: grid1d(gpu, Math.ceil(k / WG)),
  });
});

/**
 * `dst[r] = src[idx[idxFirst + r] − srcFirst]` for the rows whose index falls in the source chunk
 * `[srcFirst, srcFirst + src.rows)`; other rows of `dst` are left alone.
 */
export const gather = Effect.fnUntraced(function* (
  src: Tensor,
  srcFirst: number,
  idx: Tensor,
  idxFirst: number,
  dst: Tensor,
) {
  const gpu = yield* Gpu;
  const [rows, dp] = dst.shape as [number, number];
  yield* check("kmeans.gather", is2d(src, dp), () => `${src} and ${dst} must be f32 with ${dp} columns`);
  yield* check(
    "kmeans.gather",
    idx.dtype === "u32" && idxFirst + rows <= idx.size,
    () => `${idx} has no ${rows} indices at ${idxFirst}`,
  );
  return yield* prepare(spec("gather"), {
    tensors: [src, idx, dst],
    params: [["u32", rows], ["u32", dp / 4], ["u32", srcFirst], ["u32", src.shape[0]!], ["u32", idxFirst]],
    workgroups: grid1d(gpu, Math.ceil((rows * dp) / 4 / WG)),
  });
});

/** `dst` [rows, dp] = `src` [rows, d] with zero columns appended. */
export const pad = Effect.fnUntraced(function* (src: Tensor, dst: Tensor) {
  const gpu = yield* Gpu;
  const [rows, d] = src.shape as [number, number];
  const dp = dst.shape[1]!;
  yield* check("kmeans.pad", dst.shape[0] === rows && dp >= d, () => `${src} does not fit ${dst}`);
  return yield* prepare(spec("pad"), {
    tensors: [src, dst],
    params: [["u32", rows], ["u32", d], ["u32", dp]],
    workgroups: grid1d(gpu, Math.ceil((rows * dp) / WG)),
  });
});

/**
 * Counts NaN/±Inf values of `x` (any f32 tensor) into `bad[2 chunk]` and their smallest flat index into
 * `bad[2 chunk + 1]`; start `bad` as [0, 0xffffffff, 0, 0xffffffff, ...].
 */
export const nonFinite = Effect.fnUntraced(function* (x: Tensor, bad: Tensor, chunk: number) {
  const gpu = yield* Gpu;
  yield* check("kmeans.nonfinite", bad.dtype === "u32" && bad.size >= 2 * chunk + 2, () => `${bad} is too small`);
  return yield* prepare(spec("nonfinite"), {
    tensors: [x, bad],
    params: [["u32", x.size], ["u32", chunk]],
    workgroups: grid1d(gpu, Math.ceil(x.size / WG)),
  });
});
