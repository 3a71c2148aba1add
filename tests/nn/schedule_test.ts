import assert from "node:assert/strict";
import { cosineLr, learningRate, stepLr } from "../../src/nn/schedule.ts";

// Expected values worked out by hand (PCL defaults: lr 0.03, 200 epochs). Where the schedule multiplies exactly
// (×0.5, ×1) the result is compared exactly; elsewhere to 1e-15 relative, float64 rounding of cos and products.
const close = (actual: number, expected: number, what: string, rtol = 1e-15) =>
  assert.ok(Math.abs(actual - expected) <= rtol * Math.abs(expected), `${what}: ${actual}, expected ${expected}`);

Deno.test("step schedule: ×0.1 at epochs 120 and 160, the factors applied one at a time as PCL does", () => {
  assert.equal(stepLr(0.03, 0), 0.03);
  assert.equal(stepLr(0.03, 119), 0.03);
  close(stepLr(0.03, 120), 0.003, "epoch 120");
  close(stepLr(0.03, 159), 0.003, "epoch 159");
  close(stepLr(0.03, 160), 0.0003, "epoch 160");
  close(stepLr(0.03, 199), 0.0003, "epoch 199");
  // bit for bit what Python computes: lr *= 0.1 twice, not lr * 0.01
  assert.equal(stepLr(0.03, 160), 0.03 * 0.1 * 0.1);
  assert.equal(stepLr(0.03, 160), 0.00030000000000000003);
  // other milestones (the linear probe: 60 and 80)
  assert.equal(stepLr(5, 59, [60, 80]), 5);
  close(stepLr(5, 60, [60, 80]), 0.5, "probe epoch 60");
  close(stepLr(5, 80, [60, 80]), 0.05, "probe epoch 80");
  assert.equal(stepLr(0.1, 500, []), 0.1);
});

Deno.test("cosine schedule: lr at epoch 0, lr/2 at E/2, lr·(1 − cos(π/E))/2 at E − 1; no warm-up", () => {
  const E = 200;
  assert.equal(cosineLr(0.03, 0, E), 0.03);
  assert.equal(cosineLr(0.03, E / 2, E), 0.015); // cos(π/2) ≈ 6e-17 vanishes next to 1
  // 1 − cos(π/200) = x²/2 − x⁴/24 + x⁶/720 − …, x = π/200: 1.2336751833...e-4; times 0.03 / 2. The schedule's
  // 1 + cos(199π/200) cancels 4 digits (an ulp of 1 is 1.8e-12 of 1.2e-4), as in PCL's own float64 arithmetic
  close(cosineLr(0.03, E - 1, E), 1.850512775091020416e-6, "epoch E − 1", 1e-11);
  close(cosineLr(0.03, 50, E), 0.03 * 0.5 * (1 + Math.SQRT1_2), "epoch E/4");
  // a short run: E = 4 → lr · [1, (1 + √½)/2, ½, (1 − √½)/2]
  const four = [0, 1, 2, 3].map((e) => cosineLr(1, e, 4));
  close(four[1]!, (1 + Math.SQRT1_2) / 2, "E = 4, epoch 1");
  close(four[3]!, (1 - Math.SQRT1_2) / 2, "E = 4, epoch 3");
  assert.equal(four[0], 1);
  assert.equal(four[2], 0.5);
  assert.throws(() => cosineLr(0.03, 0, 0), RangeError);
});

Deno.test("learningRate dispatches on the schedule's kind, with the default milestones", () => {
  assert.equal(learningRate({ kind: "step" }, 0.03, 119, 200), 0.03);
  assert.equal(learningRate({ kind: "step" }, 0.03, 160, 200), stepLr(0.03, 160));
  assert.equal(learningRate({ kind: "step", milestones: [10] }, 1, 10, 200), 0.1);
  assert.equal(learningRate({ kind: "cosine" }, 0.03, 199, 200), cosineLr(0.03, 199, 200));
});
