/**
 * The M-step's throughput: full training steps (augment two views → key and query encoders → InfoNCE (+ ProtoNCE)
 * → backward → SGD → momentum update → enqueue, one submit each) at batch 256 with the convnet + MLP head on MNIST,
 * queue 4096, K = {10, 20, 40}; and the losses alone at the same shapes, for the share of a step they take.
 *   deno run --allow-read --allow-env bench/mstep.ts [--small]
 *
 * --small: instead, steps small enough to be bound by the host (the tests' convnet, 16 channels, on 12 px synthetic
 * images at batch 16: milliseconds each, as most steps are on a real GPU), 64 of them with the metrics read every
 * METRICS_RING steps (as the training loop reads them, but awaited at once), best of 3: what a per-step readback
 * would cap.
 */
import { Effect, References } from "effect";
import { mnist } from "../src/data/augmentations.ts";
import { Sampler } from "../src/data/dataset.ts";
import { loadDataset } from "../src/data/source.ts";
import { Gpu } from "../src/gpu/gpu.ts";
import { submit } from "../src/gpu/kernel.ts";
import { encoder } from "../src/nn/models.ts";
import { prepareAugmenter } from "../src/ops/augment.ts";
import { contrastiveLoss } from "../src/ops/contrastive.ts";
import { METRICS_RING, MStep } from "../src/pcl/mstep.ts";

const batch = 256, queue = 4096, ks = [10, 20, 40], dim = 64, steps = 6;

const small = Effect.gen(function* () {
  const gpu = yield* Gpu;
  const [n, b] = [1024, 16];
  const dataset = yield* loadDataset({ kind: "synthetic", n, side: 12, seed: 1 });
  const augmenter = yield* prepareAugmenter(dataset, { preset: mnist({ side: 12 }), batch: b, seed: 0 });
  const spec = { arch: "convnet", inChannels: 1, head: "mlp", hidden: 16, dim: 8 } as const;
  const [q, k] = yield* Effect.all([encoder(spec, 0), encoder(spec, 1)]);
  const m = yield* MStep.prepare(q, k, augmenter, [], {
    temperature: 0.2,
    queueSize: 64,
    negatives: 4,
    keyMomentum: 0.99,
    maskDuplicatePositives: false,
    bnGroups: 2,
    lr: 0.05,
    momentum: 0.9,
    weightDecay: 5e-4,
    seed: 0,
  });
  const sampler = new Sampler(n, b, 0);
  const count = 64;
  let best = Infinity;
  for (let rep = 0; rep <= 3; rep++) { // the first is a warm-up: pipelines compile on first use
    const t0 = performance.now();
    for (let s = 0; s < count; s++) {
      const { metrics } = m.step(rep, s, sampler.indices(rep, s));
      if ((s + 1) % METRICS_RING === 0) yield* Effect.promise(metrics);
    }
    if (rep > 0) best = Math.min(best, (performance.now() - t0) / count);
  }
  console.log(`adapter: ${gpu.adapter.description}; small steps (convnet 16 ch, 12 px, batch ${b}, queue 64)`);
  console.log(`${best.toFixed(2)} ms/step  ${(1000 / best).toFixed(1)} steps/s (best of 3 runs of ${count} steps)`);
});

const program = Effect.gen(function* () {
  const gpu = yield* Gpu;
  const dataset = yield* loadDataset({ kind: "mnist", split: "train", limit: 4096 });
  const augmenter = yield* prepareAugmenter(dataset, { preset: mnist(), batch, seed: 0 });
  const spec = { arch: "convnet", inChannels: 1, head: "mlp", hidden: 128, dim } as const;
  const [q, k] = yield* Effect.all([encoder(spec, 0), encoder(spec, 0)]);
  const m = yield* MStep.prepare(q, k, augmenter, ks, {
    temperature: 0.2,
    queueSize: queue,
    negatives: 16,
    keyMomentum: 0.99,
    maskDuplicatePositives: true,
    bnGroups: 4,
    lr: 0.06,
    momentum: 0.9,
    weightDecay: 5e-4,
    seed: 0,
  });
  const sampler = new Sampler(4096, batch, 0);
  const timeSteps = (epoch: number) =>
    Effect.promise(async () => {
      await m.step(epoch, 0, sampler.indices(epoch, 0)).metrics(); // warm-up: pipelines compile on first use
      const t0 = performance.now();
      let last;
      for (let s = 1; s <= steps; s++) last = m.step(epoch, s, sampler.indices(epoch, s));
      await last!.metrics();
      return (performance.now() - t0) / steps;
    });
  const warmup = yield* timeSteps(0);
  // Random unit prototypes and φ = τ: the cost of ProtoNCE does not depend on their values.
  const rand = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
  m.setPrototypes(ks.map((kk) => {
    const p = rand(kk * dim);
    for (let j = 0; j < kk; j++) {
      const row = p.subarray(j * dim, (j + 1) * dim), norm = Math.hypot(...row);
      for (let i = 0; i < dim; i++) row[i] /= norm;
    }
    return {
      prototypes: p,
      concentration: new Float32Array(kk).fill(0.2),
      im2cluster: Int32Array.from({ length: 4096 }, (_, i) => i % kk),
    };
  }));
  const full = yield* timeSteps(1);

  // The losses alone at the step's shapes: InfoNCE over N + r columns, ProtoNCE over N + 16 per clustering.
  const z = gpu.tensor([batch, dim], "f32", "z"), dz = gpu.tensor([batch, dim], "f32", "dz");
  const metrics = { loss: gpu.tensor([1], "f32", "l"), accuracy: gpu.tensor([1], "f32", "a") };
  const inst = yield* contrastiveLoss(
    z,
    gpu.tensor([batch + queue, dim], "f32", "t"),
    gpu.tensor([batch + queue], "u32", "s"),
    metrics,
    dz,
    {
      scale: 5,
      weight: 1,
      mode: "all",
      accumulate: false,
    },
  );
  const protos = [];
  for (let i = 0; i < ks.length; i++) {
    protos.push(
      yield* contrastiveLoss(
        z,
        gpu.tensor([batch + 16, dim], "f32", "p"),
        gpu.tensor([batch + 16], "u32", "ps"),
        metrics,
        dz,
        {
          scale: 1,
          weight: 1 / 3,
          mode: "same",
          accumulate: true,
        },
      ),
    );
  }
  const losses = [...inst.forward, ...inst.backward, ...protos.flatMap((p) => [...p.forward, ...p.backward])];
  const timeLosses = () =>
    Effect.promise(async () => {
      submit(gpu, losses);
      await gpu.device.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) submit(gpu, losses);
      await gpu.device.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / steps;
    });
  const lossMs = yield* timeLosses();
  console.log(
    `adapter: ${gpu.adapter.description}; batch ${batch}, queue ${queue}, K = {${ks}}, convnet + MLP 128 -> 64`,
  );
  console.log(`mean of ${steps} steps after a warm-up step (one submit each, metrics read a step later)`);
  console.log(
    `InfoNCE only (warm-up epochs): ${warmup.toFixed(0)} ms/step  ${(1000 / warmup).toFixed(2)} steps/s  ${
      (batch * 1000 / warmup).toFixed(0)
    } images/s`,
  );
  console.log(
    `InfoNCE + ProtoNCE (3 clusterings): ${full.toFixed(0)} ms/step  ${(1000 / full).toFixed(2)} steps/s  ${
      (batch * 1000 / full).toFixed(0)
    } images/s`,
  );
  console.log(
    `the losses alone (forward + backward, 4 heads): ${lossMs.toFixed(0)} ms: ${
      (100 * lossMs / full).toFixed(0)
    }% of a step; the encoders, augmentation and updates the other ${(100 - 100 * lossMs / full).toFixed(0)}%`,
  );
});

await Effect.runPromise(
  (Deno.args.includes("--small") ? small : program).pipe(
    Effect.provide(Gpu.layer),
    Effect.provideService(References.MinimumLogLevel, "Warn"),
  ),
);
