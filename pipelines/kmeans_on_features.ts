/**
 * A custom pipeline in a few lines (shown in the README): your own features from a `.npy` file → k-means for several
 * K → φ, as typed stages, resumable from the artifacts in `dir`. Run it:
 *   deno run -A pipelines/kmeans_on_features.ts feats.npy runs/my-kmeans
 */
import { Effect } from "effect";
import {
  ArtifactStore,
  BundleFromBytes,
  clusterStage,
  concentrationStage,
  Gpu,
  MatrixSchema,
  Pipeline,
  readMatrix,
  runPipeline,
  stage,
} from "../mod.ts";

export const kmeansOnFeatures = (file: string, dir: string, ks: readonly number[] = [10, 20, 40]) => {
  const load = stage("features", BundleFromBytes(MatrixSchema), (path: string) => readMatrix(path));
  const pipeline = Pipeline.from(load)
    .then(clusterStage({ ks, niter: 20, nredo: 5 }))
    .then(concentrationStage(0.2));
  return runPipeline(pipeline, file, { run: "kmeans", config: { file, ks } }).pipe(
    Effect.provide(ArtifactStore.directory(dir)),
    Effect.provide(Gpu.layer),
  );
};

if (import.meta.main) {
  const [file, dir = "runs/kmeans"] = Deno.args;
  const result = await Effect.runPromise(kmeansOnFeatures(file, dir));
  for (const c of result.clusterings) {
    console.log(
      `K=${c.k}: objective ${c.objective.toFixed(3)}, mean φ ${
        (c.concentration.reduce((a, b) => a + b) / c.k).toFixed(3)
      }`,
    );
  }
}
