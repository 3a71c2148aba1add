import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { alloc, read, runDispatches } from "../../src/gpu/kernel.ts";
import { ShapeError } from "../../src/gpu/errors.ts";
import { loadDataset } from "../../src/data/source.ts";
import { prepareEvalViewer } from "../../src/ops/augment.ts";
import { copy } from "../../src/ops/fill.ts";
import { bindEncoder, encoder } from "../../src/nn/models.ts";
import { prepareExtractor } from "../../src/eval/features.ts";
import { assertClose, gpuTest } from "../helpers.ts";

const view = { side: 12, mean: [0.2], std: [0.3] } as const;
const spec = { arch: "convnet", inChannels: 1, head: "mlp", hidden: 16, dim: 8 } as const;

/** All n images in one forward pass of a batch of exactly n: what the batched extraction must reproduce. */
const oneBatch = (
  enc: Effect.Success<ReturnType<typeof encoder>>,
  dataset: Effect.Success<ReturnType<typeof loadDataset>>,
  n: number,
) =>
  Effect.gen(function* () {
    const viewer = yield* prepareEvalViewer(dataset, { batch: n, ...view });
    const x = yield* alloc([n, 1, view.side, view.side], "f32", "reference input");
    const bound = yield* bindEncoder(enc, x, { train: false, grad: false });
    viewer.setIndices(Uint32Array.from({ length: n }, (_, i) => i));
    yield* runDispatches([...viewer.dispatches, yield* copy(viewer.outputs[0]!, x), ...bound.forward]);
    return { f: yield* read(bound.features), z: yield* read(bound.z) };
  });

// Tolerance: the same kernels on the same rows; only the batch size differs, which may change the matmul's blocking
// but not the order of any sum. 1e-6 absolute / relative allows for a different FMA contraction, nothing more.
gpuTest(
  "extract: batched features (partial last batch, several readbacks, two datasets) equal one big batch",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const enc = yield* encoder(spec, 3);
    const train = yield* loadDataset({ kind: "synthetic", n: 37, side: 14, channels: 1, seed: 1 });
    const test = yield* loadDataset({ kind: "synthetic", n: 11, side: 14, channels: 1, seed: 2 });
    // Batch 8 and a collection buffer of two batches: 5 batches, the last of 5 rows, 3 readbacks.
    const extractor = yield* prepareExtractor(enc, { ...view, batch: 8, collectBytes: 2 * 8 * 128 * 4 });
    for (const [dataset, n] of [[train, 37], [test, 11], [train, 37]] as const) {
      const got = yield* extractor.extract(dataset);
      const want = yield* oneBatch(enc, dataset, n);
      assert.equal(got.n, n);
      assert.deepEqual(got.backbone.shape, [n, 128]);
      assert.deepEqual(got.head.shape, [n, 8]);
      assert.deepEqual(got.labels, dataset.labels);
      assertClose(got.backbone.data, want.f, { atol: 1e-6, rtol: 1e-6, what: "backbone features" });
      assertClose(got.head.data, want.z, { atol: 1e-6, rtol: 1e-6, what: "head features" });
      // Not a constant: the rows differ from each other (so a wrong row order could not pass).
      assert.notDeepEqual(got.head.data.subarray(0, 8), got.head.data.subarray(8, 16));
    }
    const first = yield* extractor.extract(train, 9);
    const all = yield* extractor.extract(train);
    assert.equal(first.n, 9);
    assert.deepEqual(first.backbone.data, all.backbone.data.subarray(0, 9 * 128));
    assert.deepEqual(first.labels, train.labels.subarray(0, 9));
    // The extractor reads the current weights (training updates the stores in place): new weights, new features.
    const before = yield* extractor.extract(test);
    const params = yield* read(enc.params.values);
    gpu.write(enc.params.values, params.map((v) => v * 1.5));
    const after = yield* extractor.extract(test);
    assert.notDeepEqual(after.head.data, before.head.data);
    assertClose(after.head.data, (yield* oneBatch(enc, test, 11)).z, { atol: 1e-6, rtol: 1e-6, what: "new weights" });
  }),
);

gpuTest(
  "extract: a dataset with the wrong number of channels is a ShapeError",
  Effect.gen(function* () {
    const enc = yield* encoder(spec, 3);
    const rgb = yield* loadDataset({ kind: "synthetic", n: 4, side: 12, channels: 3, seed: 1 });
    const extractor = yield* prepareExtractor(enc, { ...view, batch: 4 });
    const e = yield* Effect.flip(extractor.extract(rgb));
    assert.ok(e instanceof ShapeError, String(e));
  }),
);
