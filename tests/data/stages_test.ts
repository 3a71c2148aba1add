import assert from "node:assert/strict";
import { Effect, Schema } from "effect";
import { decode as decodePng } from "fast-png";
import { ArtifactStore, Pipeline, runPipeline } from "../../src/graph/mod.ts";
import { HostDatasetSchema, loadStage } from "../../src/data/stages.ts";
import { augmentBatch, AugmentedBatch, augmentStage } from "../../src/data/stages.ts";
import { renderPreview } from "../../src/cli/stage_augment.ts";
import { cli } from "../cli/run.ts";
import { BundleFromBytes } from "../../src/graph/codecs.ts";
import { Sampler } from "../../src/data/dataset.ts";
import { v2 } from "../../src/data/augmentations.ts";
import { gpuTest, tempDir } from "../helpers.ts";

const source = { kind: "synthetic", n: 40, side: 12, channels: 3, seed: 5 } as const;

gpuTest(
  "load -> augment as a pipeline: artifacts round-trip, a second run resumes, the views are the stage's",
  Effect.gen(function* () {
    const options = { preset: "v2", batch: 8, seed: 3, epoch: 1, step: 2 } as const;
    const pipeline = Pipeline.from(loadStage).then(augmentStage({ ...options, preset: v2({ side: 16 }) }));
    const run = { run: "aug", config: { source, ...options } };
    const first = yield* runPipeline(pipeline, source, run);
    const again = yield* runPipeline(pipeline, source, run); // both stages resumed from their artifacts
    assert.deepEqual(again, first);
    assert.deepEqual(first.shape, [8, 3, 16, 16]);
    assert.equal(first.views.length, 2);
    assert.deepEqual(Array.from(first.indices), Array.from(new Sampler(40, 8, 3).indices(1, 2)));
    const host = yield* loadStage.run(source);
    const direct = yield* augmentBatch(host, { ...options, preset: v2({ side: 16 }) });
    assert.deepEqual(direct.views, first.views);
    // the load artifact is the dataset itself
    const codec = BundleFromBytes(HostDatasetSchema);
    const decoded = yield* Schema.decodeUnknownEffect(codec)(yield* Schema.encodeUnknownEffect(codec)(host));
    assert.deepEqual(decoded.images, host.images);
    assert.deepEqual(decoded.info, host.info);
    const batchCodec = BundleFromBytes(AugmentedBatch);
    const back = yield* Schema.decodeUnknownEffect(batchCodec)(yield* Schema.encodeUnknownEffect(batchCodec)(first));
    assert.deepEqual(back.views[1], first.views[1]);
    const tooFar = yield* Effect.flip(augmentBatch(host, { ...options, step: 5 }));
    assert.match(tooFar.message, /an epoch of 40 images has 5 steps/);
  }).pipe(Effect.provide(ArtifactStore.memory)),
);

gpuTest(
  "preview: a valid PNG of (1 + views) x n tiles, originals then views; bad flags are usage errors naming the flag",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-preview-");
    const file = `${dir}/grid.png`;
    const made = yield* Effect.promise(() =>
      cli("stage", "augment", "--preview", file, "--preset", "mnist", "--n", "3", "--views", "2", "--seed", "1")
    );
    assert.equal(made.code, 0, made.out);
    const png = decodePng(yield* Effect.promise(() => Deno.readFile(file)));
    // 28-px tiles zoomed 4x, 2-px gaps, a double gap after the originals: width 3 tiles + 5 gaps, height 3 + 4
    assert.deepEqual([png.width, png.height, png.channels], [3 * 112 + 5 * 2, 3 * 112 + 4 * 2, 3]);
    assert.match(made.out, new RegExp(`wrote .*grid\\.png \\(${png.width}x${png.height}\\): 3 images`));
    // the original tile of row 0 is the image itself: grey, so R = G = B, and MNIST strokes reach full white
    const tile = (row: number, col: number) => {
      const values: number[] = [];
      const left = 2 + col * 114 + (col > 0 ? 2 : 0), top = 2 + row * 114;
      for (let y = 0; y < 112; y++) {
        for (let x = 0; x < 112; x++) values.push(png.data[3 * ((top + y) * png.width + left + x)]!);
      }
      return values;
    };
    assert.ok(Math.max(...tile(0, 0)) === 255 && Math.min(...tile(0, 0)) === 0);
    assert.notDeepEqual(tile(0, 1), tile(0, 0));
    assert.notDeepEqual(tile(0, 1), tile(0, 2));
    const rgb = yield* renderPreview({
      preset: "v2",
      source: { kind: "synthetic", n: 16, side: 16, channels: 3, seed: 1 },
      n: 2,
      views: 3,
      seed: 0,
      epoch: 0,
      step: 0,
      zoom: 2,
    });
    assert.deepEqual([rgb.width, rgb.height, rgb.side], [4 * 32 + 6 * 2, 2 * 32 + 3 * 2, 16]);
    for (
      const [args, message] of [
        [[], /--preview/],
        [["--preview", file, "--preset", "v9"], /--preset must be one of .*, not 'v9'/],
        [["--preview", file, "--n", "0"], /--n must be an integer >= 1, not 0/],
        [["--preview", file, "--source", "nowhere"], /--source 'nowhere' is not a source/],
        [["--bogus"], /bogus/],
      ] as const
    ) {
      const r = yield* Effect.promise(() => cli("stage", "augment", ...args));
      assert.equal(r.code, 2, `${args}: ${r.out}`);
      assert.match(r.out, message);
    }
    // More images than the source holds, or a step past the epoch: a typed error naming the flag, not a crash.
    const source = ["--source", "synthetic"]; // 512 images
    for (
      const [args, message] of [
        [["--n", "600"], /--n 600 is more than the 512 images/],
        [["--n", "8", "--step", "64"], /--step 64: .* has 64 steps of 8 images per epoch/],
      ] as const
    ) {
      const r = yield* Effect.promise(() => cli("stage", "augment", "--preview", file, ...source, ...args));
      assert.equal(r.code, 1, `${args}: ${r.out}`);
      assert.match(r.out, message);
    }
  }),
);
