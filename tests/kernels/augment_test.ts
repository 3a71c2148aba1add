// The augment kernel against the float64 host reference (src/data/augment_cpu.ts), which applies the operations one
// after another in the official order (flip last) while the kernel fuses them (flip folded into the warp).
// Tolerance: atol 1e-4 on normalised values (|v| <= ~5): the kernel's f32 path is O(50) roundings of values <= 5 per
// output (weights, sums, HSV round trip, exp of the blur taps), ~1e-5 at worst; a wrong tap, factor or order is
// off by 1e-2 or more.
import assert from "node:assert/strict";
import { Effect } from "effect";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { type Dataset, type HostDataset, toGpu } from "../../src/data/dataset.ts";
import {
  type AugmentPreset,
  type Dims,
  drawView,
  evalView,
  mnist,
  v1,
  v2,
  type ViewParams,
} from "../../src/data/augmentations.ts";
import { augmentCpu } from "../../src/data/augment_cpu.ts";
import { prepareAugmenter, prepareEvalViewer, prepareViews } from "../../src/ops/augment.ts";
import { readSynthetic } from "../../src/data/synthetic.ts";
import { gpuTest, randoms } from "../helpers.ts";

const ATOL = 1e-4;

/** Random bytes as a dataset (any shape, non-square allowed). */
const randomSet = (n: number, channels: 1 | 3, height: number, width: number, seed: number): HostDataset => ({
  info: { name: "rand", n, channels, height, width, classes: 1, classNames: ["x"], source: "test" },
  images: Uint8Array.from(randoms(n * channels * height * width, seed, 0, 256), Math.floor),
  labels: new Int32Array(n),
});

const dimsOf = (h: HostDataset): Dims => ({ channels: h.info.channels, height: h.info.height, width: h.info.width });
const imageOf = (h: HostDataset, i: number) => {
  const bytes = h.info.channels * h.info.height * h.info.width;
  return h.images.subarray(i * bytes, (i + 1) * bytes);
};

const GREY = { mean: [0.25], std: [0.5] };
const RGB = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** Checks every view of `outputs` ([view] -> [B, C, S, S]) against the reference for the same parameters. */
const compare = (
  what: string,
  host: HostDataset,
  indices: readonly number[],
  params: ViewParams[][], // [view][b]
  outputs: readonly Float32Array[],
  o: { side: number; mean: readonly number[]; std: readonly number[] },
) => {
  const per = host.info.channels * o.side * o.side;
  assert.equal(outputs.length, params.length);
  for (const [v, got] of outputs.entries()) {
    for (const [b, index] of indices.entries()) {
      const ref = augmentCpu(imageOf(host, index), dimsOf(host), params[v]![b]!, o.side, o.mean, o.std);
      for (let k = 0; k < per; k++) {
        const err = Math.abs(got[b * per + k]! - ref[k]!);
        if (!(err <= ATOL)) {
          assert.fail(
            `${what}: view ${v} sample ${b} element ${k}: ${got[b * per + k]} vs ${ref[k]} ` +
              `(params ${JSON.stringify(params[v]![b])})`,
          );
        }
      }
    }
  }
};

/** Runs the kernel on explicit per-sample parameters and checks every view against the reference. */
const check = (
  what: string,
  host: HostDataset,
  indices: number[],
  params: ViewParams[][], // [view][b]
  o: { side: number; mean: readonly number[]; std: readonly number[]; gather?: boolean },
) =>
  Effect.gen(function* () {
    const views = yield* prepareViews(yield* toGpu(host), {
      batch: indices.length,
      views: params.length,
      side: o.side,
      mean: o.mean,
      std: o.std,
      ...(o.gather === undefined ? {} : { gather: o.gather }),
    });
    views.write(indices, (v, b) => params[v]![b]!);
    yield* runDispatches(views.dispatches);
    const outputs: Float32Array[] = [];
    for (const t of views.outputs) outputs.push(yield* read(t));
    compare(what, host, indices, params, outputs, o);
  });

const plain = (box: ViewParams["box"], extra: Partial<ViewParams> = {}): ViewParams => ({
  box,
  outside: "box",
  angle: 0,
  flip: false,
  colour: [],
  sigma: 0,
  radius: 0,
  ...extra,
});

gpuTest(
  "warp: integer crop boxes resized up and down (antialiased), non-square source, flips",
  Effect.gen(function* () {
    const host = randomSet(6, 3, 13, 9, 1); // 13 high, 9 wide
    const boxes = [
      { x: 0, y: 0, w: 9, h: 13 },
      { x: 2, y: 3, w: 4, h: 5 },
      { x: 8, y: 12, w: 1, h: 1 },
      { x: 1, y: 0, w: 7, h: 13 },
      { x: 0, y: 6, w: 9, h: 2 },
    ];
    for (const side of [7, 20, 3]) {
      const params = [boxes.map((box, i) => plain(box, { flip: i % 2 === 1 }))];
      yield* check(`side ${side}`, host, [5, 0, 3, 3, 1], params, { side, ...RGB });
    }
  }),
);

gpuTest(
  "warp: fractional centre boxes clipped to the image (the evaluation view), and the identity",
  Effect.gen(function* () {
    const host = randomSet(3, 1, 40, 30, 2);
    const params = [[
      evalView(dimsOf(host), 16),
      plain({ x: 3.25, y: 7.5, w: 23.5, h: 23.5 }, { outside: "image" }),
      plain({ x: -2.5, y: 1, w: 35, h: 38 }, { outside: "image", flip: true }),
    ]];
    yield* check("eval boxes", host, [0, 1, 2], params, { side: 16, ...GREY });
    const square = randomSet(2, 1, 28, 28, 3);
    yield* check("identity", square, [1, 0], [[evalView(dimsOf(square), 28), evalView(dimsOf(square), 28)]], {
      side: 28,
      ...GREY,
    });
  }),
);

gpuTest(
  "warp: rotation about the box centre with zeros outside, up- and downscaled",
  Effect.gen(function* () {
    const host = randomSet(4, 1, 28, 28, 4);
    const rot = (box: ViewParams["box"], angle: number, flip = false) => plain(box, { outside: "zero", angle, flip });
    const params = [[
      rot({ x: 0, y: 0, w: 28, h: 28 }, 10),
      rot({ x: 3, y: 5, w: 20, h: 17 }, -7.5, true),
      rot({ x: 14, y: 0, w: 14, h: 28 }, 45),
      rot({ x: 0, y: 0, w: 28, h: 28 }, 90),
    ]];
    yield* check("rotation side 28", host, [0, 1, 2, 3], params, { side: 28, ...GREY });
    yield* check("rotation side 11", host, [3, 2, 1, 0], params, { side: 11, ...GREY });
  }),
);

const colour = (...ops: [ViewParams["colour"][number]["op"], number][]) => ops.map(([op, factor]) => ({ op, factor }));

gpuTest(
  "colour ops one at a time (RGB): brightness, contrast, saturation, hue, grayscale",
  Effect.gen(function* () {
    const host = randomSet(3, 3, 10, 10, 5);
    const full = { x: 0, y: 0, w: 10, h: 10 };
    const cases: ViewParams["colour"][] = [
      colour(["brightness", 0.6]),
      colour(["brightness", 1.4]),
      colour(["contrast", 0.6]),
      colour(["contrast", 1.4]),
      colour(["saturation", 0]),
      colour(["saturation", 1.4]),
      colour(["hue", 0.1]),
      colour(["hue", -0.4]),
      colour(["hue", 0.5]),
      colour(["grayscale", 0]),
    ];
    for (const ops of cases) {
      yield* check(JSON.stringify(ops), host, [0, 1, 2], [[0, 1, 2].map(() => plain(full, { colour: ops }))], {
        side: 10,
        ...RGB,
      });
    }
  }),
);

gpuTest(
  "colour ops in sequence: contrast first, in the middle and twice (one image mean per contrast)",
  Effect.gen(function* () {
    const host = randomSet(2, 3, 9, 9, 6);
    const box = { x: 1, y: 1, w: 7, h: 6 };
    const sequences = [
      colour(["contrast", 1.3], ["brightness", 0.7]),
      colour(["brightness", 1.3], ["contrast", 0.65], ["hue", 0.2], ["saturation", 1.2]),
      colour(["grayscale", 0], ["contrast", 1.4], ["brightness", 1.2], ["contrast", 0.7], ["hue", -0.05]),
      colour(["saturation", 0.7], ["hue", 0.3], ["brightness", 0.9], ["contrast", 1.1], ["grayscale", 0]),
    ];
    const params = [sequences.map((c, i) => plain(box, { colour: c, flip: i === 2 }))];
    yield* check("sequences", host, [0, 1, 1, 0], params, { side: 9, ...RGB });
    const grey = randomSet(2, 1, 9, 9, 7);
    const greyOps = [colour(["contrast", 0.6], ["brightness", 1.3]), colour(["brightness", 1.4], ["contrast", 1.4])];
    yield* check("grey", grey, [0, 1], [greyOps.map((c) => plain(box, { colour: c }))], { side: 9, ...GREY });
  }),
);

gpuTest(
  "blur: replicated edges, radius 2 and ceil(3 sigma), kernels wider than the image, after colour ops",
  Effect.gen(function* () {
    for (const [channels, side] of [[1, 12], [3, 5], [1, 3]] as const) {
      const host = randomSet(3, channels, side, side, 8 + side);
      const full = { x: 0, y: 0, w: side, h: side };
      const params = [[
        plain(full, { sigma: 0.6, radius: 2 }),
        plain(full, { sigma: 2, radius: 6, colour: colour(["contrast", 1.3]) }),
        plain(full, { sigma: 0.1, radius: 1, flip: true, colour: colour(["brightness", 0.8]) }),
      ]];
      yield* check(`C ${channels} side ${side}`, host, [0, 1, 2], params, { side, ...(channels === 3 ? RGB : GREY) });
    }
  }),
);

const presetCase = (preset: AugmentPreset, host: HostDataset, batch: number, seed: number, gather = false) =>
  Effect.gen(function* () {
    const ds = yield* toGpu(host);
    const aug = yield* prepareAugmenter(ds, { preset, batch, seed, gather });
    const indices = Array.from({ length: batch }, (_, b) => (b * 7 + 3) % host.info.n);
    aug.setStep(4, 9, indices);
    yield* runDispatches(aug.dispatches);
    const params = [0, 1].map((view) =>
      indices.map((_, sample) => drawView(preset, dimsOf(host), { seed, epoch: 4, step: 9, sample, view }))
    );
    const outputs = [yield* read(aug.outputs[0]!), yield* read(aug.outputs[1]!)];
    compare(`${preset.name} batch ${batch}${gather ? " gathered" : ""}`, host, indices, params, outputs, preset);
  });

gpuTest(
  "presets end to end: v1 and v2 on 3x32x32, mnist on 1x28x28, batch 1 and 6",
  Effect.gen(function* () {
    const rgb = readSynthetic({ n: 20, side: 32, channels: 3, seed: 1 });
    const grey = readSynthetic({ n: 20, side: 28, channels: 1, seed: 2 });
    for (const batch of [1, 6]) {
      yield* presetCase(v1({ side: 32 }), rgb, batch, 3);
      yield* presetCase(v2({ side: 32 }), rgb, batch, 4);
      yield* presetCase(mnist(), grey, batch, 5);
    }
    yield* presetCase(v2({ side: 32 }), rgb, 5, 7, true); // gathered, whole words per image
    yield* presetCase(mnist(), grey, 3, 8, true);
    yield* presetCase(v2({ side: 24 }), readSynthetic({ n: 5, side: 40, channels: 3, seed: 3 }), 4, 6); // downscale
  }),
);

gpuTest(
  "determinism: the same (seed, epoch, step) gives the same bits, also from a fresh augmenter; views and steps differ",
  Effect.gen(function* () {
    const host = readSynthetic({ n: 16, side: 28, channels: 1, seed: 9 });
    const ds = yield* toGpu(host);
    const indices = [3, 1, 4, 1, 5, 9, 2, 6];
    const outputs = Effect.fnUntraced(function* (seed: number, epoch: number, step: number) {
      const aug = yield* prepareAugmenter(ds, { preset: mnist(), batch: 8, seed });
      aug.setStep(epoch, step, indices);
      yield* runDispatches(aug.dispatches);
      return [Array.from(yield* read(aug.outputs[0]!)), Array.from(yield* read(aug.outputs[1]!))];
    });
    const [a0, a1] = yield* outputs(1, 2, 3);
    const [b0, b1] = yield* outputs(1, 2, 3);
    assert.deepEqual(b0, a0);
    assert.deepEqual(b1, a1);
    assert.notDeepEqual(a1, a0, "the two views differ");
    // the same image twice in the batch (index 1 at positions 1 and 3) still gets different views
    assert.notDeepEqual(a0.slice(784, 2 * 784), a0.slice(3 * 784, 4 * 784));
    assert.notDeepEqual((yield* outputs(1, 2, 4))[0], a0, "another step");
    assert.notDeepEqual((yield* outputs(2, 2, 3))[0], a0, "another seed");
  }),
);

gpuTest(
  "chunked dataset equals unchunked; gathering equals reading in place (odd image sizes straddle words)",
  Effect.gen(function* () {
    const host = randomSet(11, 3, 5, 5, 10); // 75 bytes per image
    const direct = yield* toGpu(host);
    const chunked = yield* toGpu(host, { maxChunkBytes: 160 }); // 2 images per chunk: 6 chunks
    assert.equal(chunked.chunks.length, 6);
    const indices = [10, 0, 5, 5, 3, 9, 1];
    const preset = v2({ side: 6, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] });
    const runWith = Effect.fnUntraced(function* (ds: Dataset, gather: boolean) {
      const aug = yield* prepareAugmenter(ds, { preset, batch: indices.length, seed: 1, gather });
      assert.equal(aug.gathered, gather || ds.chunks.length > 1);
      aug.setStep(0, 0, indices);
      yield* runDispatches(aug.dispatches);
      return [Array.from(yield* read(aug.outputs[0]!)), Array.from(yield* read(aug.outputs[1]!))];
    });
    const reference = yield* runWith(direct, false);
    assert.deepEqual(yield* runWith(direct, true), reference);
    assert.deepEqual(yield* runWith(chunked, false), reference);
    // the identity view reads the gathered bytes back exactly: byte = 255 (0.25 v + 0.5)
    const viewer = yield* prepareEvalViewer(chunked, {
      batch: indices.length,
      side: 5,
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
    });
    viewer.setIndices(indices);
    yield* runDispatches(viewer.dispatches);
    const got = Array.from(yield* read(viewer.outputs[0]!), (v) => Math.round(255 * (0.25 * v + 0.5)));
    assert.deepEqual(got, indices.flatMap((i) => Array.from(imageOf(host, i))));
  }),
);

gpuTest(
  "evaluation view: an MNIST-sized image is the identity plus normalisation; a partial last batch leaves rows alone",
  Effect.gen(function* () {
    const host = readSynthetic({ n: 5, side: 28, seed: 11 });
    const ds = yield* toGpu(host);
    const viewer = yield* prepareEvalViewer(ds, { batch: 4, side: 28, mean: [0.1307], std: [0.3081] });
    viewer.setIndices([0, 1, 2, 3]);
    yield* runDispatches(viewer.dispatches);
    const full = yield* read(viewer.outputs[0]!);
    viewer.setIndices([4]);
    yield* runDispatches(viewer.dispatches);
    const last = yield* read(viewer.outputs[0]!);
    const expect = (i: number) => Array.from(imageOf(host, i), (b) => (b / 255 - 0.1307) / 0.3081);
    const rows = (x: Float32Array, b: number) => Array.from(x.subarray(b * 784, (b + 1) * 784));
    for (let b = 0; b < 4; b++) {
      const e = expect(b), g = rows(full, b);
      assert.ok(g.every((v, k) => Math.abs(v - e[k]!) <= 1e-6 * 4), `row ${b}`); // one f32 rounding of |v| <= 3
    }
    assert.ok(rows(last, 0).every((v, k) => Math.abs(v - expect(4)[k]!) <= 4e-6));
    assert.deepEqual(rows(last, 1), rows(full, 1));
  }),
);

gpuTest(
  "bad arguments: a malformed preset or batch is a ShapeError; an index outside the dataset a RangeError",
  Effect.gen(function* () {
    const ds = yield* toGpu(readSynthetic({ n: 4, side: 8, seed: 1 }));
    const bad = yield* Effect.flip(
      prepareAugmenter(ds, { preset: { ...mnist(), ops: mnist().ops.slice(1) }, batch: 2, seed: 0 }),
    );
    assert.equal(bad._tag, "ShapeError");
    assert.match(bad.message, /first op must be resizedCrop/);
    const zero = yield* Effect.flip(prepareAugmenter(ds, { preset: mnist(), batch: 0, seed: 0 }));
    assert.equal(zero._tag, "ShapeError");
    const stats = yield* Effect.flip(prepareEvalViewer(ds, { batch: 2, side: 8, mean: [], std: [] }));
    assert.match(stats.message, /mean\/std give 0\/0 values for 1 channels/);
    const aug = yield* prepareAugmenter(ds, { preset: mnist({ side: 8 }), batch: 2, seed: 0 });
    assert.throws(() => aug.setStep(0, 0, [0, 4]), /index 4 outside the dataset \(N 4\)/);
  }),
);
