/**
 * The data stages. `load`: a dataset source (MNIST embedded, Fashion-MNIST, IDX, CIFAR-10, an image folder,
 * synthetic) read into host memory, and made resident on the GPU by whoever trains on it (`resident`); its artifact is
 * the decoded dataset itself (images, labels and description in one safetensors file), so a standalone run of a later
 * stage does not need the original files.
 *
 * `augment`: two independent random views of every image of a batch, for the M-step (view 0 for the query encoder,
 * view 1 for the key encoder), drawn from (seed, epoch, step, sample, view) so that a resumed run sees exactly the
 * views an uninterrupted run would have. In training, `prepareAugmenter` is prepared once and recorded into every
 * step's pass (`setStep` before each submit). As a graph stage, `augmentStage` runs one (epoch, step) of a loaded
 * dataset and keeps the views: for a standalone look at what the M-step receives, and for the preview.
 */
import { Effect, Schema } from "effect";
import { read, runDispatches } from "../gpu/kernel.ts";
import type { Gpu } from "../gpu/gpu.ts";
import { type GpuError, type GpuOutOfMemory, type ShapeError, shapeError } from "../gpu/errors.ts";
import { type AugmentPreset, type PresetName, PRESETS } from "./augmentations.ts";
import { type Dataset, DatasetInfo, type HostDataset, type ResidentOptions, Sampler, toGpu } from "./dataset.ts";
import type { DataError } from "./errors.ts";
import { loadDataset, readSource, type Source } from "./source.ts";
import { prepareAugmenter } from "../ops/augment.ts";
import { BundleFromBytes, TensorField } from "../graph/codecs.ts";
import { stage } from "../graph/stage.ts";

export { loadDataset, readSource, type Source };

/** A host dataset as stored: the description as JSON, images (u8) and labels (i32) as tensors. */
export const HostDatasetSchema = Schema.Struct({
  info: DatasetInfo,
  images: TensorField(Uint8Array<ArrayBuffer>),
  labels: TensorField(Int32Array<ArrayBuffer>),
});

/** Reads and checks a source; logs what was loaded. */
export const load = (source: Source): Effect.Effect<HostDataset, DataError> =>
  Effect.tap(readSource(source), ({ info }) =>
    Effect.logInfo(
      `loaded ${info.name}: ${info.n} images of ${info.channels}x${info.height}x${info.width}, ${info.classes} ` +
        `classes, from ${info.source}`,
    ));

/** Makes a loaded dataset resident on the GPU (split into chunks at the storage-binding limit). */
export const resident = (
  host: HostDataset,
  options: ResidentOptions = {},
): Effect.Effect<Dataset, DataError | GpuOutOfMemory, Gpu> => toGpu(host, options);

export const loadStage = stage("load", BundleFromBytes(HostDatasetSchema), load);

export { type Augmenter, type EvalViewer, prepareAugmenter, prepareEvalViewer } from "../ops/augment.ts";
export { evalView, type PresetName, PRESETS } from "./augmentations.ts";

export interface AugmentStageOptions extends ResidentOptions {
  readonly preset: PresetName | AugmentPreset;
  readonly batch: number;
  readonly seed: number;
  readonly epoch?: number;
  readonly step?: number;
  readonly views?: number;
}

/** One batch's views as stored: the dataset indices and one [B, C, S, S] tensor (flattened) per view. */
export const AugmentedBatch = Schema.Struct({
  preset: Schema.String,
  epoch: Schema.Number,
  step: Schema.Number,
  shape: Schema.Array(Schema.Number),
  indices: TensorField(Uint32Array<ArrayBuffer>),
  views: Schema.Array(TensorField(Float32Array<ArrayBuffer>)),
});
export type AugmentedBatch = typeof AugmentedBatch.Type;

/** A preset by name, or the preset itself. */
export const resolvePreset = (p: PresetName | AugmentPreset): AugmentPreset => typeof p === "string" ? PRESETS[p]() : p;

/** The views of batch `step` of `epoch` (the sampler's order), read back to the host. */
export const augmentBatch = (
  host: HostDataset,
  o: AugmentStageOptions,
): Effect.Effect<AugmentedBatch, DataError | ShapeError | GpuError, Gpu> =>
  Effect.gen(function* () {
    const preset = resolvePreset(o.preset);
    const epoch = o.epoch ?? 0, step = o.step ?? 0;
    const steps = Math.floor(host.info.n / o.batch);
    if (!(Number.isInteger(step) && step >= 0 && step < steps)) {
      return yield* shapeError(
        "augment",
        `step ${step} of batch ${o.batch}: an epoch of ${host.info.n} images has ${steps} steps`,
      );
    }
    const dataset = yield* toGpu(host, o);
    const indices = new Sampler(host.info.n, o.batch, o.seed).indices(epoch, step).slice();
    const augmenter = yield* prepareAugmenter(dataset, {
      preset,
      batch: o.batch,
      seed: o.seed,
      views: o.views ?? 2,
    });
    augmenter.setStep(epoch, step, indices);
    yield* runDispatches(augmenter.dispatches, "augment");
    const views: Float32Array<ArrayBuffer>[] = [];
    for (const t of augmenter.outputs) views.push(yield* read(t));
    return {
      preset: preset.name,
      epoch,
      step,
      shape: [o.batch, host.info.channels, preset.side, preset.side],
      indices,
      views,
    };
  });

export const augmentStage = (o: AugmentStageOptions) =>
  stage("augment", BundleFromBytes(AugmentedBatch), (host: HostDataset) => augmentBatch(host, o));
