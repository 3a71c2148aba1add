/**
 * k-means on the GPU against faiss's CPU k-means, same data, same settings (docs/algorithm.md §3, one restart):
 *
 *   deno run -A bench/kmeans.ts [--quick] [--full]
 *
 * For N = 60,000 L2-normalised features (a seeded mixture on the sphere, like PCL's), d ∈ {64, 128},
 * K ∈ {100, 1000}: the wall time of one Lloyd iteration ((T(3 iterations) − T(1 iteration)) / 2, best of 2) and of
 * the whole run (20 iterations, 1 restart, the final assignment pass included). If Python's faiss imports (Debian:
 * apt-get install python3-faiss; give it OpenBLAS, libopenblas0-pthread, or it runs on the reference BLAS), the same
 * data go to faiss.Clustering (niter 20, nredo 1, max_points_per_centroid 1000, seed 0) in the same run, timed the
 * same way, and the table shows both, their ratio and both final objectives (the bar: ours within 1% of faiss's).
 *
 * Where a full run would take more than 25 s on either side (K = 1000 on a software adapter), both sides run 5
 * iterations instead, their objectives are compared after those 5, and the 20-iteration times are extrapolated from
 * the iteration times; the table marks those rows (unless --full). --quick: d = 64, K = 100 only.
 *
 * --estep: instead, PCL's E-step clustering at the MNIST default's size, whole (`cluster`: N = 10,000, d = 64,
 * K = {10, 20, 40}, 5 restarts of 20 iterations each, the final assignment passes), best of 3, against faiss doing
 * the same three clusterings (nredo 5) in the same run.
 */
import { Effect, References } from "effect";
import { Gpu } from "../src/gpu/gpu.ts";
import { formatNpy } from "../src/io/npy.ts";
import type { Matrix } from "../src/io/matrix.ts";
import { cluster, kmeans } from "../src/pcl/kmeans.ts";
import { SequentialRng as Rng } from "../src/data/rng.ts";

const N = 60_000;
const ITERATIONS = 20;
const quick = Deno.args.includes("--quick");
const full = Deno.args.includes("--full");

/** N points on the unit sphere around 200 random directions (cosine spread ~0.5), as encoder features look. */
const features = (n: number, d: number, seed: number): Matrix => {
  const rng = new Rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.float())) * Math.cos(2 * Math.PI * rng.float());
  const centres = Array.from({ length: 200 }, () => Array.from({ length: d }, gauss));
  const data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const c = centres[rng.int(200)]!;
    let s = 0;
    for (let t = 0; t < d; t++) {
      const v = c[t]! + 0.8 * gauss();
      data[i * d + t] = v;
      s += v * v;
    }
    for (let t = 0; t < d; t++) data[i * d + t]! /= Math.sqrt(s);
  }
  return { data, shape: [n, d] };
};

const FAISS = `
import sys, json, time
import numpy as np, faiss
x = np.load(sys.argv[1]); k = int(sys.argv[2]); niter = int(sys.argv[3]); full = int(sys.argv[4])
def once(n_iter):
    clus = faiss.Clustering(x.shape[1], k)
    clus.niter = n_iter; clus.nredo = 1; clus.max_points_per_centroid = 1000; clus.seed = 0
    index = faiss.IndexFlatL2(x.shape[1])
    t = time.perf_counter(); clus.train(x, index); D, I = index.search(x, 1); t = time.perf_counter() - t
    stats = clus.iteration_stats
    return t, stats.at(stats.size() - 1).obj
t1 = min(once(1)[0] for _ in range(2))
t3 = min(once(3)[0] for _ in range(2))
iteration = (t3 - t1) / 2
t, obj = once(niter)
print(json.dumps({"iteration": iteration, "seconds": t + (full - niter) * iteration, "objective": obj,
                  "threads": faiss.omp_get_max_threads(), "version": faiss.__version__}))
`;

/** A Python that can import faiss, if any. */
const findFaiss = async (): Promise<string | undefined> => {
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const out = await new Deno.Command(python, { args: ["-c", "import faiss"], stderr: "null" }).output();
      if (out.success) return python;
    } catch {
      // not installed under that name
    }
  }
  return undefined;
};

interface Faiss {
  /** Seconds per iteration, for 20 iterations (extrapolated when fewer ran), and the objective after `niter`. */
  readonly iteration: number;
  readonly seconds: number;
  readonly objective: number;
  readonly threads: number;
  readonly version: string;
}

/** Runs one of the faiss scripts above with `args`; its last line of output is JSON. */
const runScript = async <A>(python: string, script: string, args: readonly string[]): Promise<A> => {
  const out = await new Deno.Command(python, { args: ["-c", script, ...args] }).output();
  if (!out.success) throw new Error(`faiss failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
};

const runFaiss = (python: string, file: string, k: number, niter: number) =>
  runScript<Faiss>(python, FAISS, [file, String(k), String(niter), String(ITERATIONS)]);

const blas = (): string => {
  try {
    return Deno.realPathSync("/etc/alternatives/libblas.so.3-x86_64-linux-gnu");
  } catch {
    return "unknown";
  }
};

const FAISS_ESTEP = `
import sys, json, time
import numpy as np, faiss
x = np.load(sys.argv[1]); ks = [int(k) for k in sys.argv[2].split(",")]
def once():
    t = time.perf_counter()
    for i, k in enumerate(ks):
        clus = faiss.Clustering(x.shape[1], k)
        clus.niter = 20; clus.nredo = 5; clus.max_points_per_centroid = 1000; clus.seed = i
        index = faiss.IndexFlatL2(x.shape[1]); clus.train(x, index); index.search(x, 1)
    return time.perf_counter() - t
print(json.dumps({"seconds": min(once() for _ in range(3)), "threads": faiss.omp_get_max_threads()}))
`;

/** PCL's E-step clustering at the MNIST default's size, ours and faiss's, best of 3 each. */
const estepBench = Effect.gen(function* () {
  const gpu = yield* Gpu;
  const python = yield* Effect.promise(findFaiss);
  const [n, d, ks] = [10_000, 64, [10, 20, 40]];
  const f = features(n, d, d);
  const timed = Effect.gen(function* () {
    const t0 = performance.now();
    yield* cluster(f, { ks, seed: 0 });
    return (performance.now() - t0) / 1000;
  });
  yield* timed; // compiles the pipelines
  let ours = Infinity;
  for (let rep = 0; rep < 3; rep++) ours = Math.min(ours, yield* timed);
  console.log(`adapter: ${gpu.adapter.description}`);
  console.log(`E-step clustering, N = ${n}, d = ${d}, K = {${ks}}, 5 restarts x 20 iterations: ${ours.toFixed(2)} s`);
  if (python === undefined) return console.log("faiss: not installed (apt-get install python3-faiss)");
  const dir = yield* Effect.promise(() => Deno.makeTempDir({ prefix: "kmeans-bench" }));
  yield* Effect.promise(() => Deno.writeFile(`${dir}/x.npy`, formatNpy(f)));
  const fs = yield* Effect.promise(() =>
    runScript<{ seconds: number; threads: number }>(python, FAISS_ESTEP, [`${dir}/x.npy`, ks.join(",")])
  );
  yield* Effect.promise(() => Deno.remove(dir, { recursive: true }));
  console.log(
    `faiss (${fs.threads} threads, CPU): ${fs.seconds.toFixed(2)} s; ours / faiss = ${(ours / fs.seconds).toFixed(2)}`,
  );
});

const main = Effect.gen(function* () {
  const gpu = yield* Gpu;
  const python = yield* Effect.promise(findFaiss);
  console.log(`adapter: ${gpu.adapter.description}; N = ${N}, ${ITERATIONS} iterations, 1 restart, seed 0`);
  console.log(
    python === undefined
      ? "faiss: not installed (apt-get install python3-faiss): GPU only"
      : `faiss: ${python}, BLAS ${blas()}`,
  );
  const dir = yield* Effect.promise(() => Deno.makeTempDir({ prefix: "kmeans-bench" }));
  const header = ["d", "K", "iter ms", "run s", "objective", "faiss iter ms", "faiss run s", "faiss objective"];
  const rows: string[][] = [[...header, "run ratio", "objective gap"]];
  let extrapolated = false;
  for (const d of quick ? [64] : [64, 128]) {
    const f = features(N, d, d);
    const file = `${dir}/x${d}.npy`;
    if (python !== undefined) yield* Effect.promise(() => Deno.writeFile(file, formatNpy(f)));
    for (const k of quick ? [100] : [100, 1000]) {
      const timed = (niter: number) =>
        Effect.gen(function* () {
          const t0 = performance.now();
          const r = yield* kmeans(f, k, { niter, nredo: 1, seed: 0 });
          return { seconds: (performance.now() - t0) / 1000, objective: r.objective };
        });
      yield* timed(1); // compiles the pipelines
      let one = Infinity, three = Infinity;
      for (let rep = 0; rep < 2; rep++) {
        one = Math.min(one, (yield* timed(1)).seconds);
        three = Math.min(three, (yield* timed(3)).seconds);
      }
      const iteration = (three - one) / 2;
      const short = !full && one + (ITERATIONS - 1) * iteration > 25;
      const niter = short ? 5 : ITERATIONS;
      const run = yield* timed(niter);
      const seconds = run.seconds + (ITERATIONS - niter) * iteration;
      const fs = python === undefined ? undefined : yield* Effect.promise(() => runFaiss(python, file, k, niter));
      extrapolated ||= short;
      const mark = short ? "*" : "";
      rows.push([
        String(d),
        String(k),
        (iteration * 1000).toFixed(1),
        seconds.toFixed(2) + mark,
        run.objective.toFixed(2) + mark,
        fs ? (fs.iteration * 1000).toFixed(1) : "-",
        fs ? fs.seconds.toFixed(2) + mark : "-",
        fs ? fs.objective.toFixed(2) + mark : "-",
        fs ? (seconds / fs.seconds).toFixed(2) : "-",
        fs ? `${((run.objective / fs.objective - 1) * 100).toFixed(2)}%` : "-",
      ]);
      console.log(rows[rows.length - 1]!.join("\t"));
      if (fs !== undefined && rows.length === 2) console.log(`(faiss ${fs.version}, ${fs.threads} threads)`);
    }
  }
  yield* Effect.promise(() => Deno.remove(dir, { recursive: true }));
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  console.log("\n" + rows.map((r) => r.map((v, c) => v.padStart(widths[c]!)).join("  ")).join("\n"));
  console.log(
    "\nobjective: Σ squared distances at the last iteration (faiss's `obj`); gap: ours / faiss − 1 (bar: |gap| < 1%)." +
      "\nrun ratio: our full run / faiss's (> 1: faiss is faster). Iteration times: best of 2." +
      (extrapolated
        ? "\n*: 5 iterations run on both sides; run times extrapolated to 20 from the iteration times."
        : ""),
  );
});

await Effect.runPromise(
  (Deno.args.includes("--estep") ? estepBench : main).pipe(
    Effect.provide(Gpu.layer),
    Effect.provideService(References.MinimumLogLevel, "Warn"),
  ),
);
