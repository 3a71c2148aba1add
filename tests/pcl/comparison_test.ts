import assert from "node:assert/strict";
import { pairedDifference, spread, summarise } from "../../src/pcl/comparison.ts";
import { pixelFeatures } from "../../src/eval/pixels.ts";

Deno.test("comparison: mean and sample sd, paired differences with their standard error, NaN pairs left out", () => {
  assert.deepEqual(spread([1, 2, 3]), { n: 3, mean: 2, sd: 1 });
  assert.deepEqual(spread([4]), { n: 1, mean: 4, sd: 0 });
  const d = pairedDifference([3, 5, NaN], [1, 2, 7]);
  assert.equal(d.n, 2);
  assert.equal(d.mean, 2.5);
  assert.ok(Math.abs(d.sd - Math.SQRT1_2) < 1e-15 && Math.abs(d.se - 0.5) < 1e-15, `${JSON.stringify(d)}`);
  assert.ok(Number.isNaN(pairedDifference([1], [0]).se), "one pair has no standard error");
  const runs = [0, 1].map((seed) => ({
    method: "A",
    seed,
    seconds: 10 + seed,
    evaluation: { knn: { k20: 0.5 + seed / 10 }, linear: 0.9, clustering: { ami: 0.4, nmi: 0.5, ari: 0.3, acc: 0.6 } },
  }));
  const [a] = summarise(runs, ["A"]);
  assert.deepEqual(a!.seeds, [0, 1]);
  assert.ok(Math.abs(a!.metrics["kNN k=20"]!.mean - 0.55) < 1e-15);
  assert.deepEqual(a!.metrics["seconds"], { n: 2, mean: 10.5, sd: Math.SQRT1_2 });
});

Deno.test("pixels: raw rows in [0, 1] as the backbone features, the same rows L2-normalised as the head's", () => {
  const host = {
    info: {
      name: "t",
      n: 2,
      channels: 1 as const,
      height: 1,
      width: 2,
      classes: 2,
      classNames: ["a", "b"],
      source: "t",
    },
    images: Uint8Array.from([255, 0, 51, 68]),
    labels: Int32Array.from([0, 1]),
  };
  const f = pixelFeatures(host);
  assert.deepEqual(f.backbone.shape, [2, 2]);
  assert.deepEqual([...f.backbone.data], [1, 0, 0.2, 68 / 255].map(Math.fround));
  assert.deepEqual([...f.head.data], [1, 0, 0.6, 0.8].map(Math.fround));
  assert.equal(f.labels, host.labels);
});
