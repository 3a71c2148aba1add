import assert from "node:assert/strict";
import { compareMethods, pairedDifference, spread, summarise } from "../../src/pcl/comparison.ts";
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

Deno.test("comparison: methods pair by seed, out of order, a seed only one method ran left out", () => {
  const run = (method: string, seed: number, knn: number, seconds: number) => ({
    method,
    seed,
    seconds,
    evaluation: { knn: { k20: knn }, linear: 0.9, clustering: { ami: 0.4, nmi: 0.5, ari: 0.3, acc: 0.6 } },
  });
  // A has seeds 1, 0, 2 (2 unmatched); B has 0 and 1, pushed in the other order.
  const runs = [
    run("A", 1, 0.7, 12),
    run("B", 0, 0.5, 10),
    run("A", 0, 0.6, 14),
    run("A", 2, 0.1, 1),
    run("B", 1, 0.4, 9),
  ];
  const d = compareMethods(runs, "A", "B");
  // Pairs: seed 0 0.6 − 0.5, seed 1 0.7 − 0.4: mean 0.2, sd 0.1·√2, SE 0.1.
  assert.equal(d["kNN k=20"]!.n, 2);
  assert.ok(Math.abs(d["kNN k=20"]!.mean - 0.2) < 1e-12, `${JSON.stringify(d["kNN k=20"])}`);
  assert.ok(Math.abs(d["kNN k=20"]!.se - 0.1) < 1e-12, `${JSON.stringify(d["kNN k=20"])}`);
  // Seconds: 14 − 10 and 12 − 9.
  assert.equal(d["seconds"]!.mean, 3.5);
  assert.equal(d["linear"]!.mean, 0);
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
