/**
 * Augmented views per second at batch 256 (two views per image, as the M-step draws them), on the GPU, for the
 * `mnist` preset on MNIST and the `v2` preset on 3x32x32 images (a CIFAR-10-sized set of 50,000, which is over
 * llvmpipe's 128 MiB binding limit and so lives in two chunks), reading the images in place or gathering them
 * through a batch buffer first.
 *
 * Each step as in training: `setStep` (host: draw 512 views' parameters, write them and the indices) then one
 * submit of the gather(s) and the augment dispatches. Timing: `steps` steps submitted back to back, host clock from
 * the first setStep to onSubmittedWorkDone; best of `reps` after a warm-up (others share this machine). The host
 * drawing time and, where timestamp queries exist, the GPU time of one step's pass are shown apart.
 *
 *   deno run -A bench/augment.ts [--steps 10] [--reps 5] [--only TEXT (cases whose name contains it)]
 */
import { Effect } from "effect";
import { Gpu, type GpuContext } from "../src/gpu/gpu.ts";
import { GpuTimer } from "../src/gpu/timer.ts";
import { type AugmentPreset, mnist, v2 } from "../src/data/augmentations.ts";
import { type Dataset, type HostDataset, Sampler, toGpu } from "../src/data/dataset.ts";
import { readSource } from "../src/data/source.ts";
import { type Augmenter, prepareAugmenter } from "../src/ops/augment.ts";

/** The value after `--name` on the command line, if given. */
const flag = (name: string) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
};
const STEPS = Number(flag("steps") ?? 10);
const REPS = Number(flag("reps") ?? 5);
const ONLY = flag("only");
const BATCH = 256;

/** 50,000 random 3x32x32 images (xorshift bytes): the kernel's cost does not depend on the content. */
const cifarSized = (): HostDataset => {
  const n = 50000, bytes = 3 * 32 * 32;
  const images = new Uint8Array(n * bytes);
  let s = 2463534242;
  for (let i = 0; i < images.length; i++) {
    s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
    images[i] = s & 255;
  }
  return {
    info: { name: "cifar-sized", n, channels: 3, height: 32, width: 32, classes: 10, classNames: [], source: "random" },
    images,
    labels: new Int32Array(n),
  };
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const measure = async (gpu: GpuContext, aug: Augmenter, sampler: Sampler) => {
  const { device } = gpu;
  let epoch = 0, step = 0;
  const next = () => {
    if (++step >= sampler.stepsPerEpoch) step = 0, epoch++;
    aug.setStep(epoch, step, sampler.indices(epoch, step));
  };
  const submit = (timer?: GpuTimer) => {
    const enc = device.createCommandEncoder({ label: "augment" });
    const pass = timer ? timer.beginPass(enc, "augment") : enc.beginComputePass({ label: "augment" });
    aug.record(pass);
    pass.end();
    timer?.resolve(enc);
    device.queue.submit([enc.finish()]);
  };
  next(); // warm-up: compile, first writes
  submit();
  await device.queue.onSubmittedWorkDone();
  const wall: number[] = [], draw: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = performance.now();
    let hostMs = 0;
    for (let i = 0; i < STEPS; i++) {
      const h = performance.now();
      next();
      hostMs += performance.now() - h;
      submit();
    }
    await device.queue.onSubmittedWorkDone();
    wall.push((performance.now() - t0) / STEPS);
    draw.push(hostMs / STEPS);
  }
  const timer = GpuTimer.create(gpu, REPS);
  let gpuMs: number | undefined;
  if (timer) {
    for (let r = 0; r < REPS; r++) {
      next();
      submit(timer);
    }
    await device.queue.onSubmittedWorkDone();
    gpuMs = Math.min(...(await timer.read()).map((t) => t.ms));
  }
  return { best: Math.min(...wall), median: median(wall), draw: Math.min(...draw), gpuMs };
};

const program = Effect.gen(function* () {
  const gpu = yield* Gpu;
  console.log(`adapter: ${gpu.adapter.description}; batch ${BATCH}, 2 views, ${STEPS} steps x best of ${REPS}`);
  const mnistSet = yield* readSource({ kind: "mnist", split: "train" });
  const cifar = cifarSized();
  const cases: Array<[string, HostDataset, AugmentPreset, boolean]> = [
    ["mnist preset, MNIST 1x28x28, in place", mnistSet, mnist(), false],
    ["mnist preset, MNIST 1x28x28, gathered", mnistSet, mnist(), true],
    ["v2 preset, 3x32x32 -> 32, 2 chunks, gathered", cifar, v2({ side: 32 }), true],
    [
      "v2 preset, 3x32x32 -> 32, 1 chunk, in place",
      { ...cifar, info: { ...cifar.info, n: 20000 } },
      v2({ side: 32 }),
      false,
    ],
  ];
  const resident = new Map<HostDataset, Dataset>();
  for (const [name, host, preset, gather] of cases) {
    if (ONLY !== undefined && !name.includes(ONLY)) continue;
    const ds = resident.get(host) ?? (yield* toGpu(host));
    resident.set(host, ds);
    const aug = yield* prepareAugmenter(ds, { preset, batch: BATCH, seed: 0, gather });
    const r = yield* Effect.promise(() => measure(gpu, aug, new Sampler(ds.info.n, BATCH, 0)));
    const views = (2 * BATCH * 1000) / r.best;
    console.log(
      `${name.padEnd(46)} ${r.best.toFixed(2).padStart(7)} ms/step (median ${r.median.toFixed(2)}) ` +
        `${Math.round(views).toString().padStart(7)} views/s | host draw ${r.draw.toFixed(2)} ms` +
        (r.gpuMs === undefined ? "" : ` | GPU pass ${r.gpuMs.toFixed(2)} ms`) + ` | chunks ${ds.chunks.length}`,
    );
  }
});

await Effect.runPromise(program.pipe(Effect.provide(Gpu.layer)));
