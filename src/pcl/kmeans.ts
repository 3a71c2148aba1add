/**
 * (Over 400 lines: the faiss-exact driver is kept whole, rows → buffers → restarts → final pass, each a short
 * function; its kernels are in src/ops/kmeans.ts and its seeded host choices in ./faiss.ts.)
 *
 * The E-step's k-means (`cluster` stage): for each K, faiss's k-means as PCL runs it (docs/algorithm.md §3), on the
 * GPU. Per restart: K distinct data points of a seeded permutation as initial centroids, then `niter` Lloyd
 * iterations, each one: assign every training point to its nearest centroid, add up the objective, recompute the
 * means, split empty clusters. The restart with the lowest final objective wins; one last assignment pass over all
 * points then gives `im2cluster` and each point's squared distance to its (unnormalised) centroid.
 *
 * Readbacks: the empty-cluster split is planned on the host (faiss's sequential random scan), so the host must see
 * every iteration's cluster sizes. An awaited readback costs at least 10 ms in Deno (its map waits for the device,
 * then sleeps 10 ms), more than a whole iteration at PCL's sizes, so iterations run in windows: one submit runs
 * several, each updated as if no cluster were empty, and records its sizes, objective and centroids; one readback then
 * checks them in order. Up to the first iteration that has an empty cluster, that is exactly faiss's run; from there the window
 * is rewound (its centroids restored, its assignment and its update redone with the split plan) and the next window
 * runs one iteration, doubling while no split comes. Without empty clusters a restart is one readback.
 */
import { Effect, Schema } from "effect";
import { Gpu } from "../gpu/gpu.ts";
import { alloc, type Dispatch, submitAndRead } from "../gpu/kernel.ts";
import type { GpuError, ShapeError } from "../gpu/errors.ts";
import { type DType, type HostArray, Tensor } from "../gpu/tensor.ts";
import { fill } from "../ops/fill.ts";
import * as K from "../ops/kmeans.ts";
import * as F from "./faiss.ts";
import type { Matrix } from "../io/matrix.ts";

/** Features to cluster: N x d f32, on the GPU or on the host. PCL's rows are L2-normalised; k-means does not care. */
export type Features = Tensor | Matrix;

export class KMeansError extends Schema.TaggedError<KMeansError>()("KMeansError", {
  message: Schema.String,
}) {}

export interface KMeansOptions {
  /** Lloyd iterations per restart (PCL: 20). */
  readonly niter?: number;
  /** Restarts, keeping the lowest final objective (PCL: 5). */
  readonly nredo?: number;
  /** Seeds the training subsample (this seed) and restart t's initial points (seed + 1 + 15486557 t), as faiss. */
  readonly seed?: number;
  /** Train on a random K · this many points when N is larger (PCL: 1000). */
  readonly maxPointsPerCentroid?: number;
  /** Normalise the centroids after every update (faiss's `spherical`; PCL leaves it off). */
  readonly spherical?: boolean;
  /** At most this many rows per GPU binding (chunks are also cut at the device's binding limit). For tests. */
  readonly chunkRows?: number;
  /** Initial centroids, K x d, instead of random data points (every restart then starts from them). */
  readonly init?: Float32Array;
  /** At most this many iterations per submit and readback (default: as many as 32 MiB of history holds). For tests. */
  readonly window?: number;
}

export interface ClusterOptions extends Omit<KMeansOptions, "init" | "seed"> {
  readonly ks: ReadonlyArray<number>;
  /** The K at position i of `ks` uses seed + i (PCL: 0, 1, 2). */
  readonly seed?: number;
}

/** One K's result. */
export interface Clustering {
  readonly k: number;
  readonly seed: number;
  /** K x d, the k-means means (not normalised, unless spherical). */
  readonly centroids: Float32Array<ArrayBuffer>;
  /** K x d, the centroids L2-normalised: PCL's prototypes c. */
  readonly prototypes: Float32Array<ArrayBuffer>;
  /** N, the cluster of every point from the final assignment pass. */
  readonly im2cluster: Int32Array<ArrayBuffer>;
  /** N, squared Euclidean distance of every point to its centroid (faiss's D). */
  readonly distances: Float32Array<ArrayBuffer>;
  /** faiss's objective: Σ squared distances of the training points at the last iteration of the best restart. */
  readonly objective: number;
  /** The objective at every iteration of the best restart. */
  readonly objectives: ReadonlyArray<number>;
  /** Empty clusters split at every iteration of the best restart. */
  readonly splits: ReadonlyArray<number>;
  readonly restartObjectives: ReadonlyArray<number>;
  readonly bestRestart: number;
  /** Points k-means was trained on (N, or K · maxPointsPerCentroid when subsampled). */
  readonly trainingPoints: number;
}

export interface Clusterings {
  readonly n: number;
  readonly d: number;
  readonly clusterings: ReadonlyArray<Clustering>;
}

/** PCL's settings (docs/algorithm.md §3). */
export const PCL_KMEANS = { niter: 20, nredo: 5, maxPointsPerCentroid: 1000, seed: 0, spherical: false } as const;

type Failure = KMeansError | GpuError | ShapeError;

// ---------------------------------------------------------------------------------------------------------------
// Row chunks: the features as [rows, dp] f32 pieces, each within the device's storage binding limit, with dp the
// width padded to a multiple of 4 (zeros) so that kernels read vec4.

interface Chunk {
  readonly first: number;
  readonly rows: number;
  readonly x: Tensor;
}

interface Rows {
  readonly n: number;
  readonly d: number;
  readonly dp: number;
  readonly chunks: ReadonlyArray<Chunk>;
}

/** Buffers one k-means allocated, destroyed when its scope closes (however it ends): see `pool`. */
class Pool {
  private readonly buffers: GPUBuffer[] = [];

  alloc<D extends DType>(shape: readonly number[], dtype: D, label: string) {
    return alloc(shape, dtype, `kmeans ${label}`).pipe(
      Effect.tap((t) => Effect.sync(() => this.buffers.push(t.buffer))),
    );
  }

  upload<D extends DType>(data: HostArray<D>, dtype: D, label: string) {
    return Effect.gen({ self: this }, function* () {
      const t = yield* this.alloc([data.length], dtype, label);
      (yield* Gpu).write(t, data);
      return t;
    });
  }

  readonly release = Effect.sync(() => {
    for (const b of this.buffers.splice(0)) b.destroy();
  });
}

/** A pool for the enclosing scope. */
const pool = Effect.acquireRelease(Effect.sync(() => new Pool()), (p) => p.release);

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

const spans = (n: number, per: number) =>
  Array.from({ length: Math.ceil(n / per) }, (_, i) => ({ first: i * per, rows: Math.min(per, n - i * per) }));

/** Rows per chunk: within the binding limit and `chunkRows`; a multiple of `align` rows when chunks are views. */
const rowsPerChunk = (gpu: Gpu["Service"], dp: number, chunkRows: number | undefined, align = 1) => {
  let rows = Math.floor(gpu.limits.maxStorageBufferBindingSize / (dp * 4));
  if (chunkRows !== undefined) rows = Math.min(rows, chunkRows);
  return Math.max(align, rows - (rows % align));
};

const finiteError = (count: number, flat: number, d: number) =>
  new KMeansError({
    message: `features contain ${count} non-finite value${count === 1 ? "" : "s"} (NaN or ±Inf); the first is at ` +
      `row ${Math.floor(flat / d)}, column ${flat % d}`,
  });

const fromHost = (m: Matrix, chunkRows: number | undefined, pool: Pool) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const [n, d] = m.shape;
    if (m.data.length !== n * d) {
      return yield* new KMeansError({ message: `features: ${m.data.length} values do not fill [${n}, ${d}]` });
    }
    let bad = 0, firstBad = -1;
    for (let i = 0; i < m.data.length; i++) {
      if (!Number.isFinite(m.data[i])) {
        if (bad++ === 0) firstBad = i;
      }
    }
    if (bad > 0) return yield* finiteError(bad, firstBad, d);
    const dp = Math.ceil(d / 4) * 4;
    const chunks: Chunk[] = [];
    for (const { first, rows } of spans(n, rowsPerChunk(gpu, dp, chunkRows))) {
      const x = yield* pool.alloc([rows, dp], "f32", `features ${first}`);
      const part = m.data.subarray(first * d, (first + rows) * d);
      if (dp === d) gpu.write(x, part);
      else {
        const padded = new Float32Array(rows * dp);
        for (let r = 0; r < rows; r++) padded.set(part.subarray(r * d, (r + 1) * d), r * dp);
        gpu.write(x, padded);
      }
      chunks.push({ first, rows, x });
    }
    return { n, d, dp, chunks } satisfies Rows;
  });

/** Views of a GPU tensor (padded into new chunks when d is not a multiple of 4), after a check for NaN/Inf. */
const fromDevice = (t: Tensor, chunkRows: number | undefined, pool: Pool) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    if (t.dtype !== "f32" || t.shape.length !== 2) {
      return yield* new KMeansError({ message: `features ${t} must be a 2-D f32 tensor [N, d]` });
    }
    const [n, d] = t.shape as [number, number];
    const dp = Math.ceil(d / 4) * 4;
    const alignment = gpu.limits.minStorageBufferOffsetAlignment;
    if (t.offset % alignment !== 0) {
      return yield* new KMeansError({
        message: `features ${t} start at byte ${t.offset}, not a multiple of ${alignment}`,
      });
    }
    const per = rowsPerChunk(gpu, dp, chunkRows, alignment / gcd(d * 4, alignment));
    const views = spans(n, per).map(({ first, rows }) => ({
      first,
      rows,
      x: rows === n ? t : new Tensor(t.buffer, [rows, d], "f32", t.offset + first * d * 4),
    }));
    const bad = yield* pool.alloc([2 * views.length], "u32", "nonfinite");
    gpu.write(bad, new Uint32Array(views.flatMap(() => [0, 0xffffffff])));
    const checks: Dispatch[] = [];
    for (const [i, v] of views.entries()) checks.push(yield* K.nonFinite(v.x, bad, i));
    const chunks: Chunk[] = dp === d ? views : [];
    const pads: Dispatch[] = [];
    if (dp !== d) {
      for (const v of views) {
        const x = yield* pool.alloc([v.rows, dp], "f32", `features ${v.first}`);
        pads.push(yield* K.pad(v.x, x));
        chunks.push({ first: v.first, rows: v.rows, x });
      }
    }
    const found = yield* submitAndRead({ dispatches: [...checks, ...pads], reads: [bad] });
    const [counts] = found as [Uint32Array];
    const total = views.reduce((s, _, i) => s + counts[2 * i]!, 0);
    if (total > 0) {
      const i = views.findIndex((_, i) => counts[2 * i]! > 0);
      return yield* finiteError(total, views[i]!.first * d + counts[2 * i + 1]!, d);
    }
    return { n, d, dp, chunks } satisfies Rows;
  });

const prepareRows = (features: Features, chunkRows: number | undefined, pool: Pool) =>
  Effect.gen(function* () {
    const [n, d] = features.shape;
    if (features.shape.length !== 2 || !(n! > 0 && d! > 0)) {
      return yield* new KMeansError({ message: `features must be a non-empty N x d matrix, not [${features.shape}]` });
    }
    return yield* (features instanceof Tensor
      ? fromDevice(features, chunkRows, pool)
      : fromHost(features, chunkRows, pool));
  });

// ---------------------------------------------------------------------------------------------------------------

interface Resolved {
  readonly niter: number;
  readonly nredo: number;
  readonly seed: number;
  readonly maxPointsPerCentroid: number;
  readonly spherical: boolean;
  readonly chunkRows: number | undefined;
  readonly window: number | undefined;
}

/** Bytes of centroids and norms a window keeps to rewind to (bounds the iterations per submit at large K x d). */
const HISTORY_BYTES = 32 * 2 ** 20;

const resolve = (o: KMeansOptions | ClusterOptions): Effect.Effect<Resolved, KMeansError> => {
  const r: Resolved = {
    niter: o.niter ?? PCL_KMEANS.niter,
    nredo: o.nredo ?? PCL_KMEANS.nredo,
    seed: o.seed ?? PCL_KMEANS.seed,
    maxPointsPerCentroid: o.maxPointsPerCentroid ?? PCL_KMEANS.maxPointsPerCentroid,
    spherical: o.spherical ?? PCL_KMEANS.spherical,
    chunkRows: o.chunkRows,
    window: o.window,
  };
  const bad = !Number.isInteger(r.niter) || r.niter < 0
    ? `niter must be an integer >= 0, not ${r.niter}`
    : !Number.isInteger(r.nredo) || r.nredo < 1
    ? `nredo must be an integer >= 1, not ${r.nredo}`
    : !Number.isSafeInteger(r.seed) || r.seed < 0
    ? `seed must be a non-negative integer, not ${r.seed}`
    : !Number.isInteger(r.maxPointsPerCentroid) || r.maxPointsPerCentroid < 1
    ? `maxPointsPerCentroid must be an integer >= 1, not ${r.maxPointsPerCentroid}`
    : r.chunkRows !== undefined && (!Number.isInteger(r.chunkRows) || r.chunkRows < 1)
    ? `chunkRows must be an integer >= 1, not ${r.chunkRows}`
    : r.window !== undefined && (!Number.isInteger(r.window) || r.window < 1)
    ? `window must be an integer >= 1, not ${r.window}`
    : undefined;
  return bad === undefined ? Effect.succeed(r) : Effect.fail(new KMeansError({ message: `k-means: ${bad}` }));
};

const checkK = (k: number, n: number, d: number, gpu: Gpu["Service"]) => {
  const dp = Math.ceil(d / 4) * 4;
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const message = !Number.isInteger(k)
    ? `K must be an integer, not ${k}`
    : k < 2
    ? `K = ${k}: k-means needs at least 2 clusters`
    : k > n
    ? `K = ${k} exceeds the ${n} points to cluster`
    : k * dp * 4 > limit
    ? `K = ${k} centroids of ${d} floats take ${k * dp * 4} bytes, over the device's storage binding limit ${limit}`
    : undefined;
  return message === undefined ? Effect.void : Effect.fail(new KMeansError({ message }));
};

/** The rows k-means trains on: every row, or faiss's seeded subsample gathered into chunks of its own. */
const trainingSet = (data: Rows, k: number, o: Resolved, pool: Pool) =>
  Effect.gen(function* () {
    const sample = F.trainingRows(data.n, k, o.maxPointsPerCentroid, o.seed);
    if (sample === undefined) return data;
    const gpu = yield* Gpu;
    const idx = yield* pool.upload(sample, "u32", "sample");
    const chunks: Chunk[] = [];
    const gathers: Dispatch[] = [];
    for (const { first, rows } of spans(sample.length, rowsPerChunk(gpu, data.dp, o.chunkRows))) {
      const x = yield* pool.alloc([rows, data.dp], "f32", `training ${first}`);
      for (const src of data.chunks) gathers.push(yield* K.gather(src.x, src.first, idx, first, x));
      chunks.push({ first, rows, x });
    }
    yield* submitAndRead({ dispatches: gathers });
    return { n: sample.length, d: data.d, dp: data.dp, chunks } satisfies Rows;
  });

/**
 * The buffers and dispatches of one K, recorded once: `initialise` (the restart's initial points, then norms),
 * `assign` (nearest centroids, objective partials, the sort by cluster), `record[s]` (starts, and the iteration into
 * slot s of the window), `update` (means, norms), `splitUpdate` (means, splits, norms), `restore` and `search` (the
 * final assignment of all rows).
 */
const program = (data: Rows, train: Rows, k: number, o: Resolved, init: Float32Array | undefined, pool: Pool) =>
  Effect.gen(function* () {
    const nTrain = train.n, chunksT = train.chunks.length, { dp } = data;
    const cent = yield* pool.alloc([k, dp], "f32", "centroids");
    const best = o.nredo > 1 ? yield* pool.alloc([k, dp], "f32", "best centroids") : cent;
    const cnorm = yield* pool.alloc([K.paddedK(k)], "f32", "centroid norms");
    const labels = yield* pool.alloc([nTrain], "u32", "labels");
    const dist = yield* pool.alloc([nTrain], "f32", "distances");
    const counts = yield* pool.alloc([Math.max(chunksT, data.chunks.length) * k], "u32", "counts");
    const countsT = new Tensor(counts.buffer, [chunksT * k], "u32");
    const starts = yield* pool.alloc([chunksT * k], "u32", "starts");
    const plan = yield* pool.alloc([2 * k], "u32", "split plan");
    const partials = Math.ceil(nTrain / K.OBJECTIVE_BLOCK);
    const partial = yield* pool.alloc([partials], "f32", "objective");
    const slot = K.windowSlot(k, dp, chunksT, partials);
    const slots = Math.max(1, Math.min(o.niter, o.window ?? Math.floor(HISTORY_BYTES / (4 * slot.history))));
    const window: K.Window = {
      trace: yield* pool.alloc([slots * slot.trace], "u32", "trace"),
      history: yield* pool.alloc([slots * slot.history], "f32", "history"),
      slots,
    };
    const initRows = yield* pool.alloc([k], "u32", "initial rows");
    const scratch: K.RadixScratch = {
      keysA: yield* pool.alloc([nTrain], "u32", "keys A"),
      valsA: yield* pool.alloc([nTrain], "u32", "order A"),
      keysB: yield* pool.alloc([nTrain], "u32", "keys B"),
      valsB: yield* pool.alloc([nTrain], "u32", "order B"),
      hist: yield* pool.alloc([K.radixHistSize(nTrain)], "u32", "radix histogram"),
    };

    const zero = yield* fill(counts, 0);
    const normsPost = yield* K.norms(cent, cnorm, o.spherical);
    const initialise: Dispatch[] = [];
    if (init === undefined) {
      for (const ch of train.chunks) initialise.push(yield* K.gather(ch.x, ch.first, initRows, 0, cent));
    }
    initialise.push(normsPost);
    const assign: Dispatch[] = [zero];
    for (const [j, ch] of train.chunks.entries()) {
      assign.push(yield* K.assign(ch.x, cent, cnorm, labels, dist, counts, ch.first, j * k));
    }
    assign.push(yield* K.objectivePartials(dist, nTrain, partial));
    const sort = yield* K.radixSort(labels, nTrain, k, scratch);
    assign.push(...sort.dispatches);
    const record: Dispatch[] = [];
    for (let s = 0; s < slots; s++) record.push(yield* K.record(countsT, partial, cent, cnorm, starts, window, s));
    const restore = yield* K.restore(window, cent, cnorm);
    const splitter = yield* K.split(plan, cent);
    const means: Dispatch[] = [];
    for (const [j, ch] of train.chunks.entries()) {
      means.push(yield* K.accumulate(ch.x, sort.order, starts, countsT, cent, ch.first, j, chunksT));
    }
    const update = [...means, normsPost];
    const splitUpdate = [...means, splitter.dispatch, normsPost];

    // The final search over all rows: where training subsampled, into buffers of N.
    const all = train === data ? { labels, dist } : {
      labels: yield* pool.alloc([data.n], "u32", "im2cluster"),
      dist: yield* pool.alloc([data.n], "f32", "final distances"),
    };
    const search: Dispatch[] = [yield* K.norms(cent, cnorm, false), zero];
    for (const [j, ch] of data.chunks.entries()) {
      search.push(yield* K.assign(ch.x, cent, cnorm, all.labels, all.dist, counts, ch.first, j * k));
    }
    return {
      cent,
      best,
      chunksT,
      partials,
      window,
      plan,
      initRows,
      splitter,
      initialise,
      assign,
      record,
      restore,
      update,
      splitUpdate,
      search,
      all,
    };
  });

type Program = Effect.Success<ReturnType<typeof program>>;

/**
 * One restart: its initial centroids (given, or K training rows of the restart's permutation), then `niter` Lloyd
 * iterations in windows (see the top of this file). Returns the restart's objective, its trace, and what is still to
 * be submitted (by `runKMeans`, with the copy to `best` when the restart improves on the best so far).
 */
const restart = (
  p: Program,
  train: Rows,
  k: number,
  o: Resolved,
  given: Float32Array<ArrayBuffer> | undefined,
  redo: number,
) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const niter = train.n === k ? 0 : o.niter;
    // Written before this restart's first submit, after the previous restart's work (queue order).
    if (given !== undefined) gpu.write(p.cent, given);
    else {
      const rows = train.n === k // faiss's corner case: the centroids are the training points, no iterations
        ? Uint32Array.from({ length: k }, (_, i) => i)
        : F.initialRows(train.n, k, o.seed, redo);
      gpu.write(p.initRows, rows);
    }
    const sizesPerSlot = p.chunksT * k;
    const planHost = new Uint32Array(2 * k);
    let pending = p.initialise;
    let objective = 0;
    const trace = { objectives: [] as number[], splits: [] as number[] };
    for (let it = 0, span = p.window.slots; it < niter;) {
      span = Math.min(span, niter - it);
      const dispatches = [...pending];
      for (let s = 0; s < span; s++) dispatches.push(...p.assign, p.record[s]!, ...p.update);
      const [slots] = (yield* submitAndRead({ dispatches, reads: [p.window.trace] })) as [Uint32Array];
      pending = [];
      let done = span, split = false;
      for (let s = 0; s < span && !split; s++) {
        const at = s * (sizesPerSlot + p.partials);
        const sizes = slots.subarray(at, at + sizesPerSlot);
        objective = 0;
        for (const v of new Float32Array(slots.buffer, slots.byteOffset + 4 * (at + sizesPerSlot), p.partials)) {
          objective += v;
        }
        const hassign = new Float32Array(k);
        for (let j = 0; j < p.chunksT; j++) for (let c = 0; c < k; c++) hassign[c]! += sizes[j * k + c]!;
        const splits = F.splitPlan(hassign, train.n);
        trace.objectives.push(objective);
        trace.splits.push(splits.length);
        if (splits.length === 0) continue;
        // This iteration was updated as if no cluster were empty: redo its update with the split plan, after
        // restoring its centroids and assignment where later iterations of the window have run over them.
        splits.forEach(([ci, cj], i) => planHost.set([ci, cj], 2 * i));
        gpu.write(p.plan, planHost);
        p.splitter.setSplits(splits.length);
        if (s < span - 1) p.restore.setSlot(s);
        pending = s < span - 1 ? [p.restore.dispatch, ...p.assign, p.record[s]!, ...p.splitUpdate] : p.splitUpdate;
        [done, split] = [s + 1, true];
      }
      it += done;
      span = split ? 1 : Math.min(p.window.slots, 2 * span);
    }
    return { objective, trace, pending };
  });

/** The host result of the final search: centroids, their normalised prototypes, assignments, distances. */
const readResult = (p: Program, k: number, d: number, dp: number) =>
  Effect.gen(function* () {
    const [c, l, dist] = (yield* submitAndRead({
      dispatches: p.search,
      reads: [p.cent, p.all.labels, p.all.dist],
      before: p.best !== p.cent ? [[p.best, p.cent]] : [],
    })) as [Float32Array<ArrayBuffer>, Uint32Array<ArrayBuffer>, Float32Array<ArrayBuffer>];
    const centroids = new Float32Array(k * d);
    const prototypes = new Float32Array(k * d);
    for (let i = 0; i < k; i++) {
      const row = c.subarray(i * dp, i * dp + d);
      centroids.set(row, i * d);
      let s = 0;
      for (const v of row) s += v * v;
      const scale = 1 / Math.max(Math.sqrt(s), 1e-12); // torch's F.normalize
      for (let j = 0; j < d; j++) prototypes[i * d + j] = row[j]! * scale;
    }
    return { centroids, prototypes, im2cluster: new Int32Array(l.buffer, l.byteOffset, l.length), distances: dist };
  });

/** k-means of the prepared rows into `k` clusters (one K of `cluster`): restarts, the best kept, a final search. */
const runKMeans = (data: Rows, k: number, o: Resolved, init: Float32Array | undefined, pool: Pool) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const { n, d, dp } = data;
    yield* checkK(k, n, d, gpu);
    if (init !== undefined && init.length !== k * d) {
      return yield* new KMeansError({ message: `init has ${init.length} values, not K x d = ${k} x ${d}` });
    }
    if (init !== undefined && !init.every(Number.isFinite)) {
      return yield* new KMeansError({ message: "init: the initial centroids contain NaN or ±Inf" });
    }
    const train = yield* trainingSet(data, k, o, pool);
    const nredo = train.n === k ? 1 : o.nredo;
    const p = yield* program(data, train, k, { ...o, nredo }, init, pool);
    let given: Float32Array<ArrayBuffer> | undefined;
    if (init !== undefined) {
      given = new Float32Array(k * dp);
      for (let c = 0; c < k; c++) given.set(init.subarray(c * d, (c + 1) * d), c * dp);
    }

    let bestObjective = Infinity, bestRestart = 0;
    let bestTrace = { objectives: [] as number[], splits: [] as number[] };
    const restartObjectives: number[] = [];
    for (let redo = 0; redo < nredo; redo++) {
      const r = yield* restart(p, train, k, o, given, redo);
      restartObjectives.push(r.objective);
      const improved = r.objective < bestObjective;
      yield* submitAndRead({ dispatches: r.pending, after: improved && p.best !== p.cent ? [[p.cent, p.best]] : [] });
      if (improved) [bestObjective, bestRestart, bestTrace] = [r.objective, redo, r.trace];
      yield* Effect.logDebug(`k-means K=${k} restart ${redo}: objective ${r.objective}`);
    }
    return {
      k,
      seed: o.seed,
      ...(yield* readResult(p, k, d, dp)),
      objective: bestObjective === Infinity ? 0 : bestObjective,
      objectives: bestTrace.objectives,
      splits: bestTrace.splits,
      restartObjectives,
      bestRestart,
      trainingPoints: train.n,
    } satisfies Clustering;
  });

/** `body` on the features as row chunks, with a pool for its buffers; everything is released when it ends. */
const withRows = <A>(
  features: Features,
  chunkRows: number | undefined,
  body: (rows: Rows, pool: Pool) => Effect.Effect<A, Failure, Gpu>,
): Effect.Effect<A, Failure, Gpu> =>
  Effect.scoped(Effect.gen(function* () {
    const rows = yield* pool;
    return yield* body(yield* prepareRows(features, chunkRows, rows), rows);
  }));

/** k-means of `features` (N x d) into `k` clusters, faiss's algorithm with PCL's defaults. */
export const kmeans = (features: Features, k: number, options: KMeansOptions = {}) =>
  Effect.gen(function* () {
    const o = yield* resolve(options);
    return yield* withRows(features, o.chunkRows, (rows, pool) => runKMeans(rows, k, o, options.init, pool));
  });

/** The E-step's clusterings: k-means for each K of `options.ks`, the K at position i seeded with seed + i. */
export const cluster = (
  features: Features,
  options: ClusterOptions,
): Effect.Effect<Clusterings, KMeansError | GpuError | ShapeError, Gpu> =>
  Effect.gen(function* () {
    const o = yield* resolve(options);
    if (options.ks.length === 0) return yield* new KMeansError({ message: "cluster: no K given" });
    return yield* withRows(features, o.chunkRows, (rows) =>
      Effect.gen(function* () {
        const gpu = yield* Gpu;
        for (const k of options.ks) yield* checkK(k, rows.n, rows.d, gpu); // every K before any runs
        const clusterings: Clustering[] = [];
        for (const [i, k] of options.ks.entries()) {
          // Each K's buffers go as soon as it is done; the rows stay for the next K.
          const one = Effect.flatMap(pool, (own) => runKMeans(rows, k, { ...o, seed: o.seed + i }, undefined, own));
          clusterings.push(yield* Effect.scoped(one));
        }
        return { n: rows.n, d: rows.d, clusterings };
      }));
  });
