/**
 * Kernel benchmarks: matmul (our strategies against a naive kernel, and the k-means shape), elementwise bandwidth,
 * and the fixed costs of a dispatch, a submit and a readback. Run with `deno task bench` (under 2 minutes on
 * llvmpipe, most of it the naive kernel).
 *
 * Timing: host `performance.now()` around submit + `onSubmittedWorkDone` (the commands encoded beforehand), after a
 * warm-up run that also compiles the pipeline; each figure is the best of `reps` runs, with the median beside it.
 * Where the adapter has timestamp queries, the best GPU-side time of the same compute passes is shown too. "CPU/core"
 * is the process's CPU time per run divided by the number of cores (best run): on a CPU adapter such as llvmpipe, it
 * is what the wall time would be on an idle machine, so it stays meaningful while other processes compete for the
 * cores; on a real GPU it is only the host's share.
 */
import process from "node:process";
import { Effect } from "effect";
import naiveSource from "./naive_matmul.wgsl" with { type: "text" };
import { Gpu, type GpuContext } from "../src/gpu/gpu.ts";
import { type Dispatch, prepare } from "../src/gpu/kernel.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import { GpuTimer } from "../src/gpu/timer.ts";
import { axpy } from "../src/ops/elementwise.ts";
import { copy, fill } from "../src/ops/fill.ts";
import { matmul, type MatmulOptions, type MatmulStrategy, planMatmul } from "../src/ops/matmul.ts";

interface Timing {
  readonly best: number;
  readonly median: number;
  readonly reps: number;
  readonly cpu: number;
  readonly gpu?: number;
}

const CORES = navigator.hardwareConcurrency || 1;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const summary = (wall: number[], cpu: number[], reps: number, gpu: number[] = []): Timing => ({
  best: Math.min(...wall),
  median: median(wall),
  reps,
  cpu: Math.min(...cpu),
  ...(gpu.length ? { gpu: Math.min(...gpu) } : {}),
});

/** Milliseconds of wall and CPU time (per core) that `f` takes. */
const clock = async (f: () => Promise<unknown>): Promise<[wall: number, cpu: number]> => {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return [wall, (c.user + c.system) / 1000 / CORES];
};

/** `reps` runs of the dispatches as one compute pass and one submit, after `warm` untimed runs. */
const time = async (gpu: GpuContext, dispatches: readonly Dispatch[], reps: number, warm = 1): Promise<Timing> => {
  const { device } = gpu;
  const timer = GpuTimer.create(gpu, Math.max(reps, 1));
  const once = (timed: boolean) => {
    const enc = device.createCommandEncoder({ label: "bench" });
    const pass = timed && timer ? timer.beginPass(enc, "bench") : enc.beginComputePass({ label: "bench" });
    for (const d of dispatches) d.record(pass);
    pass.end();
    if (timed) timer?.resolve(enc);
    const buffer = enc.finish();
    return clock(async () => {
      device.queue.submit([buffer]);
      await device.queue.onSubmittedWorkDone();
    });
  };
  for (let i = 0; i < warm; i++) await once(false);
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < reps; i++) {
    const [w, c] = await once(true);
    wall.push(w);
    cpu.push(c);
  }
  const gpuMs = timer ? (await timer.read()).map((t) => t.ms) : [];
  return summary(wall, cpu, reps, gpuMs);
};

/** `reps` runs of an async thunk, after one untimed run. */
const timeHost = async (reps: number, f: () => Promise<unknown>): Promise<Timing> => {
  await f();
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < reps; i++) {
    const [w, c] = await clock(f);
    wall.push(w);
    cpu.push(c);
  }
  return summary(wall, cpu, reps);
};

/** Deterministic data in [-1, 1). */
const data = (n: number, seed: number) => {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
};

// --- the table ---

const HEADER = ["benchmark", "shape", "kernel", "reps", "best ms", "median ms", "GPU-timer ms", "CPU/core ms", "rate"];
const table: string[][] = [];
const fmtMs = (x: number | undefined) =>
  x === undefined ? "-" : x < 1 ? x.toFixed(3) : x < 100 ? x.toFixed(2) : x.toFixed(0);

const row = (name: string, shape: string, kernel: string, t: Timing, rate: string) => {
  const cells = [name, shape, kernel, String(t.reps), fmtMs(t.best), fmtMs(t.median), fmtMs(t.gpu), fmtMs(t.cpu), rate];
  table.push(cells);
  console.error(`  ${cells.join("  ")}`); // progress; the table comes at the end
};
const note = (text: string) => {
  table.push([text]);
  console.error(`  ${text}`);
};

const printTable = () => {
  const rows = table.filter((r) => r.length > 1);
  const widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i >= 3 && i <= 7 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  console.log(line(HEADER));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of table) console.log(r.length === 1 ? `  ${r[0]}` : line(r));
};

const gflops = (t: Timing, flop: number) => `${(flop / t.best / 1e6).toFixed(2)} GFLOP/s`;
const gbs = (t: Timing, bytes: number) => `${(bytes / t.best / 1e6).toFixed(2)} GB/s`;

// --- the benchmarks ---

const naiveMatmul = (a: Tensor, b: Tensor, out: Tensor, M: number, N: number, K: number) =>
  prepare({ name: "naive_matmul", source: naiveSource }, {
    tensors: [a, b, out],
    params: [["u32", M], ["u32", N], ["u32", K]],
    workgroups: [Math.ceil(N / 16), Math.ceil(M / 16)],
  });

const program = Effect.gen(function* () {
  const gpu = yield* Gpu;
  const { adapter } = gpu;
  const timeP = (dispatches: readonly Dispatch[], reps: number, warm = 1) =>
    Effect.promise(() => time(gpu, dispatches, reps, warm));
  const input = (shape: number[], label: string, seed: number) =>
    gpu.upload(data(shape.reduce((a, b) => a * b), seed), "f32", shape, label);
  const kernelOf = (
    strategy: MatmulStrategy,
    a: Tensor,
    b: Tensor,
    out: Tensor,
    opts: Pick<MatmulOptions, "transA" | "transB"> = {},
  ) => {
    const plan = planMatmul(a.shape, b.shape, out.shape, strategy, opts);
    return "workgroups" in plan ? `${strategy}/${plan.kernel}` : "?";
  };

  console.log(
    `adapter: ${adapter.description} (vendor ${adapter.vendor || "?"}, backend ${adapter.backend}, fallback adapter ` +
      `${adapter.isFallbackAdapter}, timestamps ${adapter.timestamps}); matmul strategy: ${gpu.tuning.matmul}; ` +
      `${CORES} cores`,
  );
  console.log(
    "times: host performance.now() around submit + onSubmittedWorkDone after a warm-up; best of `reps` runs, median " +
      "beside it; GPU-timer: best timestamp-query time of the same passes; CPU/core: process CPU time / cores",
  );

  // matmul 1024³: the adapter's choice, each strategy forced, and the naive kernel, all on the same inputs.
  const n = 1024;
  const flop = 2 * n * n * n;
  const a = input([n, n], "a", 1), b = input([n, n], "b", 2);
  const ours = gpu.tensor([n, n], "f32", "ours"), other = gpu.tensor([n, n], "f32", "other");
  const shape = `${n}x${n}x${n}`;
  const runs: Array<[string, MatmulStrategy | undefined, Tensor, number]> = [
    ["matmul, ours (adapter's choice)", undefined, ours, 10],
    ["matmul, register forced", "register", other, 10],
    ["matmul, tiled forced", "tiled", other, 3],
  ];
  const t: Record<string, Timing> = {};
  for (const [name, forced, out, reps] of runs) {
    const strategy = forced ?? gpu.tuning.matmul;
    t[name] = yield* timeP([yield* matmul(a, b, out, { strategy })], reps);
    row(name, shape, kernelOf(strategy, a, b, out), t[name], gflops(t[name], flop));
  }
  // The naive kernel takes seconds at 1024³ on a CPU adapter: warm up (compile) on a small problem.
  const small = input([64, 64], "small", 3);
  yield* timeP([yield* naiveMatmul(small, small, gpu.tensor([64, 64], "f32", "small out"), 64, 64, 64)], 0, 1);
  const naive = yield* timeP([yield* naiveMatmul(a, b, other, n, n, n)], 3, 0);
  row("matmul, naive (1 output/invocation)", shape, "bench/naive_matmul", naive, gflops(naive, flop));
  const [x, y] = [yield* Effect.promise(() => gpu.read(ours)), yield* Effect.promise(() => gpu.read(other))];
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i] - y[i]));
  const ratio = (slow: Timing, fast: Timing) =>
    `${(slow.best / fast.best).toFixed(1)}x (CPU/core: ${(slow.cpu / fast.cpu).toFixed(1)}x)`;
  const [oursT, registerT, tiledT] = runs.map(([name]) => t[name]);
  note(
    `ours / naive: ${ratio(naive, oursT)}; register / tiled: ${ratio(tiledT, registerT)}; ` +
      `max |ours - naive| = ${diff.toExponential(1)}`,
  );

  // The k-means shape: 60000 points of 64 features against 100 centroids [100, 64], used transposed.
  const [M, K, N] = [60000, 64, 100];
  const points = input([M, K], "points", 4), centroids = input([N, K], "centroids", 5);
  const scores = gpu.tensor([M, N], "f32", "scores");
  for (const forced of [undefined, "register", "tiled"] as const) {
    const strategy = forced ?? gpu.tuning.matmul;
    const d = yield* matmul(points, centroids, scores, { transB: true, strategy });
    const tk = yield* timeP([d], forced === "tiled" ? 5 : 10);
    row(
      forced === undefined ? "k-means scores, ours" : `k-means scores, ${forced} forced`,
      `[${M}, ${K}] · [${N}, ${K}]ᵀ`,
      kernelOf(strategy, points, centroids, scores, { transB: true }),
      tk,
      gflops(tk, 2 * M * N * K),
    );
  }

  // Elementwise bandwidth on 16M floats: bytes read + written per second.
  const size = 16 * 1024 * 1024;
  const ex = input([size], "x", 6), ey = input([size], "y", 7);
  const tc = yield* timeP([yield* copy(ex, ey)], 10);
  row("copy: y = x", `${size} f32`, "fill/copy", tc, gbs(tc, 8 * size));
  const ta = yield* timeP([yield* axpy(1e-3, ex, ey)], 10);
  row("axpy: y += a x", `${size} f32`, "elementwise/axpy", ta, gbs(ta, 12 * size));

  // Fixed costs: a dispatch inside an encoder, a submit, a readback.
  const tiny = gpu.tensor([64], "f32", "tiny");
  const one = yield* fill(tiny, 1);
  const empty = yield* timeP([], 20, 2);
  const many = yield* timeP(new Array(1000).fill(one), 10, 2);
  const perDispatch = (f: (t: Timing) => number) => `${(f(many) - f(empty)).toFixed(1)} µs`; // ms / 1000 = µs each
  row(
    "1000 tiny dispatches, 1 pass, 1 submit",
    "fill [64]",
    "fill/fill",
    many,
    `${perDispatch((t) => t.best)}/dispatch (median ${perDispatch((t) => t.median)})`,
  );
  row("empty submit + onSubmittedWorkDone", "-", "-", empty, `${fmtMs(empty.best)} ms/submit`);
  const word = gpu.tensor([1], "f32", "word");
  const rb = yield* Effect.promise(() =>
    timeHost(20, async () => {
      const enc = gpu.device.createCommandEncoder({ label: "readback" });
      const pending = gpu.readAfter(enc, word);
      gpu.device.queue.submit([enc.finish()]);
      await pending();
    })
  );
  row("submit + awaited readback of 4 bytes", "[1] f32", "copy + mapAsync", rb, `${fmtMs(rb.best)} ms/readback`);

  console.log();
  printTable();
});

await Effect.runPromise(program.pipe(Effect.provide(Gpu.layer)));
