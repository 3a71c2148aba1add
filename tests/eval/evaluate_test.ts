import assert from "node:assert/strict";
import { Effect } from "effect";
import { loadDataset } from "../../src/data/source.ts";
import { encoder } from "../../src/nn/models.ts";
import { cluster } from "../../src/pcl/kmeans.ts";
import {
  evaluate,
  knnClassify,
  linearProbe,
  prepareExtractor,
  scoreClustering,
  scoreClusterings,
} from "../../src/eval/mod.ts";
import { gpuTest } from "../helpers.ts";

const view = { side: 12, mean: [0.2], std: [0.3], batch: 64 } as const;
const spec = { arch: "convnet", inChannels: 1, head: "linear", dim: 16 } as const;

gpuTest(
  "evaluate: the report is kNN, probe and test clustering of the extracted features, as JSON",
  Effect.gen(function* () {
    const enc = yield* encoder(spec, 5);
    const train = yield* loadDataset({ kind: "synthetic", n: 300, side: 12, channels: 1, classes: 4, seed: 1 });
    const test = yield* loadDataset({ kind: "synthetic", n: 90, side: 12, channels: 1, classes: 4, seed: 2 });
    const extractor = yield* prepareExtractor(enc, view);
    const options = {
      view,
      extractor,
      knn: { ks: [5, 20] },
      probe: { epochs: 4, batch: 64, trainImages: 200 },
      kmeans: { niter: 5, nredo: 2 },
    };
    const report = yield* evaluate(enc, { train, test }, options);
    assert.deepEqual(Object.keys(report.knn), ["k5", "k20"]);
    assert.deepEqual(report.counts, { train: 300, test: 90, probeTrain: 200, classes: 4 });
    assert.deepEqual(JSON.parse(JSON.stringify(report)), report, "plain data");

    // The same numbers from the parts: evaluate only wires them together.
    const ftrain = yield* extractor.extract(train), ftest = yield* extractor.extract(test);
    const knn = yield* knnClassify(ftrain.backbone, ftrain.labels, ftest.backbone, ftest.labels, {
      ks: [5, 20],
      classes: 4,
    });
    assert.deepEqual(report.knn, { k5: knn[0]!.top1, k20: knn[1]!.top1 });
    const probe = yield* linearProbe(
      { data: ftrain.backbone.data.subarray(0, 200 * 128), shape: [200, 128] },
      ftrain.labels.subarray(0, 200),
      ftest.backbone,
      ftest.labels,
      { epochs: 4, batch: 64, classes: 4 },
    );
    assert.equal(report.linear, probe.top1);
    const { clusterings } = yield* cluster(ftest.head, { ks: [4], niter: 5, nredo: 2 });
    assert.deepEqual(report.clustering, scoreClustering(ftest.labels, clusterings[0]!.im2cluster));
    // A random encoder on these shapes is far from chance on kNN (the classes differ in their pixels).
    assert.ok(report.knn.k5! > 0.5, `kNN k=5 ${report.knn.k5}`);
    for (const v of [report.linear, ...Object.values(report.clustering)]) assert.ok(v >= -1 && v <= 1);
  }),
);

Deno.test("scoreClusterings: each K's im2cluster scored against the labels; mismatched lengths throw", () => {
  const labels = Int32Array.from({ length: 40 }, (_, i) => i % 4);
  const fine = Int32Array.from({ length: 40 }, (_, i) => i % 8); // a refinement of the labels
  const coarse = Int32Array.from({ length: 40 }, (_, i) => (i % 4) >> 1);
  const scores = scoreClusterings([{ k: 8, im2cluster: fine }, { k: 2, im2cluster: coarse }], labels);
  assert.deepEqual(scores, [
    { k: 8, ...scoreClustering(labels, fine) },
    { k: 2, ...scoreClustering(labels, coarse) },
  ]);
  assert.equal(scores[0]!.acc, 0.5); // 8 clusters of 5: the best 4 matched clusters hold half the images
  assert.throws(() => scoreClusterings([{ k: 2, im2cluster: coarse.subarray(1) }], labels), RangeError);
});
