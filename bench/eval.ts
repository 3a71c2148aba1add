/**
 * The evaluation's GPU computations at full size:
 *
 *   deno run -A bench/eval.ts [--reps N] [--knn-only | --probe-only]
 *
 * - kNN: bank 60,000 x 128, 10,000 queries, k = 200 (k = 20 is a prefix of the same pass), for a few query-chunk
 *   sizes: the whole `knnClassify` (normalisation and upload, GPU similarities and top-k, readback, vote).
 * - Linear probe: 10,000 x 128 standardised features, 10 classes, the default schedule (100 epochs, batch 256), and
 *   the time per epoch.
 *
 * Data: seeded Gaussian clusters (10 classes), so the accuracies printed alongside are a sanity check, not a result.
 * Each figure is the best of `reps` runs, wall clock and the process's CPU time per core (on llvmpipe, what the wall
 * time would be on an idle machine; others may share this one).
 */
import process from "node:process";
import { Effect, References } from "effect";
import { Gpu } from "../src/gpu/gpu.ts";
import { knnClassify } from "../src/eval/knn.ts";
import { linearProbe } from "../src/eval/linear_probe.ts";
import type { Matrix } from "../src/io/matrix.ts";

const arg = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const reps = arg("--reps", 3);
const knnOnly = Deno.args.includes("--knn-only"), probeOnly = Deno.args.includes("--probe-only");

/** n points of d features around `classes` random centres (seeded), and their labels. */
const clusters = (n: number, d: number, classes: number, seed: number, spread: number) => {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  const gauss = () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  let c = 12345;
  const centre = Array.from({ length: classes * d }, () => {
    c = (Math.imul(c, 1103515245) + 12345) >>> 0;
    return (c / 2 ** 32) * 2 - 1;
  });
  const labels = new Int32Array(n);
  const data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const label = Math.floor(u() * classes);
    labels[i] = label;
    for (let j = 0; j < d; j++) data[i * d + j] = centre[label * d + j]! + spread * gauss();
  }
  return { matrix: { data, shape: [n, d] } as Matrix, labels };
};

const CORES = navigator.hardwareConcurrency || 1;

/** Best wall time and best CPU time per core over `reps` runs (llvmpipe runs on the CPU: when others share the
 * machine, the process's CPU time per core is what the wall time would be on an idle one). */
const best = function* <A, E, R>(effect: Effect.Effect<A, E, R>) {
  let wall = Infinity, cpu = Infinity;
  let result: A | undefined;
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    result = yield* effect;
    wall = Math.min(wall, performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu = Math.min(cpu, (c.user + c.system) / 1000 / CORES);
  }
  return [`${wall.toFixed(0)} ms (CPU/core ${cpu.toFixed(0)} ms)`, result!, Math.min(wall, cpu)] as const;
};

const program = Effect.gen(function* () {
  const gpu = yield* Gpu;
  console.log(`adapter: ${gpu.adapter.description} (${gpu.adapter.backend}); best of ${reps}`);
  if (!probeOnly) {
    const train = clusters(60_000, 128, 10, 1, 1.6), test = clusters(10_000, 128, 10, 2, 1.6);
    for (const queryChunk of [128, 256, 512]) {
      const [time, result] = yield* best(
        knnClassify(train.matrix, train.labels, test.matrix, test.labels, {
          ks: [20, 200],
          queryChunk,
          budgetBytes: 127 * 2 ** 20,
        }),
      );
      const acc = result.map((r) => `k=${r.k} ${(100 * r.top1).toFixed(2)}%`).join(", ");
      console.log(`kNN bank 60000x128, queries 10000, query chunk ${queryChunk}: ${time} (${acc})`);
    }
  }
  if (!knnOnly) {
    const train = clusters(10_000, 128, 10, 3, 2), test = clusters(10_000, 128, 10, 4, 2);
    for (const epochs of [10, 100]) {
      const [time, result, ms] = yield* best(
        linearProbe(train.matrix, train.labels, test.matrix, test.labels, { epochs }),
      );
      console.log(
        `linear probe 10000x128, 10 classes, ${epochs} epochs: ${time} ` +
          `(~${(ms / epochs).toFixed(1)} ms/epoch; test ${(100 * result.top1).toFixed(2)}%, ` +
          `train ${(100 * result.trainTop1).toFixed(2)}%, loss ${result.trainLoss.toFixed(4)})`,
      );
    }
  }
});

await Effect.runPromise(
  program.pipe(Effect.provide(Gpu.layer), Effect.provideService(References.MinimumLogLevel, "Warn")),
);
