/**
 * Features of a whole dataset from an encoder in evaluation mode (BN with running statistics, no gradients), on the
 * GPU: the evaluation view of every image (`prepareEvalViewer`), the backbone's pooled features [N, F] and the
 * normalised head output z [N, dim].
 *
 * The encoder is bound once, to an input batch of its own; each dataset gets an evaluation viewer whose output is
 * copied into that input, so one extractor serves the training and the test set, and every later evaluation, without
 * allocating again (the binding reads the encoder's parameter stores, so it always sees the current weights). Batches
 * are submitted without waiting; their rows are copied into a collection buffer that is read back once full (32 MiB),
 * so a 60,000-image set costs one or a few readbacks. The last partial batch is padded with image 0 and the padded
 * rows are dropped (evaluation-mode BN treats rows independently, so padding changes nothing).
 */
import { Effect } from "effect";
import { Gpu } from "../gpu/gpu.ts";
import { alloc, type Dispatch, validated } from "../gpu/kernel.ts";
import { GpuDeviceLost, type GpuError, type ShapeError, shapeError } from "../gpu/errors.ts";
import { Tensor } from "../gpu/tensor.ts";
import type { Dataset } from "../data/dataset.ts";
import { type EvalViewer, prepareEvalViewer } from "../ops/augment.ts";
import { copy } from "../ops/fill.ts";
import { bindEncoder, type Encoder } from "../nn/models.ts";
import type { Matrix } from "../io/matrix.ts";

/** The evaluation view: output side, per-channel normalisation, and the resize before the centre crop. */
export interface ViewOptions {
  readonly side: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  /** Shorter side before the centre crop (default side · 256 / 224; an image already side x side is taken as is). */
  readonly resize?: number;
}

export interface ExtractorOptions extends ViewOptions {
  /** Images per forward pass (default 256). */
  readonly batch?: number;
  /** Size of the collection buffers read back at once (default 32 MiB; tests make it small). */
  readonly collectBytes?: number;
}

export interface DatasetFeatures {
  readonly n: number;
  /** Class labels of the first n images (the dataset's own). */
  readonly labels: Int32Array<ArrayBuffer>;
  /** Backbone (pooled, not normalised) features [n, F]. */
  readonly backbone: Matrix;
  /** Head output z, L2-normalised [n, dim]. */
  readonly head: Matrix;
}

export interface FeatureExtractor {
  readonly encoder: Encoder;
  readonly batch: number;
  /** Features of the first `limit` images of `dataset` (all by default). */
  readonly extract: (
    dataset: Dataset,
    limit?: number,
  ) => Effect.Effect<DatasetFeatures, GpuError | ShapeError, Gpu>;
}

const COLLECT_BYTES = 32 * 2 ** 20;
export const DEFAULT_EVAL_BATCH = 256;

export const prepareExtractor = (
  encoder: Encoder,
  options: ExtractorOptions,
): Effect.Effect<FeatureExtractor, GpuError | ShapeError, Gpu> =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const batch = options.batch ?? DEFAULT_EVAL_BATCH;
    if (!(Number.isInteger(batch) && batch >= 1)) return yield* shapeError("extractFeatures", `batch ${batch}`);
    const channels = encoder.spec.inChannels;
    const x = yield* alloc([batch, channels, options.side, options.side], "f32", "eval input");
    const bound = yield* bindEncoder(encoder, x, { train: false, grad: false });
    const F = bound.features.shape[1]!, dim = bound.z.shape[1]!;
    const group = Math.max(1, Math.floor((options.collectBytes ?? COLLECT_BYTES) / (batch * Math.max(F, dim) * 4)));
    const collectF = yield* alloc([group * batch, F], "f32", "eval features");
    const collectZ = yield* alloc([group * batch, dim], "f32", "eval z");
    const viewers = new WeakMap<Dataset, { readonly viewer: EvalViewer; readonly copyIn: Dispatch }>();

    const viewerFor = (dataset: Dataset) =>
      Effect.gen(function* () {
        const cached = viewers.get(dataset);
        if (cached !== undefined) return cached;
        if (dataset.info.channels !== channels) {
          return yield* shapeError(
            "extractFeatures",
            `dataset '${dataset.info.name}' has ${dataset.info.channels} channels, the encoder takes ${channels}`,
          );
        }
        const viewer = yield* prepareEvalViewer(dataset, {
          batch,
          side: options.side,
          mean: options.mean,
          std: options.std,
          ...(options.resize === undefined ? {} : { resize: options.resize }),
        });
        const entry = { viewer, copyIn: yield* copy(viewer.outputs[0]!, x) };
        viewers.set(dataset, entry);
        return entry;
      });

    const extract = (dataset: Dataset, limit?: number) =>
      Effect.gen(function* () {
        const n = Math.min(dataset.info.n, limit ?? dataset.info.n);
        if (!(Number.isInteger(n) && n >= 1)) return yield* shapeError("extractFeatures", `limit ${limit}`);
        const { viewer, copyIn } = yield* viewerFor(dataset);
        const pending = yield* validated(
          "extractFeatures",
          Effect.sync(() => {
            const reads: Array<{ first: number; rows: number; read: () => Promise<[Float32Array, Float32Array]> }> = [];
            const indices = new Uint32Array(batch);
            let slot = 0, firstInGroup = 0;
            for (let start = 0; start < n; start += batch) {
              const rows = Math.min(batch, n - start);
              for (let b = 0; b < batch; b++) indices[b] = b < rows ? start + b : 0;
              viewer.setIndices(indices);
              const enc = gpu.device.createCommandEncoder({ label: "extract features" });
              const pass = enc.beginComputePass({ label: "extract features" });
              viewer.record(pass);
              copyIn.record(pass);
              for (const d of bound.forward) d.record(pass);
              pass.end();
              for (const [from, to, width] of [[bound.features, collectF, F], [bound.z, collectZ, dim]] as const) {
                enc.copyBufferToBuffer(from.buffer, from.offset, to.buffer, slot * batch * width * 4, rows * width * 4);
              }
              const filled = slot * batch + rows;
              slot++;
              const last = start + batch >= n;
              if (slot === group || last) {
                const f = gpu.readAfter(enc, new Tensor(collectF.buffer, [filled, F], "f32"));
                const z = gpu.readAfter(enc, new Tensor(collectZ.buffer, [filled, dim], "f32"));
                gpu.device.queue.submit([enc.finish()]);
                reads.push({ first: firstInGroup, rows: filled, read: () => Promise.all([f(), z()]) });
                firstInGroup += filled;
                slot = 0;
              } else {
                gpu.device.queue.submit([enc.finish()]);
              }
            }
            return reads;
          }),
        );
        const parts = yield* gpu.guard(Effect.tryPromise({
          try: () => Promise.all(pending.map(async (p) => ({ ...p, data: await p.read() }))),
          catch: (e) => e instanceof GpuDeviceLost ? e : new GpuDeviceLost({ reason: "unknown", message: String(e) }),
        }));
        const backbone = new Float32Array(n * F), head = new Float32Array(n * dim);
        for (const { first, rows, data: [f, z] } of parts) {
          backbone.set(f.subarray(0, rows * F), first * F);
          head.set(z.subarray(0, rows * dim), first * dim);
        }
        return {
          n,
          labels: dataset.labels.slice(0, n),
          backbone: { data: backbone, shape: [n, F] },
          head: { data: head, shape: [n, dim] },
        } satisfies DatasetFeatures;
      });

    return { encoder, batch, extract } satisfies FeatureExtractor;
  });

/** Features of one dataset with a fresh extractor (prefer `prepareExtractor` when evaluating repeatedly). */
export const extractFeatures = (encoder: Encoder, dataset: Dataset, options: ExtractorOptions, limit?: number) =>
  Effect.flatMap(prepareExtractor(encoder, options), (e) => e.extract(dataset, limit));
