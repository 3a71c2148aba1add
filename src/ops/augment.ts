/**
 * The augment kernel's binding: a batch of dataset images (by index) to normalised float views [B, C, S, S], one
 * output tensor per view. Everything is prepared once per batch size; a step only draws the per-sample parameters on
 * the host and writes them (and, for a chunked dataset, the batch's indices) into preallocated buffers.
 *
 * Reading the images: a dataset in one chunk is read in place by index (no copy). A dataset in several chunks (over
 * one storage binding) is first gathered into a batch buffer, one small dispatch per chunk; `gather: true` forces
 * that path, e.g. to measure it.
 */
import { Effect } from "effect";
import source from "../../kernels/augment.wgsl" with { type: "text" };
import { type Dispatch, grid1d, prepare } from "../gpu/kernel.ts";
import { alloc } from "../gpu/kernel.ts";
import { Gpu } from "../gpu/gpu.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  type AugmentPreset,
  type ColourOp,
  type Dims,
  drawView,
  evalView,
  presetProblem,
  type ViewParams,
} from "../data/augmentations.ts";
import type { Dataset } from "../data/dataset.ts";

/** Words per sample record (see kernels/augment.wgsl). */
export const RECORD_WORDS = 24;
const MAX_COLOUR_OPS = 6;
/** MAX_RADIUS in kernels/augment.wgsl: sigma up to 5.3 at ceil(3 sigma); v2's largest is 2 (radius 6). */
const MAX_BLUR_RADIUS = 16;
const WG = 64;

const COLOUR_CODE: Record<ColourOp | "grayscale", number> = {
  brightness: 1,
  contrast: 2,
  saturation: 3,
  hue: 4,
  grayscale: 5,
};

/** Writes one view's record at word `at`: the warp as a matrix (flip folded in), the colour ops as codes. */
export const packView = (
  words: Uint32Array,
  floats: Float32Array,
  at: number,
  row: number,
  p: ViewParams,
  dims: Dims,
  side: number,
): void => {
  if (p.sigma > 0 && !(p.radius >= 1 && p.radius <= MAX_BLUR_RADIUS)) {
    throw new RangeError(`blur radius ${p.radius}: the kernel takes 1..${MAX_BLUR_RADIUS} (sigma ${p.sigma})`);
  }
  if (p.colour.length > MAX_COLOUR_OPS) {
    throw new RangeError(`a view has ${p.colour.length} colour ops, the kernel takes at most ${MAX_COLOUR_OPS}`);
  }
  const { box } = p;
  const sx = box.w / side, sy = box.h / side;
  const th = (p.angle * Math.PI) / 180;
  const cos = Math.cos(th), sin = Math.sin(th);
  const mirror = p.flip ? -1 : 1;
  let codes = 0;
  p.colour.forEach((c, k) => (codes |= COLOUR_CODE[c.op] << (4 * k)));
  const clip = p.outside === "box" ? [box.x, box.y, box.x + box.w, box.y + box.h] : [0, 0, dims.width, dims.height];
  words[at] = row;
  words[at + 1] = p.colour.length;
  words[at + 2] = codes >>> 0;
  words[at + 3] = p.sigma > 0 ? p.radius : 0;
  floats[at + 4] = box.x + box.w / 2;
  floats[at + 5] = box.y + box.h / 2;
  floats[at + 6] = mirror * cos * sx;
  floats[at + 7] = -sin * sy;
  floats[at + 8] = mirror * sin * sx;
  floats[at + 9] = cos * sy;
  floats[at + 10] = Math.max(1, sx);
  floats[at + 11] = Math.max(1, sy);
  for (let k = 0; k < 4; k++) floats[at + 12 + k] = clip[k]!;
  for (let k = 0; k < MAX_COLOUR_OPS; k++) floats[at + 16 + k] = p.colour[k]?.factor ?? 0;
  floats[at + 22] = p.sigma;
  words[at + 23] = p.outside === "zero" ? 1 : 0;
};

export interface ViewsOptions {
  readonly batch: number;
  readonly views: number;
  readonly side: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  /** Gather through a batch buffer even when the dataset is one chunk. */
  readonly gather?: boolean;
}

/** Batch views of a dataset with parameters given per sample: the prepared core of `Augmenter` and `EvalViewer`. */
export interface Views {
  readonly dims: Dims;
  readonly batch: number;
  readonly side: number;
  /** One tensor [B, C, S, S] per view, overwritten by every recording. */
  readonly outputs: ReadonlyArray<Tensor<"f32">>;
  /** The gathers (if any) then one dispatch per view, in order. */
  readonly dispatches: ReadonlyArray<Dispatch>;
  readonly record: (pass: GPUComputePassEncoder) => void;
  /** Writes indices and each view's parameters (`params(view, b)`) for the next recording. */
  readonly write: (indices: ArrayLike<number>, params: (view: number, b: number) => ViewParams) => void;
  /** Whether the batch is gathered through a batch buffer (several chunks, or forced). */
  readonly gathered: boolean;
}

export const prepareViews = Effect.fnUntraced(function* (dataset: Dataset, o: ViewsOptions) {
  const gpu = yield* Gpu;
  const { info } = dataset;
  const dims: Dims = { channels: info.channels, height: info.height, width: info.width };
  const c = info.channels;
  if (!Number.isInteger(o.batch) || o.batch < 1) return yield* shapeError("augment", `batch ${o.batch}`);
  if (!Number.isInteger(o.side) || o.side < 1) return yield* shapeError("augment", `output side ${o.side}`);
  if (o.mean.length < c || o.std.length < c) {
    return yield* shapeError("augment", `mean/std give ${o.mean.length}/${o.std.length} values for ${c} channels`);
  }
  const imageBytes = c * info.height * info.width;
  const gathered = o.gather === true || dataset.chunks.length > 1;
  const records = yield* alloc([o.views * o.batch * RECORD_WORDS], "u32", "augment records");
  const host = new ArrayBuffer(records.byteLength);
  const words = new Uint32Array(host), floats = new Float32Array(host);
  const dispatches: Dispatch[] = [];
  let images: Tensor<"u8">;
  let indexBuffer: Tensor<"u32"> | undefined;
  if (gathered) {
    indexBuffer = yield* alloc([o.batch], "u32", "augment indices");
    images = yield* alloc([o.batch, c, info.height, info.width], "u8", "augment batch bytes");
    const groups = grid1d(gpu, Math.ceil(images.byteLength / 4 / WG));
    for (const [i, chunk] of dataset.chunks.entries()) {
      dispatches.push(
        yield* prepare({ name: "augment", source, entryPoint: "gather", constants: { WG } }, {
          tensors: [chunk, indexBuffer, images],
          params: [["u32", o.batch], ["u32", imageBytes], ["u32", i * dataset.rowsPerChunk], [
            "u32",
            chunk.shape[0]!,
          ]],
          workgroups: groups,
        }),
      );
    }
  } else {
    images = dataset.chunks[0]!;
  }
  const scratch = yield* alloc([o.batch, c, o.side, o.side], "f32", "augment scratch");
  const outputs: Tensor<"f32">[] = [];
  const stat = (xs: readonly number[], k: number, fill: number) => (k < c ? xs[k]! : fill);
  for (let v = 0; v < o.views; v++) {
    const out = yield* alloc([o.batch, c, o.side, o.side], "f32", `augmented view ${v}`);
    outputs.push(out);
    dispatches.push(
      yield* prepare({ name: "augment", source, entryPoint: "augment", constants: { WG } }, {
        tensors: [images, records, out, scratch],
        params: [
          ["u32", o.batch],
          ["u32", c],
          ["u32", info.height],
          ["u32", info.width],
          ["u32", o.side],
          ["u32", imageBytes],
          ["u32", v * o.batch * RECORD_WORDS],
          ["u32", 0],
          ["f32", stat(o.mean, 0, 0)],
          ["f32", stat(o.mean, 1, 0)],
          ["f32", stat(o.mean, 2, 0)],
          ["f32", stat(o.std, 0, 1)],
          ["f32", stat(o.std, 1, 1)],
          ["f32", stat(o.std, 2, 1)],
        ],
        workgroups: grid1d(gpu, o.batch),
      }),
    );
  }
  const indexHost = new Uint32Array(o.batch);
  const views: Views = {
    dims,
    batch: o.batch,
    side: o.side,
    outputs,
    dispatches,
    gathered,
    record: (pass) => {
      for (const d of dispatches) d.record(pass);
    },
    write: (indices, params) => {
      const count = Math.min(indices.length, o.batch);
      for (let b = 0; b < count; b++) {
        const index = indices[b]!;
        if (!(index >= 0 && index < info.n)) throw new RangeError(`index ${index} outside the dataset (N ${info.n})`);
        indexHost[b] = index;
      }
      for (let v = 0; v < o.views; v++) {
        for (let b = 0; b < count; b++) {
          const at = (v * o.batch + b) * RECORD_WORDS;
          packView(words, floats, at, gathered ? b : indexHost[b]!, params(v, b), dims, o.side);
        }
      }
      gpu.write(records, words);
      if (indexBuffer !== undefined) gpu.write(indexBuffer, indexHost);
    },
  };
  return views;
});

export interface AugmentOptions {
  readonly preset: AugmentPreset;
  readonly batch: number;
  readonly seed: number;
  /** Independent views per image (2 for the M-step: query and key). */
  readonly views?: number;
  readonly gather?: boolean;
}

/** Random views for training: `setStep` draws each sample's parameters from (seed, epoch, step, sample, view). */
export interface Augmenter extends Views {
  readonly preset: AugmentPreset;
  readonly setStep: (epoch: number, step: number, indices: ArrayLike<number>) => void;
}

export const prepareAugmenter = Effect.fnUntraced(function* (dataset: Dataset, o: AugmentOptions) {
  const problem = presetProblem(o.preset);
  if (problem !== undefined) return yield* shapeError("augment", problem);
  const { preset, seed } = o;
  const views = yield* prepareViews(dataset, {
    batch: o.batch,
    views: o.views ?? 2,
    side: preset.side,
    mean: preset.mean,
    std: preset.std,
    ...(o.gather === undefined ? {} : { gather: o.gather }),
  });
  const augmenter: Augmenter = {
    ...views,
    preset,
    setStep: (epoch, step, indices) =>
      views.write(indices, (view, sample) => drawView(preset, views.dims, { seed, epoch, step, sample, view })),
  };
  return augmenter;
});

export interface EvalOptions {
  readonly batch: number;
  readonly side: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  /** Shorter side before the centre crop (default S * 256 / 224; an S x S image is taken as it is). */
  readonly resize?: number;
  readonly gather?: boolean;
}

/** The deterministic evaluation view (E-step, evaluation): `setIndices` with up to `batch` dataset indices. */
export interface EvalViewer extends Views {
  readonly setIndices: (indices: ArrayLike<number>) => void;
}

export const prepareEvalViewer = Effect.fnUntraced(function* (dataset: Dataset, o: EvalOptions) {
  const views = yield* prepareViews(dataset, {
    batch: o.batch,
    views: 1,
    side: o.side,
    mean: o.mean,
    std: o.std,
    ...(o.gather === undefined ? {} : { gather: o.gather }),
  });
  const view = evalView(views.dims, o.side, o.resize);
  const viewer: EvalViewer = { ...views, setIndices: (indices) => views.write(indices, () => view) };
  return viewer;
});
