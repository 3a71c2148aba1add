/**
 * CIFAR-10 binary batches: records of 1 label byte and 3072 image bytes (1024 red, then green, then blue, rows of 32),
 * already channel-major, so the records are copied without reordering. Train = data_batch_1..5.bin, test =
 * test_batch.bin (10,000 records each).
 */
import { Effect } from "effect";
import type { HostDataset } from "./dataset.ts";
import { type DataError, dataError } from "./errors.ts";
import { firstExisting, readBytes } from "./files.ts";
import type { Split } from "./idx.ts";

export const CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
] as const;

const SIDE = 32;
const IMAGE = 3 * SIDE * SIDE;
const RECORD = 1 + IMAGE;

/** The batch files of a split, in order. */
export const cifarFiles = (split: Split): readonly string[] =>
  split === "train" ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ["test_batch.bin"];

/** Parses one batch file's records into `images`/`labels` at `offset`; a DataError for a cut file or a bad label. */
const parseBatch = (path: string, bytes: Uint8Array) =>
  Effect.gen(function* () {
    if (bytes.length === 0) return yield* dataError(path, "empty file, expected CIFAR-10 records of 3073 bytes");
    if (bytes.length % RECORD !== 0) {
      return yield* dataError(
        path,
        `truncated or not a CIFAR-10 batch: ${bytes.length} bytes is not a whole number of 3073-byte records ` +
          `(${Math.floor(bytes.length / RECORD)} records and ${bytes.length % RECORD} bytes over)`,
      );
    }
    const n = bytes.length / RECORD;
    for (let i = 0; i < n; i++) {
      const label = bytes[i * RECORD]!;
      if (label >= CIFAR10_CLASSES.length) {
        return yield* dataError(path, `record ${i} has label ${label}, CIFAR-10 labels are 0..9 (is this CIFAR-100?)`);
      }
    }
    return n;
  });

/** CIFAR-10 from a directory holding the binary batches (as in cifar-10-batches-bin/). */
export const readCifar10 = (dir: string, split: Split): Effect.Effect<HostDataset, DataError> =>
  Effect.gen(function* () {
    const files: { path: string; bytes: Uint8Array; n: number }[] = [];
    for (const name of cifarFiles(split)) {
      const path = yield* firstExisting(dir, [name], `CIFAR-10 ${split} batch`);
      const bytes = yield* readBytes(path);
      files.push({ path, bytes, n: yield* parseBatch(path, bytes) });
    }
    const n = files.reduce((a, f) => a + f.n, 0);
    const images = new Uint8Array(n * IMAGE);
    const labels = new Int32Array(n);
    let row = 0;
    for (const f of files) {
      for (let i = 0; i < f.n; i++, row++) {
        labels[row] = f.bytes[i * RECORD]!;
        images.set(f.bytes.subarray(i * RECORD + 1, (i + 1) * RECORD), row * IMAGE);
      }
    }
    return {
      info: {
        name: `cifar10-${split}`,
        n,
        channels: 3,
        height: SIDE,
        width: SIDE,
        classes: CIFAR10_CLASSES.length,
        classNames: CIFAR10_CLASSES,
        source: dir,
      },
      images,
      labels,
    };
  });
