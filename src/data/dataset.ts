/**
 * A dataset as the training loop sees it: images as bytes resident on the GPU (NCHW, u8 packed four to a word), split
 * into chunks that each fit one storage binding, plus the labels on the host (they serve only the evaluation). The
 * sampler gives each epoch's order as a pure function of (seed, epoch).
 */
import { Effect, Schema } from "effect";
import { Gpu } from "../gpu/gpu.ts";
import { alloc } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { GpuOutOfMemory } from "../gpu/errors.ts";
import { DataError } from "./errors.ts";
import { permutation, Stream } from "./rng.ts";

/** What a dataset is: recorded in run manifests and checked against a checkpoint's. */
export const DatasetInfo = Schema.Struct({
  name: Schema.String,
  n: Schema.Number,
  channels: Schema.Literals([1, 3]),
  height: Schema.Number,
  width: Schema.Number,
  classes: Schema.Number,
  classNames: Schema.Array(Schema.String),
  source: Schema.String,
});
export type DatasetInfo = typeof DatasetInfo.Type;

/** Bytes per image (C x H x W). */
export const imageBytes = (info: DatasetInfo): number => info.channels * info.height * info.width;

/** A dataset decoded on the host: `images` is N x C x H x W bytes, `labels` N class indices. */
export interface HostDataset {
  readonly info: DatasetInfo;
  readonly images: Uint8Array<ArrayBuffer>;
  readonly labels: Int32Array<ArrayBuffer>;
}

/** The first `limit` images (all of them when `limit` is undefined or not smaller than N). */
export const takeFirst = (host: HostDataset, limit: number | undefined): HostDataset => {
  if (limit === undefined || limit >= host.info.n) return host;
  const n = Math.max(0, Math.floor(limit));
  return {
    info: { ...host.info, n },
    images: host.images.slice(0, n * imageBytes(host.info)),
    labels: host.labels.slice(0, n),
  };
};

/** Images per class (index = class), for summaries and for tests against known counts. */
export const classCounts = (labels: ArrayLike<number>, classes: number): number[] => {
  const counts = new Array<number>(classes).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]!]! += 1;
  return counts;
};

/** The training set on the GPU: chunk `i` holds rows `i * rowsPerChunk ...` as a u8 tensor [rows, C, H, W]. */
export interface Dataset {
  readonly info: DatasetInfo;
  readonly labels: Int32Array<ArrayBuffer>;
  readonly chunks: ReadonlyArray<Tensor<"u8">>;
  readonly rowsPerChunk: number;
}

export interface ResidentOptions {
  /**
   * The most bytes one chunk may hold. Defaults to the device's maxStorageBufferBindingSize (128 MiB on llvmpipe);
   * tests set it small to force several chunks.
   */
  readonly maxChunkBytes?: number;
}

/** Uploads a host dataset, split into as many chunks as the binding limit requires. */
export const toGpu = (
  host: HostDataset,
  options: ResidentOptions = {},
): Effect.Effect<Dataset, DataError | GpuOutOfMemory, Gpu> =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const { info } = host;
    const bytes = imageBytes(info);
    const limit = Math.min(
      options.maxChunkBytes ?? gpu.limits.maxStorageBufferBindingSize,
      gpu.limits.maxStorageBufferBindingSize,
      gpu.limits.maxBufferSize,
    );
    // The limit in whole words: a u8 tensor's binding is its byte length rounded up to a word.
    const rowsPerChunk = Math.floor(Math.floor(limit / 4) * 4 / bytes);
    if (rowsPerChunk < 1) {
      return yield* new DataError({
        path: info.source,
        message: `${info.source}: one image is ${bytes} bytes, more than a chunk may hold (${limit} bytes)`,
      });
    }
    if (info.n === 0) {
      return yield* new DataError({ path: info.source, message: `${info.source}: the dataset has no images` });
    }
    const chunks: Tensor<"u8">[] = [];
    for (let start = 0; start < info.n; start += rowsPerChunk) {
      const rows = Math.min(rowsPerChunk, info.n - start);
      const t = yield* alloc([rows, info.channels, info.height, info.width], "u8", `${info.name} images ${start}+`);
      gpu.write(t, host.images.subarray(start * bytes, (start + rows) * bytes));
      chunks.push(t);
    }
    return { info, labels: host.labels, chunks, rowsPerChunk };
  });

/**
 * Each epoch's order as a pure function of (seed, epoch); batches of `batch` consecutive entries, the last partial
 * batch dropped (as the official loader's drop_last does).
 */
export class Sampler {
  readonly stepsPerEpoch: number;
  private cachedEpoch = -1;
  private perm: Uint32Array = new Uint32Array(0);

  constructor(readonly n: number, readonly batch: number, readonly seed: number) {
    this.stepsPerEpoch = Math.floor(n / batch);
  }

  /** The whole permutation of an epoch (computed once per epoch). */
  order(epoch: number): Uint32Array {
    if (epoch !== this.cachedEpoch) {
      this.perm = permutation(this.n, this.seed, epoch, Stream.sampler);
      this.cachedEpoch = epoch;
    }
    return this.perm;
  }

  /** The dataset indices of batch `step` of `epoch` (a view into the epoch's permutation). */
  indices(epoch: number, step: number): Uint32Array {
    if (step < 0 || step >= this.stepsPerEpoch) {
      throw new RangeError(`step ${step} is outside 0..${this.stepsPerEpoch - 1} (N ${this.n}, batch ${this.batch})`);
    }
    return this.order(epoch).subarray(step * this.batch, (step + 1) * this.batch);
  }
}
