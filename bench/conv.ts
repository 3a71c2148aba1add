// GFLOP/s of the convolution kernels at every layer shape of convnet / convnet5 (MNIST, batch 256) and ResNet-18 with
// the CIFAR stem (batch 64), best of several repetitions, each as a ratio of the project's matmul on the same GEMM.
// Run: deno task bench:conv [repetitions, default 3] [convnet5 | resnet18-cifar | all, default all] [layer name part]
//
// A first layer's input gradient is not timed: training never asks for the gradient of the images.
//
// FLOPs per kernel = 2·N·Cout·OH·OW·Cin·KH·KW, the same for the forward and each backward. Host-timed: each
// repetition of a kernel is one submit of REPEAT dispatches, awaited, so the ~12 ms of a submit is amortised. The
// kernels are timed round-robin, together with the project's matmul on the GEMM of the same size (Cout x Cin·KH·KW
// times Cin·KH·KW x N·OH·OW), so that a machine shared with other work slows them alike and the ratio holds.
import { Effect, References } from "effect";
import { Gpu } from "../src/gpu/gpu.ts";
import { type Dispatch, runDispatches } from "../src/gpu/kernel.ts";
import type { Tensor } from "../src/gpu/tensor.ts";
import {
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  convFlops,
  type ConvGeometry,
  convOutputSize,
} from "../src/ops/conv2d.ts";

const REPEAT = 2;
const repetitions = Number(Deno.args[0] ?? 3);
const only = Deno.args[1] === "all" ? undefined : Deno.args[1];
const layerFilter = Deno.args[2];

interface Layer {
  readonly name: string;
  readonly x: readonly [number, number, number, number];
  readonly w: readonly [number, number, number, number];
  readonly stride: number;
  readonly padding: number;
}

const layer = (name: string, x: Layer["x"], w: Layer["w"], stride: number, padding: number): Layer => ({
  name,
  x,
  w,
  stride,
  padding,
});

/** Every distinct convolution shape of the shipped models, at their configs' batch sizes (src/nn/models.ts). */
const models: Record<string, readonly Layer[]> = {
  // convnet: conv1..conv3; convnet5 adds conv4 and conv5. MNIST, batch 256.
  convnet5: [
    layer("conv1 (1→32, 28x28)", [256, 1, 28, 28], [32, 1, 3, 3], 1, 1),
    layer("conv2 (32→64 s2, 28→14)", [256, 32, 28, 28], [64, 32, 3, 3], 2, 1),
    layer("conv3 (64→128 s2, 14→7)", [256, 64, 14, 14], [128, 64, 3, 3], 2, 1),
    layer("conv4 (128→128 s2, 7→4)", [256, 128, 7, 7], [128, 128, 3, 3], 2, 1),
    layer("conv5 (128→128, 4x4)", [256, 128, 4, 4], [128, 128, 3, 3], 1, 1),
  ],
  // ResNet-18 with the CIFAR stem (3x3, no max-pool), 32x32 images, batch 64: one row per distinct shape.
  "resnet18-cifar": [
    layer("conv1 (3→64, 32x32)", [64, 3, 32, 32], [64, 3, 3, 3], 1, 1),
    layer("layer1 (64→64, 32x32)", [64, 64, 32, 32], [64, 64, 3, 3], 1, 1),
    layer("layer2.0.conv1 (64→128 s2)", [64, 64, 32, 32], [128, 64, 3, 3], 2, 1),
    layer("layer2.0.downsample (1x1 s2)", [64, 64, 32, 32], [128, 64, 1, 1], 2, 0),
    layer("layer2 (128→128, 16x16)", [64, 128, 16, 16], [128, 128, 3, 3], 1, 1),
    layer("layer3.0.conv1 (128→256 s2)", [64, 128, 16, 16], [256, 128, 3, 3], 2, 1),
    layer("layer3 (256→256, 8x8)", [64, 256, 8, 8], [256, 256, 3, 3], 1, 1),
    layer("layer4.0.conv1 (256→512 s2)", [64, 256, 8, 8], [512, 256, 3, 3], 2, 1),
    layer("layer4 (512→512, 4x4)", [64, 512, 4, 4], [512, 512, 3, 3], 1, 1),
  ],
};

const fill = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));

type MatmulOp = (a: Tensor, b: Tensor, out: Tensor) => Effect.Effect<Dispatch, unknown, Gpu>;

/** The project's matmul when it loads (another module, still changing): the bench then reports the ratio. */
const loadMatmul = async (): Promise<MatmulOp | undefined> => {
  try {
    const module = await import("../src/ops/matmul.ts");
    return module.matmul as MatmulOp;
  } catch {
    return undefined;
  }
};

const geometryOf = (l: Layer): ConvGeometry => {
  const [N, Cin, H, W] = l.x;
  const [Cout, , KH, KW] = l.w;
  const OH = convOutputSize(H, KH, l.stride, l.padding);
  const OW = convOutputSize(W, KW, l.stride, l.padding);
  return { N, Cin, H, W, Cout, OH, OW, KH, KW, sh: l.stride, sw: l.stride, ph: l.padding, pw: l.padding };
};

const program = (matmul: MatmulOp | undefined) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    console.log(`adapter: ${gpu.adapter.description}; best of ${repetitions}, ${REPEAT} dispatches per submit`);
    const ratios: Array<[string, number]> = [];
    for (const [model, layers] of Object.entries(models)) {
      if (only !== undefined && only !== model) continue;
      const batch = layers[0]!.x[0];
      let forwardMs = 0, trainMs = 0;
      console.log(`\n${model}, batch ${batch}`);
      for (const [index, l] of layers.entries()) {
        if (layerFilter !== undefined && !l.name.includes(layerFilter)) continue;
        const g = geometryOf(l);
        const yShape = [g.N, g.Cout, g.OH, g.OW];
        const opts = { stride: l.stride, padding: l.padding };
        const x = gpu.upload(fill(g.N * g.Cin * g.H * g.W, 1), "f32", l.x, "x");
        const w = gpu.upload(fill(g.Cout * g.Cin * g.KH * g.KW, 2), "f32", l.w, "w");
        const dy = gpu.upload(fill(g.N * g.Cout * g.OH * g.OW, 3), "f32", yShape, "dy");
        const y = gpu.tensor(yShape, "f32", "y");
        const dx = gpu.tensor(l.x, "f32", "dx");
        const dw = gpu.tensor(l.w, "f32", "dw");
        const kernels: Array<[string, Dispatch]> = [["forward", yield* conv2d(x, w, undefined, y, opts)]];
        if (index > 0) kernels.push(["backward-input", yield* conv2dBackwardInput(dy, w, dx, opts)]);
        kernels.push(["backward-weight", yield* conv2dBackwardWeight(x, dy, dw, undefined, opts)]);
        const passes = kernels.length;
        // The GEMM of the same M and K; its N (the pixels) halved until B fits one storage binding, its GFLOP/s
        // counted on its own size.
        let columns = g.N * g.OH * g.OW;
        while (g.Cin * g.KH * g.KW * columns * 4 > gpu.limits.maxStorageBufferBindingSize) {
          columns = Math.ceil(columns / 2);
        }
        const gemm = [g.Cout, g.Cin * g.KH * g.KW, columns] as const;
        const extra: Tensor[] = [];
        if (matmul !== undefined) {
          const a = gpu.upload(fill(gemm[0] * gemm[1], 4), "f32", [gemm[0], gemm[1]], "a");
          const b = gpu.upload(fill(gemm[1] * gemm[2], 5), "f32", [gemm[1], gemm[2]], "b");
          const c = gpu.tensor([gemm[0], gemm[2]], "f32", "c");
          extra.push(a, b, c);
          const d = yield* Effect.result(matmul(a, b, c));
          if (d._tag === "Success") kernels.push([`matmul ${gemm.join("x")}`, d.success]);
        }
        const best = kernels.map(() => Infinity);
        for (const [, d] of kernels) yield* runDispatches([d]); // compile and warm up
        for (let r = 0; r < repetitions; r++) {
          for (const [i, [, d]] of kernels.entries()) {
            const submit = Array.from({ length: REPEAT }, () => d);
            const t0 = performance.now();
            yield* runDispatches(submit);
            best[i] = Math.min(best[i]!, (performance.now() - t0) / REPEAT);
          }
        }
        const flops = convFlops(g);
        console.log(`${l.name}: x [${l.x}], w [${l.w}] → y [${yShape}], ${(flops / 1e9).toFixed(2)} GFLOP per kernel`);
        const rateOf = (i: number) => (i < passes ? flops : 2 * gemm[0] * gemm[1] * gemm[2]) / best[i]! / 1e6;
        const reference = kernels.length > passes ? rateOf(passes) : undefined;
        for (const [i, [name]] of kernels.entries()) {
          const ms = best[i]!;
          const rate = rateOf(i);
          const ratio = reference !== undefined && i < passes ? rate / reference : undefined;
          if (ratio !== undefined) ratios.push([`${model} ${l.name} ${name}`, ratio]);
          const shown = ratio !== undefined ? `  (${ratio.toFixed(2)} of matmul)` : "";
          console.log(
            `  ${name.padEnd(22)} ${ms.toFixed(1).padStart(8)} ms ${rate.toFixed(2).padStart(7)} GFLOP/s${shown}`,
          );
        }
        for (let i = 0; i < passes; i++) trainMs += best[i]!;
        forwardMs += best[0]!;
        for (const t of [x, w, dy, y, dx, dw, ...extra]) t.buffer.destroy();
      }
      // (a model's images/s only when every one of its layers ran)
      if (layerFilter === undefined) {
        console.log(
          `${model}'s convolutions alone: forward ${(batch / forwardMs * 1e3).toFixed(0)} images/s, ` +
            `forward + backward ${(batch / trainMs * 1e3).toFixed(0)} images/s (batch ${batch})`,
        );
      }
    }
    if (ratios.length > 0) {
      const [name, worst] = ratios.reduce((a, b) => (b[1] < a[1] ? b : a));
      console.log(`\nlowest ratio to matmul: ${worst.toFixed(2)} (${name})`);
    }
  });

await Effect.runPromise(
  program(await loadMatmul()).pipe(
    Effect.provide(Gpu.layer),
    Effect.provideService(References.MinimumLogLevel, "Warn"),
  ),
);
