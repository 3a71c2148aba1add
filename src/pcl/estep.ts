/**
 * The E-step as three stages (docs/algorithm.md §2–§4), the one definition of each that training, `stage cluster` and
 * pipelines/kmeans_on_features.ts build on:
 *
 *   encode: the momentum encoder's features of the training set (evaluation view)   ->  Matrix
 *   cluster: k-means for each K                                                      ->  Clusterings
 *   concentration: φ of every prototype, mean τ                                       ->  Prototypes
 *
 * Each stage's artifact is one safetensors-layout bundle, so a run resumes after any of them.
 */
import { Effect, Schema } from "effect";
import type { Dataset } from "../data/dataset.ts";
import type { FeatureExtractor } from "../eval/features.ts";
import { BundleFromBytes, TensorField } from "../graph/codecs.ts";
import { stage } from "../graph/stage.ts";
import { concentration } from "./concentration.ts";
import { cluster, type Clusterings, type ClusterOptions, type Features } from "./kmeans.ts";

const F32 = TensorField(Float32Array<ArrayBuffer>);
const Numbers = Schema.Array(Schema.Number);

export const MatrixSchema = Schema.Struct({ data: F32, shape: Schema.Tuple([Schema.Number, Schema.Number]) });

export const ClusteringSchema = Schema.Struct({
  k: Schema.Number,
  seed: Schema.Number,
  centroids: F32,
  prototypes: F32,
  im2cluster: TensorField(Int32Array<ArrayBuffer>),
  distances: F32,
  objective: Schema.Number,
  objectives: Numbers,
  splits: Numbers,
  restartObjectives: Numbers,
  bestRestart: Schema.Number,
  trainingPoints: Schema.Number,
});

export const ClusteringsSchema = Schema.Struct({
  n: Schema.Number,
  d: Schema.Number,
  clusterings: Schema.Array(ClusteringSchema),
});

export const PrototypesSchema = Schema.Struct({
  n: Schema.Number,
  d: Schema.Number,
  temperature: Schema.Number,
  clusterings: Schema.Array(Schema.Struct({ ...ClusteringSchema.fields, concentration: F32 })),
});

/** The head features of `dataset` under `extractor`'s encoder; the input (an epoch, say) only names the run. */
export const encodeStage = (extractor: FeatureExtractor, dataset: Dataset) =>
  stage("encode", BundleFromBytes(MatrixSchema), (_: unknown) => Effect.map(extractor.extract(dataset), (f) => f.head));

/** One line per K: objective, empty clusters, largest cluster, winning restart. */
const logClusterings = (result: Clusterings) =>
  Effect.forEach(result.clusterings, (c) => {
    const sizes = new Int32Array(c.k);
    for (const a of c.im2cluster) sizes[a]++;
    return Effect.logInfo(
      `k-means K=${c.k}: objective ${c.objective.toPrecision(7)}, ${sizes.filter((s) => s === 0).length} empty, ` +
        `largest ${Math.max(...sizes)}, restart ${c.bestRestart} of ${c.restartObjectives.length}`,
    );
  }, { discard: true });

/** k-means for each K of `options.ks` (the K at position i seeded with seed + i). */
export const clusterStage = (options: ClusterOptions) =>
  stage(
    "cluster",
    BundleFromBytes(ClusteringsSchema),
    (features: Features) => Effect.tap(cluster(features, options), logClusterings),
  );

/** φ of every clustering, rescaled to mean `temperature`. */
export const concentrationStage = (temperature: number) =>
  stage(
    "concentration",
    BundleFromBytes(PrototypesSchema),
    (clusterings: Clusterings) => concentration(clusterings, temperature),
  );
