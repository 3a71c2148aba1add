/**
 * Encoder throughput: images per second of a whole forward (eval mode) and of a whole training step (train-mode
 * forward, backward, one SGD dispatch over the flat parameter store), for the encoders the configs can use:
 * the convnet and convnet5 with PCL v2's MLP head (128 → 128 → 64) on 1x28x28 at batch 256, and ResNet-18 (CIFAR
 * stem) with v1's linear head (512 → 128) on 3x32x32 at batch 64. All end in the L2 normalisation. Each row also
 * gives the forward FLOPs per image (2 per multiply-add of the convolutions and linear layers; a training step is
 * about three times that) and the GFLOP/s they imply.
 * Run: deno run --allow-read --allow-env bench/encoder.ts [repetitions (2)] [name filter, e.g. convnet5]
 * (on a 2-core llvmpipe: about 30 s for the convnet, 2 minutes for ResNet-18, longer while others share the cores;
 * the filter is a substring of the name, so `convnet` runs both convnets). ResNet-50 (CIFAR stem, linear head,
 * batch 16) runs only when the filter names it (`resnet50`, or `resnet` for both ResNets).
 *
 * Timing: each pass or step is recorded into one command encoder and submitted on its own, as the training loop
 * does; a timed run submits a few of them back to back and awaits the last. Figures are the best run. "CPU/core"
 * is the process's CPU time divided by the cores: llvmpipe runs its threads inside this process, so it is what the
 * wall time would be on an idle machine, and stays meaningful while others share the cores.
 *
 * Breakdown: where the adapter has timestamp queries, one training step is recorded again with every dispatch in a
 * compute pass of its own, timestamped on the GPU; the time per kernel family (conv / BN / other), per phase, and the
 * slowest dispatches are printed. Splitting a step into passes costs a little, so the sum is shown beside the step.
 */
import process from "node:process";
import { Effect, References } from "effect";
import { Gpu, type GpuContext } from "../src/gpu/gpu.ts";
import { alloc, type Dispatch, recordPass, runDispatches } from "../src/gpu/kernel.ts";
import { GpuTimer } from "../src/gpu/timer.ts";
import { bindEncoder, encoder, type EncoderSpec, flopsPerImage } from "../src/nn/models.ts";
import { sgdStep } from "../src/ops/optim.ts";

const repetitions = Number(Deno.args[0] ?? 2);
const filter = Deno.args[1] ?? "";
const CORES = navigator.hardwareConcurrency || 1;

interface Config {
  readonly name: string;
  readonly spec: EncoderSpec;
  readonly input: readonly [number, number, number, number];
  /** Submits per timed run, and timestamped repetitions of the breakdown: fewer for the slow ResNet. */
  readonly steps: number;
  readonly breakdownRepetitions: number;
  /** The acceptance targets on llvmpipe, images/s (forward, training step). */
  readonly targets?: readonly [number, number];
  /** Run only when the name filter selects it (not in a plain run): ResNet-50 is minutes a step on llvmpipe. */
  readonly onlyByName?: boolean;
}

const configs: Config[] = [
  {
    name: "convnet + MLP head",
    spec: { arch: "convnet", inChannels: 1, head: "mlp", hidden: 128, dim: 64 },
    input: [256, 1, 28, 28],
    steps: 4,
    breakdownRepetitions: 2,
    targets: [150, 25],
  },
  {
    name: "convnet5 + MLP head",
    spec: { arch: "convnet5", inChannels: 1, head: "mlp", hidden: 128, dim: 64 },
    input: [256, 1, 28, 28],
    steps: 2,
    breakdownRepetitions: 1,
  },
  {
    name: "convnet5 width 0.5 + MLP head",
    spec: { arch: "convnet5", inChannels: 1, head: "mlp", hidden: 128, dim: 64, width: 0.5 },
    input: [256, 1, 28, 28],
    steps: 2,
    breakdownRepetitions: 1,
  },
  {
    name: "resnet18 (CIFAR) + linear head",
    spec: { arch: "resnet18-cifar", inChannels: 3, head: "linear", dim: 128 },
    input: [64, 3, 32, 32],
    steps: 1,
    breakdownRepetitions: 1,
  },
  {
    name: "resnet50 (CIFAR) + linear head",
    spec: { arch: "resnet50-cifar", inChannels: 3, head: "linear", dim: 128 },
    input: [16, 3, 32, 32],
    steps: 1,
    breakdownRepetitions: 1,
    onlyByName: true,
  },
];

/** Deterministic values in [-1, 1]: the bench's input and upstream gradient. */
const wave = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.61 + seed));

interface Rate {
  readonly wall: number;
  readonly cpu: number;
}

/** Best of `repetitions` runs of `steps` submits of `dispatches`, each submit one encoder, the last one awaited. */
const timeSteps = async (gpu: GpuContext, dispatches: readonly Dispatch[], images: number, steps: number) => {
  let wall = Infinity, cpu = Infinity;
  for (let r = 0; r < repetitions; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) gpu.device.queue.submit([recordPass(gpu, dispatches).finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    wall = Math.min(wall, ms / steps);
    cpu = Math.min(cpu, (c.user + c.system) / 1000 / CORES / steps);
  }
  return { wall: (images / wall) * 1e3, cpu: (images / cpu) * 1e3 } satisfies Rate;
};

type Family = "conv" | "bn" | "other";
/** Composite dispatches carry the op's name (conv2dBackwardWeight, batchNormTrain, ...). */
const familyOf = (kernel: string): Family =>
  /conv/i.test(kernel) ? "conv" : /batch ?norm/i.test(kernel) ? "bn" : "other";

interface Timed {
  readonly label: string;
  readonly phase: "forward" | "backward" | "sgd";
  readonly family: Family;
  readonly ms: number;
}

/** One step with each dispatch in a timestamped pass of its own; the best time of each over the repetitions. */
const breakdown = async (
  gpu: GpuContext,
  phases: ReadonlyArray<readonly [Timed["phase"], readonly Dispatch[]]>,
  repetitions: number,
) => {
  const all = phases.flatMap(([phase, ds]) => ds.map((d, i) => ({ phase, d, label: `${phase} ${i} ${d.kernel}` })));
  const timer = GpuTimer.create(gpu, all.length);
  if (timer === undefined) return undefined;
  const best = all.map(() => Infinity);
  for (let r = 0; r < repetitions; r++) {
    const enc = gpu.device.createCommandEncoder({ label: "breakdown" });
    for (const { d, label } of all) {
      const pass = timer.beginPass(enc, label);
      d.record(pass);
      pass.end();
    }
    timer.resolve(enc);
    gpu.device.queue.submit([enc.finish()]);
    (await timer.read()).forEach(({ ms }, i) => (best[i] = Math.min(best[i]!, ms)));
  }
  return all.map(({ phase, d, label }, i): Timed => ({ label, phase, family: familyOf(d.kernel), ms: best[i]! }));
};

const pad = (s: string, n: number) => s.padEnd(n);
const num = (x: number, digits = 0) => x.toFixed(digits).padStart(8);

const program = Effect.gen(function* () {
  const gpu = yield* Gpu;
  console.log(
    `adapter: ${gpu.adapter.description} (backend ${gpu.adapter.backend}, timestamps ${gpu.adapter.timestamps}); ` +
      `${CORES} cores; best of ${repetitions} runs`,
  );
  const rows: string[] = [];
  const notes: string[] = [];
  for (const config of configs.filter((c) => c.name.includes(filter) && (filter !== "" || !c.onlyByName))) {
    const [n, c, h, w] = config.input;
    const enc = yield* encoder(config.spec, 1);
    const x = yield* alloc(config.input, "f32", "x");
    gpu.write(x, wave(n * c * h * w, 1));
    const evalPass = yield* bindEncoder(enc, x, { train: false, grad: false });
    const trainPass = yield* bindEncoder(enc, x, { train: true, grad: true });
    // A fixed upstream gradient stands in for the loss: the step's cost does not depend on the values.
    gpu.write(trainPass.dz!, wave(n * config.spec.dim, 2));
    const momentum = yield* alloc(enc.params.values.shape, "f32", "momentum");
    const sgd = yield* sgdStep(enc.params.values, enc.params.grads, momentum, {
      lr: 1e-4,
      momentum: 0.9,
      weightDecay: 1e-4,
    });
    const step = [...trainPass.forward, ...trainPass.backward, sgd];
    yield* runDispatches(evalPass.forward); // warm-up: first executions of every pipeline
    yield* runDispatches(step);

    const forward = yield* Effect.promise(() => timeSteps(gpu, evalPass.forward, n, config.steps));
    const train = yield* Effect.promise(() => timeSteps(gpu, step, n, config.steps));
    const [fTarget, tTarget] = config.targets ?? [undefined, undefined];
    const verdict = (rate: Rate, target: number | undefined) =>
      target === undefined ? "" : `  (target ${target}: ${rate.wall >= target ? "met" : "MISSED"})`;
    const shape = `${n}x${c}x${h}x${w}`;
    const params = `${(enc.params.parameterCount / 1e6).toFixed(2)} M params`;
    const flops = yield* flopsPerImage(enc, [c, h, w]);
    // GFLOP/s of CPU time per core; the training step counted as 3x the forward.
    const gflops = (rate: Rate, passes: number) => num((rate.cpu * flops * passes) / 1e9, 2);
    rows.push(
      `${pad(config.name, 32)} ${pad(shape, 11)} ${pad("forward (eval)", 22)} ${num(forward.wall, 1)} ${
        num(forward.cpu, 1)
      } ${gflops(forward, 1)} ${String(evalPass.forward.length).padStart(5)} dispatches${verdict(forward, fTarget)}`,
      `${pad(params, 32)} ${pad("", 11)} ${pad("forward+backward+SGD", 22)} ${num(train.wall, 1)} ${
        num(train.cpu, 1)
      } ${gflops(train, 3)} ${String(step.length).padStart(5)} dispatches${verdict(train, tTarget)}`,
      `${pad(`${(flops / 1e6).toFixed(2)} MFLOP/image (forward)`, 32)}`,
    );

    const timed = yield* Effect.promise(() =>
      breakdown(
        gpu,
        [["forward", trainPass.forward], ["backward", trainPass.backward], ["sgd", [sgd]]],
        config.breakdownRepetitions,
      )
    );
    if (timed !== undefined) {
      const total = timed.reduce((s, t) => s + t.ms, 0);
      const sum = (f: (t: Timed) => boolean) => timed.filter(f).reduce((s, t) => s + t.ms, 0);
      const share = (ms: number) => `${ms.toFixed(0).padStart(7)} ms ${(100 * ms / total).toFixed(1).padStart(5)}%`;
      notes.push(
        `${config.name}, one training step at batch ${n}, GPU timestamps per dispatch (best of ${config.breakdownRepetitions}):`,
        `  sum of dispatches ${total.toFixed(0)} ms (${(n / total * 1e3).toFixed(1)} images/s); whole step ` +
          `${(n / train.wall * 1e3).toFixed(0)} ms wall`,
      );
      for (const family of ["conv", "bn", "other"] as const) {
        const f = sum((t) => t.family === family);
        const byPhase = (["forward", "backward", "sgd"] as const)
          .map((p) => `${p} ${sum((t) => t.family === family && t.phase === p).toFixed(0)}`)
          .join(", ");
        notes.push(`  ${pad(family, 6)} ${share(f)}   (${byPhase} ms)`);
      }
      notes.push("  slowest dispatches:");
      for (const t of [...timed].sort((a, b) => b.ms - a.ms).slice(0, 8)) {
        notes.push(`    ${pad(t.label, 30)} ${share(t.ms)}`);
      }
    }
    for (const t of [x, momentum, enc.params.values, enc.params.grads, enc.params.buffers]) t.buffer.destroy();
  }
  console.log(
    `\n${pad("encoder", 32)} ${pad("input", 11)} ${pad("pass", 22)} ${"img/s".padStart(8)} ${"CPU/core".padStart(8)} ${
      "GFLOP/s".padStart(8)
    }`,
  );
  for (const r of rows) console.log(r);
  console.log(
    "\n(img/s: wall clock; CPU/core: images/s of the process's CPU time per core, i.e. on an otherwise idle machine;" +
      "\n GFLOP/s: at the CPU/core rate, the training step counted as 3x the forward's FLOPs)\n",
  );
  for (const n of notes) console.log(n);
});

await Effect.runPromise(
  program.pipe(Effect.provide(Gpu.layer), Effect.provideService(References.MinimumLogLevel, "Warn")),
);
