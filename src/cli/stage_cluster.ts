/**
 * The E-step alone, on a features file: k-means for each K, then φ when a temperature is given, written as one
 * safetensors file that PyTorch or NumPy can read.
 *
 *   deno task stage cluster --features feats.npy --k 10,20,40 \
 *     [--iters 20 --nredo 5 --seed 0 --max-points-per-centroid 1000 --spherical --temperature 0.2] \
 *     --out protos.safetensors
 *
 * Input: a `.npy` N x d float32 array, or a `.safetensors` file (its tensor `--tensor NAME`, else its only tensor,
 * else the one named "features"). Output tensors for each K: `k{K}.centroids` [K, d] F32, `k{K}.prototypes` [K, d]
 * F32 (L2-normalised), `k{K}.im2cluster` [N] I32 (int32: PyTorch indexes with it as readily as with int64, at half
 * the size), `k{K}.distances` [N] F32 (squared), and `k{K}.concentration` [K] F32 with --temperature. The header's
 * `__metadata__` holds JSON strings: `format`, `ks`, `options`, and `k{K}` (objective, restarts, splits, seed).
 */
import { Effect } from "effect";
import { readMatrix } from "../io/matrix.ts";
import { type SafeTensor, writeSafetensors } from "../io/safetensors.ts";
import { clusterStage, concentrationStage } from "../pcl/estep.ts";
import { type ClusterOptions, KMeansError } from "../pcl/kmeans.ts";

export interface StageClusterArgs {
  readonly features: string;
  readonly tensor: string | undefined;
  readonly out: string;
  readonly temperature: number | undefined;
  readonly options: ClusterOptions;
}

/** Reads the features, clusters, writes the file; returns what it wrote, for logs and tests. */
export const runStageCluster = ({ features: file, tensor, out, temperature, options }: StageClusterArgs) =>
  Effect.gen(function* () {
    const features = yield* readMatrix(file, tensor);
    const clusterings = yield* clusterStage(options).run(features).pipe(
      Effect.mapError((e) => e._tag === "KMeansError" ? new KMeansError({ message: `${file}: ${e.message}` }) : e),
    );
    const phis = temperature === undefined
      ? undefined
      : (yield* concentrationStage(temperature).run(clusterings)).clusterings.map((c) => c.concentration);

    const [n, d] = [clusterings.n, clusterings.d];
    const tensors = new Map<string, SafeTensor>();
    const metadata: Record<string, string> = {
      format: "pcl-prototypes",
      ks: JSON.stringify(options.ks),
      options: JSON.stringify({ ...options, features: file, temperature }),
    };
    for (const [i, c] of clusterings.clusterings.entries()) {
      const p = `k${c.k}`;
      tensors.set(`${p}.centroids`, { dtype: "F32", shape: [c.k, d], data: c.centroids });
      tensors.set(`${p}.prototypes`, { dtype: "F32", shape: [c.k, d], data: c.prototypes });
      tensors.set(`${p}.im2cluster`, { dtype: "I32", shape: [n], data: c.im2cluster });
      tensors.set(`${p}.distances`, { dtype: "F32", shape: [n], data: c.distances });
      if (phis !== undefined) tensors.set(`${p}.concentration`, { dtype: "F32", shape: [c.k], data: phis[i]! });
      metadata[p] = JSON.stringify({
        seed: c.seed,
        objective: c.objective,
        objectives: c.objectives,
        splits: c.splits,
        restartObjectives: c.restartObjectives,
        bestRestart: c.bestRestart,
        trainingPoints: c.trainingPoints,
      });
    }
    yield* writeSafetensors(out, tensors, metadata);
    yield* Effect.logInfo(`wrote ${out}: ${tensors.size} tensors for N=${n}, d=${d}`);
    return { file: out, tensors: [...tensors.keys()], metadata };
  });

if (import.meta.main) {
  // One parser for both ways in: this entry point is `pcl stage cluster`.
  const { main } = await import("./main.ts");
  Deno.exit(await main(["stage", "cluster", ...Deno.args]));
}
