import assert from "node:assert/strict";
import { Effect, References } from "effect";
import { writeNpy } from "../../src/io/npy.ts";
import { kmeansOnFeatures } from "../../pipelines/kmeans_on_features.ts";
import { randoms, withTempDir } from "../helpers.ts";

Deno.test("example: the README's custom pipeline (k-means on your own features) runs and resumes", () =>
  withTempDir("pcl-example-", async (dir) => {
    // 600 points around 6 well-separated centres in 8-D.
    const centres = randoms(6 * 8, 1, -5, 5), noise = randoms(600 * 8, 2, -0.1, 0.1);
    const data = Float32Array.from(
      { length: 600 * 8 },
      (_, i) => centres[(Math.floor(i / 8) % 6) * 8 + (i % 8)] + noise[i],
    );
    await Effect.runPromise(writeNpy(`${dir}/feats.npy`, { shape: [600, 8], data }));
    const quiet = <A, E>(e: Effect.Effect<A, E>) => Effect.provideService(e, References.MinimumLogLevel, "Warn");
    const result = await Effect.runPromise(quiet(kmeansOnFeatures(`${dir}/feats.npy`, `${dir}/runs`, [6, 12])));
    assert.deepEqual(result.clusterings.map((c) => c.k), [6, 12]);
    for (const c of result.clusterings) {
      assert.equal(c.im2cluster.length, 600);
      assert.ok(c.im2cluster.every((a) => a >= 0 && a < c.k));
      // A point's squared distance to its centroid is at most the noise's (0.1 per axis over 8 axes) unless two
      // centres share a cluster; either way it is the distance to the mean of its own cluster.
      assert.ok(Number.isFinite(c.objective) && c.objective > 0);
    }
    for (const c of result.clusterings) {
      const mean = c.concentration.reduce((a, b) => a + b, 0) / c.k;
      assert.ok(Math.abs(mean - 0.2) < 1e-6, `φ is rescaled to mean τ: ${mean}`);
    }
    // A second run resumes from the artifacts: same result, nothing recomputed.
    const again = await Effect.runPromise(quiet(kmeansOnFeatures(`${dir}/feats.npy`, `${dir}/runs`, [6, 12])));
    assert.deepEqual(again.clusterings[1].im2cluster, result.clusterings[1].im2cluster);
  }));
