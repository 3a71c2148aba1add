import { Effect } from "effect";
import type { Dataset } from "../data/dataset.ts";
import type { GpuDeviceLost } from "../gpu/errors.ts";
import { Gpu } from "../gpu/gpu.ts";
import { encode as record } from "../gpu/kernel.ts";
import { type EvalOptions, prepareEvalViewer } from "../ops/augment.ts";
import { bindEncoder, type Encoder } from "../nn/models.ts";

/** Features of a whole dataset: the backbone's pooled output and the normalised embedding, row-major. */
export interface EncodedFeatures {
  readonly n: number;
  /** N x F backbone features (before the head), when asked for. */
  readonly backbone: Float32Array<ArrayBuffer> | undefined;
  readonly backboneDim: number;
  /** N x d L2-normalised embeddings: what the E-step clusters (the momentum encoder's, in the official code). */
  readonly z: Float32Array<ArrayBuffer>;
  readonly dim: number;
}

/** An encoder bound once to an evaluation view of a dataset; `run` encodes the whole dataset with current weights. */
export interface DatasetEncoder {
  readonly run: Effect.Effect<EncodedFeatures, GpuDeviceLost>;
}

/**
 * Prepares encoding every image of `dataset` with `encoder` in evaluation mode (BN running statistics) through the
 * evaluation view, in dataset order, `view.batch` images per submit. The last partial batch repeats its final index
 * as padding and drops those rows. Two batches are in flight, so the readback of one overlaps the next one's work.
 * Everything is allocated here, once: `run` can be called every epoch.
 */
export const prepareDatasetEncoder = Effect.fnUntraced(function* (
  encoder: Encoder,
  dataset: Dataset,
  view: EvalOptions,
  withBackbone = false,
) {
  const gpu = yield* Gpu;
  const n = dataset.info.n;
  const viewer = yield* prepareEvalViewer(dataset, view);
  const bound = yield* bindEncoder(encoder, viewer.outputs[0], { train: false, grad: false });
  const dim = encoder.spec.dim, backboneDim = encoder.features, batch = viewer.batch;
  const indices = new Uint32Array(batch);
  const run = Effect.gen(function* () {
    const z = new Float32Array(n * dim);
    const backbone = withBackbone ? new Float32Array(n * backboneDim) : undefined;
    let inFlight: Promise<void> | undefined;
    for (let start = 0; start < n; start += batch) {
      const count = Math.min(batch, n - start);
      for (let i = 0; i < batch; i++) indices[i] = start + Math.min(i, count - 1);
      viewer.setIndices(indices);
      const enc = record(gpu, [...viewer.dispatches, ...bound.forward], "encode");
      const zRead = gpu.readAfter(enc, bound.z);
      const fRead = backbone ? gpu.readAfter(enc, bound.features) : undefined;
      gpu.device.queue.submit([enc.finish()]);
      const previous = inFlight;
      inFlight = Promise.all([zRead(), fRead?.()]).then(([zb, fb]) => {
        z.set(zb.subarray(0, count * dim), start * dim);
        if (fb && backbone) backbone.set(fb.subarray(0, count * backboneDim), start * backboneDim);
      });
      inFlight.catch(() => {}); // awaited below, unless an earlier batch fails first
      if (previous) yield* gpu.guard(Effect.promise(() => previous));
    }
    if (inFlight) yield* gpu.guard(Effect.promise(() => inFlight!));
    return { n, backbone, backboneDim, z, dim } satisfies EncodedFeatures;
  });
  return { run } satisfies DatasetEncoder;
});
