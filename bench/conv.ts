// GFLOP/s of the convolution kernels at the small convnet's shapes (batch 256), best of several repetitions.
// Run: deno run --allow-read --allow-env bench/conv.ts [repetitions]
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
const repetitions = Number(Deno.args[0] ?? 5);

interface Layer {
  readonly name: string;
  readonly x: readonly [number, number, number, number];
  readonly w: readonly [number, number, number, number];
  readonly stride: number;
  readonly padding: number;
}

const layers: Layer[] = [
  { name: "convnet layer 1 (1→32, 28x28)", x: [256, 1, 28, 28], w: [32, 1, 3, 3], stride: 1, padding: 1 },
  { name: "convnet layer 2 (32→64 s2, 28→14)", x: [256, 32, 28, 28], w: [64, 32, 3, 3], stride: 2, padding: 1 },
  { name: "convnet layer 3 (64→128 s2, 14→7)", x: [256, 64, 14, 14], w: [128, 64, 3, 3], stride: 2, padding: 1 },
];

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
    let forwardMs = 0, trainMs = 0;
    for (const l of layers) {
      const g = geometryOf(l);
      const yShape = [g.N, g.Cout, g.OH, g.OW];
      const opts = { stride: l.stride, padding: l.padding };
      const x = gpu.upload(fill(g.N * g.Cin * g.H * g.W, 1), "f32", l.x, "x");
      const w = gpu.upload(fill(g.Cout * g.Cin * g.KH * g.KW, 2), "f32", l.w, "w");
      const dy = gpu.upload(fill(g.N * g.Cout * g.OH * g.OW, 3), "f32", yShape, "dy");
      const y = gpu.tensor(yShape, "f32", "y");
      const dx = gpu.tensor(l.x, "f32", "dx");
      const dw = gpu.tensor(l.w, "f32", "dw");
      const kernels: Array<[string, Dispatch]> = [
        ["forward", yield* conv2d(x, w, undefined, y, opts)],
        ["backward-input", yield* conv2dBackwardInput(dy, w, dx, opts)],
        ["backward-weight", yield* conv2dBackwardWeight(x, dy, dw, undefined, opts)],
      ];
      const gemm = [g.Cout, g.Cin * g.KH * g.KW, g.N * g.OH * g.OW] as const;
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
          const batch = Array.from({ length: REPEAT }, () => d);
          const t0 = performance.now();
          yield* runDispatches(batch);
          best[i] = Math.min(best[i]!, (performance.now() - t0) / REPEAT);
        }
      }
      const flops = convFlops(g);
      console.log(`${l.name}: x [${l.x}], w [${l.w}] → y [${yShape}], ${(flops / 1e9).toFixed(2)} GFLOP per kernel`);
      const reference = kernels.length > 3 ? flops / best[3]! / 1e6 : undefined;
      for (const [i, [name]] of kernels.entries()) {
        const ms = best[i]!;
        const rate = flops / ms / 1e6;
        const ratio = reference !== undefined && i < 3 ? `  (${(rate / reference).toFixed(2)} of matmul)` : "";
        console.log(
          `  ${name.padEnd(22)} ${ms.toFixed(1).padStart(8)} ms ${rate.toFixed(2).padStart(7)} GFLOP/s${ratio}`,
        );
      }
      forwardMs += best[0]!;
      trainMs += best[0]! + best[2]! + (g.Cin > 1 ? best[1]! : 0); // the first layer needs no input gradient
      for (const t of [x, w, dy, y, dx, dw, ...extra]) t.buffer.destroy();
    }
    const images = layers[0]!.x[0];
    console.log(
      `the convnet's convolutions alone: forward ${(images / forwardMs * 1e3).toFixed(0)} images/s, ` +
        `forward + backward ${(images / trainMs * 1e3).toFixed(0)} images/s (batch ${images})`,
    );
  });

await Effect.runPromise(
  program(await loadMatmul()).pipe(
    Effect.provide(Gpu.layer),
    Effect.provideService(References.MinimumLogLevel, "Warn"),
  ),
);
