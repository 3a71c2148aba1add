/**
 * Weighted kNN classification as InstDisc (Wu et al. 2018) and the MoCo/PCL monitors run it: bank = training features,
 * queries = test features, both L2-normalised; cosine similarity; the k most similar bank rows vote for their class
 * with weight exp(sim / T) (T = 0.07); the prediction is the class with the largest total.
 *
 * On the GPU, per chunk of Q queries: similarities S = bank · queriesᵀ [Nb, Q] (one matmul per bank chunk), then the
 * top k of each column (kernels/topk.wgsl: one invocation per query reading S coalesced, keeping a heap that carries
 * over from one bank chunk to the next). Only the [Q, k] neighbours come back; the full 10,000 x 60,000 similarity
 * matrix (2.4 GB) never exists. The vote is a few million exps on the host, in float64.
 *
 * Neighbours are ordered by similarity, ties by the smaller bank index; the vote's ties go to the smaller class. Both
 * are deterministic, and one top-k pass at the largest k serves every smaller k (a prefix of the same order).
 */
import { Effect } from "effect";
import { Gpu } from "../gpu/gpu.ts";
import { alloc, type Dispatch, validated } from "../gpu/kernel.ts";
import { GpuDeviceLost, type GpuError, type ShapeError, shapeError } from "../gpu/errors.ts";
import { Tensor } from "../gpu/tensor.ts";
import { matmul } from "../ops/matmul.ts";
import { topk, TOPK_MAX, TOPK_NONE } from "../ops/topk.ts";
import type { Matrix } from "../io/matrix.ts";
import { top1 } from "./metrics.ts";

export interface NeighbourOptions {
  /** Queries per chunk (a multiple of 64); default: as many as keep S within `budgetBytes`, at most 4096. */
  readonly queryChunk?: number;
  /** Bank rows per chunk; default: as many as the binding limit and `budgetBytes` allow. For tests. */
  readonly bankChunk?: number;
  /** Bytes of the similarity buffer S (default 64 MiB, within the device's storage binding limit). */
  readonly budgetBytes?: number;
}

export interface KnnOptions extends NeighbourOptions {
  /** Neighbour counts (default [20, 200]); each at most 256. */
  readonly ks?: readonly number[];
  /** Vote weight exp(sim / temperature) (default 0.07, InstDisc's). */
  readonly temperature?: number;
  /** Number of classes (default: the largest bank label + 1). */
  readonly classes?: number;
}

/** The k nearest bank rows of every query, best first: [queries, k], row-major. */
export interface Neighbours {
  readonly k: number;
  /** Bank row indices; `TOPK_NONE` where the bank has fewer than k rows. */
  readonly indices: Uint32Array<ArrayBuffer>;
  /** Cosine similarities (f32, as the GPU computed them). */
  readonly similarities: Float32Array<ArrayBuffer>;
}

export interface KnnAccuracy {
  readonly k: number;
  readonly top1: number;
  readonly predictions: Int32Array<ArrayBuffer>;
}

export const DEFAULT_KS = [20, 200] as const;
export const KNN_TEMPERATURE = 0.07;
const DEFAULT_BUDGET = 64 * 2 ** 20;
const MAX_QUERY_CHUNK = 4096;

/**
 * Rows L2-normalised in float64 (x / max(‖x‖, 1e-12), as F.normalize) and padded with zeros to `dp` columns, rows
 * [first, first + rows) of `m`, into a new f32 array of `padRows` rows (zeros beyond).
 */
const normalisedRows = (m: Matrix, first: number, rows: number, dp: number, padRows = rows) => {
  const d = m.shape[1];
  const out = new Float32Array(padRows * dp);
  for (let r = 0; r < rows; r++) {
    const row = m.data.subarray((first + r) * d, (first + r + 1) * d);
    let s = 0;
    for (const v of row) s += v * v;
    const scale = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < d; j++) out[r * dp + j] = row[j]! * scale;
  }
  return out;
};

const checkMatrix = (what: string, m: Matrix) => {
  const [n, d] = m.shape;
  if (!(Number.isInteger(n) && Number.isInteger(d) && n > 0 && d > 0) || m.data.length !== n * d) {
    return shapeError("knn", `${what}: ${m.data.length} values in shape [${m.shape}], need a non-empty N x d matrix`);
  }
  for (let i = 0; i < m.data.length; i++) {
    if (!Number.isFinite(m.data[i])) {
      return shapeError("knn", `${what}: non-finite value at row ${Math.floor(i / d)}, column ${i % d}`);
    }
  }
  return undefined;
};

/**
 * The k nearest bank rows (cosine similarity) of every query, on the GPU. Rows of both are L2-normalised here, so raw
 * features can be passed. k ≤ 256.
 */
export const nearestNeighbours = (
  bank: Matrix,
  queries: Matrix,
  k: number,
  options: NeighbourOptions = {},
): Effect.Effect<Neighbours, GpuError | ShapeError, Gpu> =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const bad = checkMatrix("bank", bank) ?? checkMatrix("queries", queries);
    if (bad !== undefined) return yield* bad;
    const [nb, d] = bank.shape, [nq, dq] = queries.shape;
    if (d !== dq) return yield* shapeError("knn", `bank rows have ${d} features, queries ${dq}`);
    if (!Number.isInteger(k) || k < 1 || k > TOPK_MAX) return yield* shapeError("knn", `k = ${k}: need 1..${TOPK_MAX}`);
    const dp = Math.ceil(d / 4) * 4; // vec4 matmul
    const limit = gpu.limits.maxStorageBufferBindingSize;
    const budget = Math.min(options.budgetBytes ?? DEFAULT_BUDGET, limit);
    // Bank chunk: its rows within the binding limit, and S for the smallest query chunk (64) within the budget.
    const bankChunk = Math.min(nb, options.bankChunk ?? nb, Math.floor(limit / (dp * 4)), Math.floor(budget / 256));
    if (!(bankChunk >= 1)) return yield* shapeError("knn", `bankChunk ${options.bankChunk}`);
    const chunks = Math.ceil(nb / bankChunk);
    const q = options.queryChunk ??
      Math.max(64, Math.min(MAX_QUERY_CHUNK, Math.ceil(nq / 64) * 64, Math.floor(budget / (bankChunk * 4) / 64) * 64));
    if (!(Number.isInteger(q) && q >= 64 && q % 64 === 0)) {
      return yield* shapeError("knn", `queryChunk ${q} must be a positive multiple of 64`);
    }
    const buffers: GPUBuffer[] = [];
    const take = <D extends "f32" | "u32">(shape: readonly number[], dtype: D, label: string) =>
      alloc(shape, dtype, `knn ${label}`).pipe(Effect.tap((t) => Effect.sync(() => buffers.push(t.buffer))));
    return yield* Effect.gen(function* () {
      const bankParts: Tensor[] = [];
      for (let c = 0; c < chunks; c++) {
        const first = c * bankChunk, rows = Math.min(bankChunk, nb - first);
        const t = yield* take([rows, dp], "f32", `bank ${first}`);
        gpu.write(t, normalisedRows(bank, first, rows, dp));
        bankParts.push(t);
      }
      const query = yield* take([q, dp], "f32", "queries");
      const sims = yield* take([bankChunk, q], "f32", "similarities");
      const topV = yield* take([q, k], "f32", "top values");
      const topI = yield* take([q, k], "u32", "top indices");
      // Each bank chunk's similarities, then its candidates into the selection so far (the first chunk starts it,
      // the last sorts it).
      const dispatches: Dispatch[] = [];
      for (const [c, part] of bankParts.entries()) {
        const s = new Tensor(sims.buffer, [part.shape[0]!, q], "f32");
        dispatches.push(yield* matmul(part, query, s, { transB: true }));
        dispatches.push(
          yield* topk(s, k, topV, topI, {
            columns: true,
            base: c * bankChunk,
            resume: c > 0,
            sorted: c === chunks - 1,
          }),
        );
      }
      // Every chunk is submitted without waiting: the queue orders each chunk's query upload after the previous
      // chunk's readback copy. Only the [q, k] results come back.
      const pending = yield* validated(
        "knn",
        Effect.sync(() => {
          const out: Array<() => Promise<[Float32Array, Uint32Array]>> = [];
          for (let first = 0; first < nq; first += q) {
            const rows = Math.min(q, nq - first);
            gpu.write(query, normalisedRows(queries, first, rows, dp, q));
            const enc = gpu.device.createCommandEncoder({ label: "knn" });
            const pass = enc.beginComputePass({ label: "knn" });
            for (const d of dispatches) d.record(pass);
            pass.end();
            const v = gpu.readAfter(enc, topV), i = gpu.readAfter(enc, topI);
            gpu.device.queue.submit([enc.finish()]);
            out.push(() => Promise.all([v(), i()]));
          }
          return out;
        }),
      );
      const parts = yield* gpu.guard(Effect.tryPromise({
        try: () => Promise.all(pending.map((p) => p())),
        catch: (e) => e instanceof GpuDeviceLost ? e : new GpuDeviceLost({ reason: "unknown", message: String(e) }),
      }));
      const indices = new Uint32Array(nq * k), similarities = new Float32Array(nq * k);
      parts.forEach(([v, i], c) => {
        const rows = Math.min(q, nq - c * q);
        similarities.set(v.subarray(0, rows * k), c * q * k);
        indices.set(i.subarray(0, rows * k), c * q * k);
      });
      return { k, indices, similarities } satisfies Neighbours;
    }).pipe(Effect.ensuring(Effect.sync(() => buffers.forEach((b) => b.destroy()))));
  });

/**
 * The weighted vote of the first k neighbours of every query (k ≤ neighbours.k): class scores Σ exp(sim / T) in
 * float64, the prediction the largest score, ties to the smaller class.
 */
export const vote = (
  neighbours: Neighbours,
  bankLabels: ArrayLike<number>,
  k: number,
  classes: number,
  temperature = KNN_TEMPERATURE,
): Int32Array<ArrayBuffer> => {
  if (k > neighbours.k) throw new RangeError(`vote over ${k} neighbours, only ${neighbours.k} were found`);
  const nq = neighbours.indices.length / neighbours.k;
  const predictions = new Int32Array(nq);
  const scores = new Float64Array(classes);
  for (let r = 0; r < nq; r++) {
    scores.fill(0);
    for (let j = 0; j < k; j++) {
      const at = r * neighbours.k + j;
      const i = neighbours.indices[at]!;
      if (i === TOPK_NONE) break; // fewer bank rows than k
      const label = bankLabels[i]!;
      if (!(label >= 0 && label < classes)) throw new RangeError(`bank label ${label} outside 0..${classes - 1}`);
      scores[label]! += Math.exp(neighbours.similarities[at]! / temperature);
    }
    let best = 0;
    for (let c = 1; c < classes; c++) if (scores[c]! > scores[best]!) best = c;
    predictions[r] = best;
  }
  return predictions;
};

/** Weighted kNN top-1 accuracy of the queries for each k (default k = 20 and 200, T = 0.07). */
export const knnClassify = (
  bank: Matrix,
  bankLabels: ArrayLike<number>,
  queries: Matrix,
  queryLabels: ArrayLike<number>,
  options: KnnOptions = {},
): Effect.Effect<ReadonlyArray<KnnAccuracy>, GpuError | ShapeError, Gpu> =>
  Effect.gen(function* () {
    const ks = options.ks ?? DEFAULT_KS;
    if (ks.length === 0) return yield* shapeError("knn", "no k given");
    if (bankLabels.length !== bank.shape[0] || queryLabels.length !== queries.shape[0]) {
      return yield* shapeError(
        "knn",
        `labels (${bankLabels.length} bank, ${queryLabels.length} queries) do not match the rows ` +
          `(${bank.shape[0]} bank, ${queries.shape[0]} queries)`,
      );
    }
    let maxLabel = -1, minLabel = 0;
    for (let i = 0; i < bankLabels.length; i++) {
      maxLabel = Math.max(maxLabel, bankLabels[i]!);
      minLabel = Math.min(minLabel, bankLabels[i]!);
    }
    const classes = options.classes ?? maxLabel + 1;
    if (maxLabel >= classes || minLabel < 0) {
      return yield* shapeError("knn", `bank labels span ${minLabel}..${maxLabel}, outside 0..${classes - 1}`);
    }
    const neighbours = yield* nearestNeighbours(bank, queries, Math.max(...ks), options);
    return ks.map((k) => {
      const predictions = vote(neighbours, bankLabels, k, classes, options.temperature ?? KNN_TEMPERATURE);
      return { k, top1: top1(queryLabels, predictions), predictions };
    });
  });
