/**
 * The evaluation stage's computations (docs/algorithm.md §12, "Evaluation for parity with later papers"):
 *
 * - weighted kNN (InstDisc: cosine, k = 20 and 200, T = 0.07), bank = all training images, queries = the test set;
 * - linear probe on the standardised backbone features of the first 10,000 training images, test top-1;
 * - k-means with K = number of classes on the test set's head features z (faiss's algorithm with PCL's settings,
 *   `cluster`), scored against the labels with AMI, NMI (both arithmetic normalisation), ARI and Hungarian accuracy;
 * - and the same four scores for the training E-step's clusterings (im2cluster per K).
 *
 * Every result is a plain JSON-friendly record.
 */
import { Effect } from "effect";
import type { Gpu } from "../gpu/gpu.ts";
import type { GpuError, ShapeError } from "../gpu/errors.ts";
import type { Dataset } from "../data/dataset.ts";
import type { Encoder } from "../nn/models.ts";
import type { Matrix } from "../io/matrix.ts";
import { cluster, type Clusterings, type KMeansError, type KMeansOptions } from "../pcl/kmeans.ts";
import { type DatasetFeatures, type ExtractorOptions, type FeatureExtractor, prepareExtractor } from "./features.ts";
import { knnClassify, type KnnOptions } from "./knn.ts";
import { linearProbe, type ProbeOptions } from "./linear_probe.ts";
import { type ClusteringScores, scoreClustering } from "./metrics.ts";

export * from "./metrics.ts";
export * from "./features.ts";
export * from "./knn.ts";
export * from "./linear_probe.ts";

/** Which features kNN uses: the backbone's pooled features (default) or the normalised head output z. */
export type KnnFeatures = "backbone" | "head";

export interface EvaluateOptions {
  /** The evaluation view and batch of the feature extraction. */
  readonly view: ExtractorOptions;
  readonly knn?: Omit<KnnOptions, "classes"> & { readonly features?: KnnFeatures };
  /** `trainImages`: the probe trains on this many first training images (default 10,000; all when larger). */
  readonly probe?: Omit<ProbeOptions, "classes"> & { readonly trainImages?: number };
  /** k-means on the test head features; K is the number of classes. Default PCL's (20 iterations, 5 restarts). */
  readonly kmeans?: Omit<KMeansOptions, "init">;
  /** Reuse an extractor prepared for this encoder (e.g. across epochs), instead of binding the encoder again. */
  readonly extractor?: FeatureExtractor;
}

export interface EvaluationReport {
  /** Weighted kNN top-1 on the test set, keyed `k20`, `k200` (one per k). */
  readonly knn: Readonly<Record<string, number>>;
  /** Linear probe top-1 on the test set. */
  readonly linear: number;
  /** k-means (K = classes) of the test head features against the test labels. */
  readonly clustering: ClusteringScores;
  readonly counts: {
    readonly train: number;
    readonly test: number;
    readonly probeTrain: number;
    readonly classes: number;
  };
}

/** The scores of one clustering of the training set against its labels. */
export interface ClusteringReport extends ClusteringScores {
  readonly k: number;
}

export const PROBE_TRAIN_IMAGES = 10_000;

const firstRows = (m: Matrix, rows: number): Matrix => ({
  data: m.data.subarray(0, rows * m.shape[1]),
  shape: [rows, m.shape[1]],
});

/** kNN, linear probe and test-set clustering from features already extracted (the GPU-heavy part after encoding). */
export const evaluateFeatures = (
  train: DatasetFeatures,
  test: DatasetFeatures,
  classes: number,
  options: Omit<EvaluateOptions, "view" | "extractor"> = {},
): Effect.Effect<EvaluationReport, GpuError | ShapeError | KMeansError, Gpu> =>
  Effect.gen(function* () {
    const { features: knnFeatures = "backbone", ...knnOptions } = options.knn ?? {};
    const pick = (f: DatasetFeatures) => (knnFeatures === "head" ? f.head : f.backbone);
    const knn = yield* knnClassify(pick(train), train.labels, pick(test), test.labels, { ...knnOptions, classes });

    const { trainImages = PROBE_TRAIN_IMAGES, ...probeOptions } = options.probe ?? {};
    const probeTrain = Math.min(trainImages, train.n);
    const probe = yield* linearProbe(
      firstRows(train.backbone, probeTrain),
      train.labels.subarray(0, probeTrain),
      test.backbone,
      test.labels,
      { ...probeOptions, classes },
    );

    const { clusterings } = yield* cluster(test.head, { ...options.kmeans, ks: [classes] });
    const clustering = scoreClustering(test.labels, clusterings[0]!.im2cluster);

    return {
      knn: Object.fromEntries(knn.map((r) => [`k${r.k}`, r.top1])),
      linear: probe.top1,
      clustering,
      counts: { train: train.n, test: test.n, probeTrain, classes },
    } satisfies EvaluationReport;
  });

/**
 * The whole evaluation of an encoder: features of the training and test sets in evaluation mode, then kNN, linear
 * probe and test-set clustering. The number of classes is the training set's.
 */
export const evaluate = (
  encoder: Encoder,
  datasets: { readonly train: Dataset; readonly test: Dataset },
  options: EvaluateOptions,
): Effect.Effect<EvaluationReport, GpuError | ShapeError | KMeansError, Gpu> =>
  Effect.gen(function* () {
    const extractor = options.extractor ?? (yield* prepareExtractor(encoder, options.view));
    const train = yield* extractor.extract(datasets.train);
    const test = yield* extractor.extract(datasets.test);
    const { view: _view, extractor: _extractor, ...rest } = options;
    return yield* evaluateFeatures(train, test, datasets.train.info.classes, rest);
  });

/**
 * Scores the training E-step's clusterings (im2cluster per K) against the training labels: AMI, NMI, ARI and
 * Hungarian accuracy per K. `labels` are the labels of the clustered images, in the same order.
 */
export const scoreClusterings = (
  clusterings: Clusterings | ReadonlyArray<{ readonly k: number; readonly im2cluster: ArrayLike<number> }>,
  labels: ArrayLike<number>,
): ReadonlyArray<ClusteringReport> => {
  const list = "clusterings" in clusterings ? clusterings.clusterings : clusterings;
  return list.map(({ k, im2cluster }) => {
    if (im2cluster.length !== labels.length) {
      throw new RangeError(`clustering K=${k} assigns ${im2cluster.length} images, ${labels.length} labels given`);
    }
    return { k, ...scoreClustering(labels, im2cluster) };
  });
};
