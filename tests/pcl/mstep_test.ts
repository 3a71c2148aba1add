import assert from "node:assert/strict";
import { Effect } from "effect";
import { Draws, Stream } from "../../src/data/rng.ts";
import { loadDataset } from "../../src/data/source.ts";
import { mnist } from "../../src/data/augmentations.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { runDispatches } from "../../src/gpu/kernel.ts";
import { prepareAugmenter } from "../../src/ops/augment.ts";
import { bindEncoder, encoder, type EncoderSpec } from "../../src/nn/models.ts";
import {
  fixedViews,
  METRICS_RING,
  MStep,
  type MStepConfig,
  MStepError,
  sampleColumns,
  type StepMetrics,
} from "../../src/pcl/mstep.ts";
import { assertClose, effectTest, gpuTest, randoms } from "../helpers.ts";

const K = 30;
const im2cluster = Int32Array.from({ length: 600 }, (_, i) => i % K);

effectTest(
  "negatives: never a batch positive, never repeated, all of them when too few are left, same key same draw",
  Effect.sync(() => {
    const sel = new Uint32Array(8 + 12), scratch = new Uint32Array(K);
    const indices = [0, 1, 2, 3, 30, 31, 32, 63]; // positives: clusters 0, 1, 2, 3 (twice each), and 3 once more
    const used = sampleColumns(
      sel,
      im2cluster,
      indices,
      K,
      12,
      new Draws([1, Stream.negatives], [0, 0, 0, 0]),
      scratch,
    );
    assert.equal(used, 20);
    const positives = new Set(indices.map((i) => im2cluster[i]));
    const negatives = Array.from(sel.subarray(8, used));
    assert.ok(negatives.every((c) => !positives.has(c) && c < K), `negatives ${negatives}`);
    assert.equal(new Set(negatives).size, negatives.length);
    const again = new Uint32Array(20);
    sampleColumns(again, im2cluster, indices, K, 12, new Draws([1, Stream.negatives], [0, 0, 0, 0]), scratch);
    assert.deepEqual(again, sel);
    // 26 clusters are free; asking for 40 gives all 26, in some order, the rest of the row zero.
    const wide = new Uint32Array(8 + 40);
    assert.equal(sampleColumns(wide, im2cluster, indices, K, 40, new Draws([1, 3], [0, 0, 0, 0]), scratch), 34);
    assert.deepEqual([...wide.subarray(8, 34)].sort((a, b) => a - b), [...Array(K).keys()].filter((c) => c > 3));
  }),
);

effectTest(
  "negatives: uniform over the allowed clusters (chi-square over 4,000 draws)",
  Effect.sync(() => {
    const sel = new Uint32Array(10 + 5), scratch = new Uint32Array(K);
    const indices = [...Array(10).keys()]; // positives 0..9: 20 clusters allowed
    const counts = new Array(K).fill(0);
    const draws = 4000;
    for (let step = 0; step < draws; step++) {
      sampleColumns(sel, im2cluster, indices, K, 5, new Draws([7, Stream.negatives], [0, step, 0, 0]), scratch);
      for (const c of sel.subarray(10)) counts[c]++;
    }
    const expected = (draws * 5) / 20;
    const chi2 = counts.slice(10).reduce((s, o) => s + (o - expected) ** 2 / expected, 0);
    // 19 degrees of freedom: P(chi2 > 43.82) = 0.001, so a fair sampler fails this one time in a thousand.
    assert.ok(chi2 < 43.82, `chi-square ${chi2.toFixed(2)} over ${counts.slice(10)}`);
    assert.ok(counts.slice(0, 10).every((c) => c === 0));
  }),
);

const spec: EncoderSpec = { arch: "convnet", inChannels: 1, head: "mlp", hidden: 16, dim: 8 };
const config = (o: Partial<MStepConfig> = {}): MStepConfig => ({
  temperature: 0.2,
  queueSize: 16,
  negatives: 4,
  keyMomentum: 0.99,
  maskDuplicatePositives: true,
  bnGroups: 2,
  lr: 0.05,
  momentum: 0.9,
  weightDecay: 5e-4,
  seed: 3,
  ...o,
});

const setup = (c: MStepConfig, batch = 8) =>
  Effect.gen(function* () {
    const dataset = yield* loadDataset({ kind: "synthetic", n: 64, side: 12, seed: 1 });
    const augmenter = yield* prepareAugmenter(dataset, { preset: mnist({ side: 12 }), batch, seed: 5 });
    const [q, k] = yield* Effect.all([encoder(spec, 1), encoder(spec, 2)]);
    return yield* MStep.prepare(q, k, augmenter, [5, 7], c);
  });

gpuTest(
  "M-step: the queue is a FIFO ring of the batches' keys, and the pointer wraps",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const m = yield* setup(config());
    const before = yield* Effect.promise(() => gpu.read(m.queue));
    const keysOf: Float32Array[] = [];
    for (let step = 0; step < 3; step++) {
      assert.equal(m.queuePointer, (step * 8) % 16);
      yield* Effect.promise(() => m.step(0, step, [...Array(8).keys()].map((i) => i + 8 * step)).metrics());
      keysOf.push(yield* Effect.promise(() => gpu.read(m.keys.rows(0, 8))));
    }
    const queue = yield* Effect.promise(() => gpu.read(m.queue));
    assert.deepEqual(queue.subarray(0, 64), keysOf[2]); // step 2 wrapped around onto slot 0
    assert.deepEqual(queue.subarray(64, 128), keysOf[1]);
    assert.notDeepEqual(before.subarray(64, 128), queue.subarray(64, 128));
    for (let j = 0; j < 16; j++) {
      assert.ok(Math.abs(Math.hypot(...before.subarray(j * 8, j * 8 + 8)) - 1) < 1e-6, "initial keys are unit norm");
    }
  }),
);

gpuTest(
  "M-step: metrics read in batches through the ring (one readback, ring full mid-way) equal metrics read every step",
  Effect.gen(function* () {
    const steps = METRICS_RING + 5; // the ring fills, is read by the next step, and a partial batch is left
    const run = (batched: boolean) =>
      Effect.gen(function* () {
        const m = yield* setup(config());
        m.setPrototypes([5, 7].map((k) => ({
          prototypes: randoms(k * 8, k),
          concentration: Float32Array.from({ length: k }, () => 0.2),
          im2cluster: Int32Array.from({ length: 64 }, (_, i) => i % k),
        })));
        const reads: Array<() => Promise<StepMetrics>> = [];
        for (let step = 0; step < steps; step++) {
          const { metrics } = m.step(0, step, [...Array(8).keys()].map((i) => (i + 8 * step) % 64));
          if (batched) reads.push(metrics);
          else {
            const v = yield* Effect.promise(metrics);
            reads.push(() => Promise.resolve(v));
          }
        }
        return yield* Effect.promise(() => Promise.all(reads.map((r) => r())));
      });
    const [each, batched] = [yield* run(false), yield* run(true)];
    assert.equal(batched.length, steps);
    assert.ok(batched.every((m) => m.protoNce.length === 2 && Number.isFinite(m.infoNce)));
    assert.deepEqual(batched, each);
    assert.notDeepEqual(batched[0], batched[steps - 1], "steps should differ");
  }),
);

gpuTest(
  "M-step: keys are computed by the key encoder after its momentum update",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    // m = 0 makes the updated key encoder a copy of the query encoder as it was before this step's SGD update.
    const m = yield* setup(config({ keyMomentum: 0, bnGroups: 1 }));
    yield* Effect.promise(() => m.step(0, 0, [...Array(8).keys()]).metrics());
    const queryAfterStep0 = yield* Effect.promise(() => gpu.read(m.query.params.values));
    yield* Effect.promise(() => m.step(0, 1, [...Array(8).keys()].map((i) => 63 - i)).metrics());
    const keys = yield* Effect.promise(() => gpu.read(m.keys.rows(0, 8)));
    // Encode step 1's key view with a fresh encoder holding the query's parameters after step 0.
    const fresh = yield* encoder(spec, 9);
    gpu.write(fresh.params.values, queryAfterStep0);
    const b = yield* bindEncoder(fresh, m.views.outputs[1]!, { train: true, grad: false });
    yield* runDispatches(b.forward);
    // Same parameters, same input, same kernels: equal to f32 rounding of a different dispatch order at most.
    assertClose(keys, yield* Effect.promise(() => gpu.read(b.z)), { atol: 1e-6, rtol: 0, what: "keys" });
  }),
);

gpuTest(
  "M-step: a queue that is not a multiple of the batch, or BN groups that do not divide it, are refused",
  Effect.gen(function* () {
    for (
      const [c, pattern] of [
        [config({ queueSize: 12 }), /queue size 12 must be a positive multiple of the batch size 8/],
        [config({ bnGroups: 3 }), /bnGroups 3 must divide the batch size 8/],
      ] as const
    ) {
      const exit = yield* Effect.exit(setup(c));
      assert.ok(exit._tag === "Failure");
      const e = exit.cause.reasons[0];
      assert.ok("error" in e && e.error instanceof MStepError && pattern.test(e.error.message), String(e));
    }
  }),
);

gpuTest(
  "M-step: fixed views train like augmented ones; the sampled columns and the key shuffle are readable",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    // Views written by hand: both views the same seeded images.
    const images = randoms(8 * 12 * 12, 11, 0, 1);
    const viewQ = gpu.upload(images, "f32", [8, 1, 12, 12], "view q");
    const viewK = gpu.upload(images, "f32", [8, 1, 12, 12], "view k");
    const [q, k] = yield* Effect.all([encoder(spec, 1), encoder(spec, 2)]);
    const m = yield* MStep.prepare(q, k, fixedViews(viewQ, viewK), [5, 7], config({ keyMomentum: 0 }));
    m.setPrototypes([5, 7].map((K) => ({
      prototypes: randoms(K * 8, K),
      concentration: new Float32Array(K).fill(0.2),
      im2cluster: Int32Array.from({ length: 64 }, (_, i) => (i >> 1) % K),
    })));
    const indices = [...Array(8).keys()];
    const first = m.step(0, 0, indices);
    // Rows 0-7 hold clusters 0-3: 1 of K = 5 and 3 of K = 7 are free, fewer than the 4 negatives asked for.
    assert.deepEqual(first.notes.length, 1);
    assert.match(first.notes[0]!, /fewer than the 4 negative prototypes .* in K = 5 \(1 free\), K = 7 \(3 free\)/);
    const metrics = yield* Effect.promise(() => first.metrics());
    assert.deepEqual(m.step(0, 1, indices).notes, [], "said once");
    assert.ok(Number.isFinite(metrics.infoNce) && metrics.protoNce.length === 2, `${JSON.stringify(metrics)}`);
    // The views are the tensors given, untouched by the steps.
    assert.deepEqual(yield* Effect.promise(() => gpu.read(m.views.outputs[0]!)), images);
    // Clustering 1 (K = 7): the rows' own prototypes (clusters 0-3) first, then all 3 free clusters, as 4 were asked.
    const cols = m.sampledColumns(1); // the last step's (step 1)
    assert.deepEqual([...cols.subarray(0, 8)], indices.map((i) => i >> 1));
    assert.deepEqual([...cols.subarray(8, 11)].sort(), [4, 5, 6]);
    // With two BN groups the key batch is shuffled: a permutation of the rows.
    assert.deepEqual([...m.keyPermutation()!].sort((a, b) => a - b), indices);
    const plain = yield* MStep.prepare(q, k, fixedViews(viewQ, viewK), [], config({ bnGroups: 1 }));
    assert.equal(plain.keyPermutation(), undefined);
  }),
);
