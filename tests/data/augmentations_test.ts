// The drawn augmentation parameters: ranges, rates and orders over many samples, determinism and view independence.
// Rates are checked over n = 20,000 draws against +-0.015, which is 4.7 standard deviations of a binomial rate at
// p = 0.5 (sd 0.0035) and more at other p: a correct sampler fails such a check with probability < 1e-5.
import assert from "node:assert/strict";
import {
  type AugmentPreset,
  drawCrop,
  drawView,
  evalView,
  mnist,
  presetProblem,
  roundHalfEven,
  v1,
  v2,
  viewDraws,
  type ViewParams,
} from "../../src/data/augmentations.ts";

const N = 20000;
const RGB224 = { channels: 3, height: 224, width: 224 };

const draws = (preset: AugmentPreset, dims = RGB224, n = N, view = 0): ViewParams[] =>
  Array.from(
    { length: n },
    (_, i) => drawView(preset, dims, { seed: 11, epoch: i >> 8, step: 3, sample: i & 255, view }),
  );

const rate = (xs: boolean[]) => xs.filter(Boolean).length / xs.length;
const near = (actual: number, expected: number, tol: number, what: string) =>
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual}, expected ${expected} +- ${tol}`);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const factors = (ps: ViewParams[], op: string) =>
  ps.flatMap((p) => p.colour.filter((c) => c.op === op).map((c) => c.factor));

Deno.test("roundHalfEven rounds as Python's round", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, 4, -0, -2, 2, 3]);
});

Deno.test("random resized crop: area in [0.2, 1], ratio in [3/4, 4/3], inside the image, covering the ranges", () => {
  const ps = draws(v2());
  const areas = ps.map((p) => (p.box.w * p.box.h) / (224 * 224));
  const logRatios = ps.map((p) => Math.log(p.box.w / p.box.h));
  // w and h are rounded to whole pixels: at >= 100 px that moves the area by < 1% and the ratio by < 1%
  assert.ok(
    Math.min(...areas) >= 0.2 * 0.99 && Math.max(...areas) <= 1,
    `areas ${Math.min(...areas)}..${Math.max(...areas)}`,
  );
  assert.ok(Math.min(...areas) < 0.21 && Math.max(...areas) > 0.95, "the area range is covered");
  const lim = Math.log(4 / 3) + 0.01;
  assert.ok(logRatios.every((r) => Math.abs(r) <= lim), "ratio within [3/4, 4/3]");
  assert.ok(Math.max(...logRatios) > 0.27 && Math.min(...logRatios) < -0.27, "the ratio range is covered");
  near(mean(logRatios), 0, 0.01, "mean log ratio (symmetric)");
  for (const p of ps) {
    assert.ok(p.box.x >= 0 && p.box.y >= 0 && p.box.x + p.box.w <= 224 && p.box.y + p.box.h <= 224, "inside");
    assert.ok(Number.isInteger(p.box.x + p.box.y + p.box.w + p.box.h), "integer box");
  }
  // positions: the left edge is uniform over the free range; its mean relative position is 1/2
  near(mean(ps.map((p) => p.box.x / Math.max(1, 224 - p.box.w))), 0.5, 0.01, "relative left edge");
});

Deno.test("random resized crop: after 10 failed attempts, torchvision's centre-crop fallback", () => {
  const d = viewDraws({ seed: 0, epoch: 0, step: 0, sample: 0, view: 0 });
  // area fraction 1 with ratio >= 2 never fits a square: in_ratio 1 < 2 -> w = width, h = round(w / 2), centred
  assert.deepEqual(drawCrop(d, 50, 50, [1, 1], [2, 3]), { x: 0, y: 12, w: 50, h: 25 });
  // a wide image (in_ratio 4 > 4/3) with an impossible scale: h = height, w = round(h * 4/3)
  assert.deepEqual(drawCrop(d, 30, 120, [1.5, 2], [3 / 4, 4 / 3]), { x: 40, y: 0, w: 40, h: 30 });
  // in range: the whole image
  assert.deepEqual(drawCrop(d, 30, 36, [1.5, 2], [3 / 4, 4 / 3]), { x: 0, y: 0, w: 36, h: 30 });
});

Deno.test("v2: jitter p = 0.8 with factors in range, order uniform over the 24 permutations, gray 0.2, blur 0.5, flip 0.5", () => {
  const ps = draws(v2());
  const jittered = ps.filter((p) => p.colour.some((c) => c.op !== "grayscale"));
  near(jittered.length / N, 0.8, 0.015, "jitter rate");
  for (const op of ["brightness", "contrast", "saturation"]) {
    const f = factors(ps, op);
    assert.ok(f.every((x) => x >= 0.6 && x <= 1.4), `${op} in [0.6, 1.4]`);
    near(mean(f), 1, 0.01, `${op} mean`); // U(0.6, 1.4): sd 0.23, sd of the mean over 16,000 draws 0.0018
  }
  const hue = factors(ps, "hue");
  assert.ok(hue.every((x) => Math.abs(x) <= 0.1), "hue in [-0.1, 0.1]");
  near(mean(hue), 0, 0.003, "hue mean");
  // each jittered view has all four ops once; grayscale (if drawn) comes after them, as in the v2 order
  const orders = new Map<string, number>();
  for (const p of jittered) {
    const ops = p.colour.map((c) => c.op);
    const four = ops.filter((o) => o !== "grayscale");
    assert.equal(new Set(four).size, 4);
    if (ops.includes("grayscale")) assert.equal(ops.at(-1), "grayscale");
    orders.set(four.join(","), (orders.get(four.join(",")) ?? 0) + 1);
  }
  assert.equal(orders.size, 24);
  // 16,000 over 24 orders: 667 expected, sd 25.3; chi-square with 23 dof, p = 0.001 at 49.7
  const expect = jittered.length / 24;
  const chi2 = [...orders.values()].reduce((s, c) => s + (c - expect) ** 2 / expect, 0);
  assert.ok(chi2 < 49.7, `order chi-square ${chi2}`);
  near(rate(ps.map((p) => p.colour.some((c) => c.op === "grayscale"))), 0.2, 0.015, "grayscale rate");
  near(rate(ps.map((p) => p.sigma > 0)), 0.5, 0.015, "blur rate");
  const sig = ps.filter((p) => p.sigma > 0);
  assert.ok(sig.every((p) => p.sigma >= 0.1 && p.sigma <= 2 && p.radius === Math.ceil(3 * p.sigma)), "sigma, radius");
  near(mean(sig.map((p) => p.sigma)), 1.05, 0.02, "sigma mean (U(0.1, 2): sd 0.55, sd of mean 0.0055)");
  near(rate(ps.map((p) => p.flip)), 0.5, 0.015, "flip rate");
  assert.ok(ps.every((p) => p.angle === 0 && p.outside === "box"));
});

Deno.test("v1: grayscale (0.2) before an always-applied jitter with hue 0.4; no blur", () => {
  const ps = draws(v1(), RGB224, 5000);
  for (const p of ps) {
    const ops = p.colour.map((c) => c.op);
    assert.equal(ops.filter((o) => o !== "grayscale").length, 4, "jitter always applied");
    if (ops.includes("grayscale")) assert.equal(ops[0], "grayscale");
    assert.equal(p.sigma, 0);
  }
  const hue = factors(ps, "hue");
  assert.ok(Math.max(...hue) > 0.38 && Math.min(...hue) < -0.38 && hue.every((h) => Math.abs(h) <= 0.4));
  near(rate(ps.map((p) => p.colour[0]!.op === "grayscale")), 0.2, 0.025, "grayscale rate (n = 5000: sd 0.0057)");
});

Deno.test("mnist: rotation within +-10 degrees, contrast then brightness (p 0.8), 5 x 5 blur (p 0.5), never a flip", () => {
  const grey28 = { channels: 1, height: 28, width: 28 };
  const ps = draws(mnist(), grey28);
  assert.ok(ps.every((p) => !p.flip && p.outside === "zero"));
  const angles = ps.map((p) => p.angle);
  assert.ok(angles.every((a) => Math.abs(a) <= 10) && Math.max(...angles) > 9.9 && Math.min(...angles) < -9.9);
  near(mean(angles), 0, 0.1, "mean angle (U(-10, 10): sd 5.8, sd of mean 0.04)");
  const areas = ps.map((p) => (p.box.w * p.box.h) / 784);
  // at 28 px rounding moves the area by up to ~2 px per side: the realised fraction stays above 0.5 * (1 - 0.08)
  assert.ok(areas.every((a) => a >= 0.46 && a <= 1), "area fraction");
  for (const p of ps) {
    if (p.colour.length > 0) assert.deepEqual(p.colour.map((c) => c.op), ["contrast", "brightness"]);
    if (p.sigma > 0) assert.ok(p.radius === 2 && p.sigma >= 0.1 && p.sigma <= 1);
  }
  near(rate(ps.map((p) => p.colour.length > 0)), 0.8, 0.015, "jitter rate");
  near(rate(ps.map((p) => p.sigma > 0)), 0.5, 0.015, "blur rate");
  for (const op of ["contrast", "brightness"]) {
    const f = factors(ps, op);
    assert.ok(f.every((x) => x >= 0.6 && x <= 1.4) && Math.min(...f) < 0.61 && Math.max(...f) > 1.39, op);
  }
});

Deno.test("grey inputs skip saturation, hue and grayscale", () => {
  const ps = draws(v2(), { channels: 1, height: 28, width: 28 }, 2000);
  const ops = new Set(ps.flatMap((p) => p.colour.map((c) => c.op)));
  assert.deepEqual([...ops].sort(), ["brightness", "contrast"]);
});

Deno.test("determinism: the same key gives the same parameters; any change of key gives others; views independent", () => {
  const key = { seed: 5, epoch: 2, step: 17, sample: 9, view: 1 };
  assert.deepEqual(drawView(v2(), RGB224, key), drawView(v2(), RGB224, { ...key }));
  for (const change of [{ seed: 6 }, { epoch: 3 }, { step: 18 }, { sample: 10 }, { view: 0 }]) {
    assert.notDeepEqual(
      drawView(v2(), RGB224, { ...key, ...change }),
      drawView(v2(), RGB224, key),
      JSON.stringify(change),
    );
  }
  const a = draws(v2(), RGB224, N, 0), b = draws(v2(), RGB224, N, 1);
  near(rate(a.map((p, i) => p.flip === b[i]!.flip)), 0.5, 0.015, "P(same flip in both views)");
  const ax = a.map((p) => p.box.w * p.box.h), bx = b.map((p) => p.box.w * p.box.h);
  const ma = mean(ax), mb = mean(bx);
  const cov = mean(ax.map((x, i) => (x - ma) * (bx[i]! - mb)));
  const corr = cov / Math.sqrt(mean(ax.map((x) => (x - ma) ** 2)) * mean(bx.map((x) => (x - mb) ** 2)));
  near(corr, 0, 0.035, "correlation of the two views' crop areas (sd 1/sqrt(N) = 0.007)");
});

Deno.test("evaluation view: identity for an S x S image, Resize(256)/CenterCrop(224) as one centre box otherwise", () => {
  assert.deepEqual(evalView({ channels: 1, height: 28, width: 28 }, 28).box, { x: 0, y: 0, w: 28, h: 28 });
  // 256 x 320 at S = 224: the shorter side is already 256, so the crop is the centre 224 x 224
  assert.deepEqual(evalView({ channels: 3, height: 256, width: 320 }, 224).box, { x: 48, y: 16, w: 224, h: 224 });
  // 512 x 512: resized by 1/2 then cropped, i.e. the centre 448 x 448 of the source
  assert.deepEqual(evalView({ channels: 3, height: 512, width: 512 }, 224).box, { x: 32, y: 32, w: 448, h: 448 });
  const p = evalView({ channels: 3, height: 64, width: 64 }, 32);
  assert.equal(p.colour.length + p.sigma + p.angle + (p.flip ? 1 : 0), 0);
});

Deno.test("presets: the official orders pass the kernel's structure check; others are refused with a reason", () => {
  for (const p of [v1(), v2(), mnist(), v2({ side: 32 })]) assert.equal(presetProblem(p), undefined, p.name);
  const blurFirst: AugmentPreset = { ...v2(), ops: [v2().ops[0]!, v2().ops[3]!, v2().ops[1]!] };
  assert.match(presetProblem(blurFirst)!, /blur must come after the colour ops/);
  assert.match(presetProblem({ ...v2(), ops: v2().ops.slice(1) })!, /first op must be resizedCrop/);
});
