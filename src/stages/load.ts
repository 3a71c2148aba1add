/**
 * The `load` stage: a dataset source (MNIST embedded, Fashion-MNIST, IDX, CIFAR-10, an image folder, synthetic) read
 * into host memory, and made resident on the GPU by whoever trains on it (`resident`). The stage's artifact is the
 * decoded dataset itself (images, labels and description in one safetensors file), so a standalone run of a later
 * stage does not need the original files.
 */
import { Effect, Schema } from "effect";
import type { GpuOutOfMemory } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/gpu.ts";
import { type Dataset, DatasetInfo, type HostDataset, type ResidentOptions, toGpu } from "../data/dataset.ts";
import type { DataError } from "../data/errors.ts";
import { loadDataset, readSource, type Source } from "../data/source.ts";
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
