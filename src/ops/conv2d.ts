import { Effect } from "effect";
import source from "../../kernels/conv2d.wgsl" with { type: "text" };
import { Gpu, type GpuContext } from "../gpu/gpu.ts";
import {
  alloc,
  bindByName,
  type Dispatch,
  grid1d,
  type KernelSpec,
  type Params,
  prepare,
  sequence,
  wgslConstant,
} from "../gpu/kernel.ts";
import { ShapeError, shapeError } from "../gpu/errors.ts";
import { sameShape, sharedBuffer } from "../gpu/shapes.ts";
import type { Tensor } from "../gpu/tensor.ts";

/**
 * 2-D convolution over NCHW f32 tensors (cross-correlation, as PyTorch's `conv2d`), forward and both backwards, as
 * implicit GEMMs in kernels/conv2d.wgsl. Each op checks shapes up front (typed ShapeError naming the op and the
 * shapes) and returns one prepared Dispatch, which records two to four kernels: an operand repacked into a scratch
 * tensor of the op's own (allocated once, at preparation), then the convolution. Outputs are overwritten, never
 * accumulated into; every sum runs in a fixed order that depends on the shapes alone, so the same inputs give the
 * same bits. The shapes are baked into the grids: `setParams` is no way to reuse a Dispatch for other shapes.
 */

export interface Conv2dOptions {
  /** Step between receptive fields: one number for both axes, or [rows, columns]. Default 1. */
  readonly stride?: number | readonly [number, number];
  /** Zero padding on each side: one number for both axes, or [rows, columns]. Default 0. */
  readonly padding?: number | readonly [number, number];
}

/** A window slid over [N, ·, H, W]: input and output sizes, window, stride and padding (convolution and pooling). */
export interface WindowGeometry {
  readonly N: number;
  readonly H: number;
  readonly W: number;
  readonly OH: number;
  readonly OW: number;
  readonly KH: number;
  readonly KW: number;
  readonly sh: number;
  readonly sw: number;
  readonly ph: number;
  readonly pw: number;
}

/** Every size a convolution kernel needs (its uniform struct lists them as `params` does). */
export interface ConvGeometry extends WindowGeometry {
  readonly Cin: number;
  readonly Cout: number;
}

/** Output length along one axis: floor((size + 2 padding − kernel) / stride) + 1, as PyTorch. */
export const convOutputSize = (size: number, kernel: number, stride: number, padding: number): number =>
  Math.floor((size + 2 * padding - kernel) / stride) + 1;

/** Multiply-adds times two of one convolution (the same count for the forward and each backward). */
export const convFlops = (g: ConvGeometry): number => 2 * g.N * g.Cout * g.OH * g.OW * g.Cin * g.KH * g.KW;

/** Lanes per workgroup: the kernel's `override WG`, set here only. */
const WG = 64;
/** The register block of one invocation (pixels x channels): fixed by the kernel's code, so read from it. */
const PIX = wgslConstant(source, "PIX");
const CH = wgslConstant(source, "CH");

const kernelSpec = (entryPoint: string): KernelSpec => ({ name: "conv2d", source, entryPoint, constants: { WG } });

const pair = (v: number | readonly [number, number] | undefined, fallback: number): readonly [number, number] =>
  v === undefined ? [fallback, fallback] : typeof v === "number" ? [v, v] : v;

const show = (shape: readonly number[]): string => `[${shape.join(", ")}]`;

const check4d = (kernel: string, what: string, t: Tensor) =>
  t.dtype !== "f32"
    ? shapeError(kernel, `${what} ${t} must be f32`)
    : t.shape.length !== 4 || t.shape.some((s) => !Number.isInteger(s) || s < 1)
    ? shapeError(kernel, `${what} ${t} must be 4-D with every size at least 1`)
    : undefined;

/**
 * The geometry of a convolution of an input [N, Cin, H, W] with weights [Cout, Cin, KH, KW], or a ShapeError for
 * a weight that does not fit the input, bad options, or an empty output.
 */
const geometry = (kernel: string, input: Tensor, w: Tensor, opts: Conv2dOptions) => {
  const bad = check4d(kernel, "input", input) ?? check4d(kernel, "weight", w);
  if (bad !== undefined) return bad;
  const [N, Cin, H, W] = input.shape as [number, number, number, number];
  const [Cout, wCin, KH, KW] = w.shape as [number, number, number, number];
  const [sh, sw] = pair(opts.stride, 1);
  const [ph, pw] = pair(opts.padding, 0);
  if (![sh, sw].every((s) => Number.isInteger(s) && s >= 1)) {
    return shapeError(kernel, `stride must be integers >= 1, not ${show([sh, sw])}`);
  }
  if (![ph, pw].every((s) => Number.isInteger(s) && s >= 0)) {
    return shapeError(kernel, `padding must be integers >= 0, not ${show([ph, pw])}`);
  }
  if (wCin !== Cin) {
    return shapeError(
      kernel,
      `weight ${show(w.shape)} has ${wCin} input channels but the input ${show(input.shape)} ` +
        `has ${Cin}: the weight must be [Cout, ${Cin}, KH, KW]`,
    );
  }
  const OH = convOutputSize(H, KH, sh, ph);
  const OW = convOutputSize(W, KW, sw, pw);
  if (OH < 1 || OW < 1) {
    return shapeError(
      kernel,
      `a ${KH}x${KW} kernel with padding ${show([ph, pw])} does not fit the ` +
        `${H}x${W} input ${show(input.shape)}`,
    );
  }
  return { N, Cin, H, W, Cout, OH, OW, KH, KW, sh, sw, ph, pw } satisfies ConvGeometry;
};

const checkShape = (kernel: string, what: string, t: Tensor, shape: readonly number[]) =>
  t.dtype !== "f32" || !sameShape(t, shape) ? shapeError(kernel, `${what} ${t} must be f32 ${show(shape)}`) : undefined;

/** WebGPU forbids binding a buffer read-write and read-only in one dispatch, even for disjoint views. */
const checkDistinct = (kernel: string, outputs: readonly Tensor[], inputs: readonly Tensor[]) => {
  const [o, i] = sharedBuffer(outputs, inputs) ?? [];
  return o && shapeError(kernel, `output ${o} shares a buffer with input ${i}`);
};

/**
 * The tensors of a launch by binding name, in the kernel's binding order (`packed4` is `packed` as the kernels read
 * it, four floats at a time).
 */
const bind = bindByName(["x", "w", "bias", "y", "dy", "dx", "dw", "dbias", "packed", "packed4", "partials"]);

const params = (g: ConvGeometry, cblocks = 0): Params =>
  [g.N, g.Cin, g.H, g.W, g.Cout, g.OH, g.OW, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, cblocks].map((v) => ["u32", v]);

/** Workgroups [channel blocks on x, pixel blocks split over y and z]; the kernel reads the block as y + z·ny. */
const pixelGrid = (gpu: GpuContext, pixels: number, channelBlocks: number): readonly [number, number, number] => {
  const blocks = Math.max(1, Math.ceil(pixels / (WG * PIX)));
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const z = Math.ceil(blocks / max);
  return [channelBlocks, Math.ceil(blocks / z), z];
};

const padded = (channels: number): number => Math.ceil(channels / CH) * CH;

/**
 * The weights repacked for the kernel (see kernels/conv2d.wgsl): [Cin·KH·KW, Cout rounded up to 16] for the forward,
 * [Cout·KH·KW, Cin rounded up to 16] for the backward-input, into a scratch tensor of the op's own.
 */
const packWeights = Effect.fnUntraced(function* (w: Tensor, g: ConvGeometry, forward: boolean) {
  const gpu = yield* Gpu;
  const size = forward ? g.Cin * g.KH * g.KW * padded(g.Cout) : g.Cout * g.KH * g.KW * padded(g.Cin);
  const packed = yield* alloc([size], "f32", `${w.label} packed for the conv2d ${forward ? "forward" : "backward"}`);
  const pack = yield* prepare(
    kernelSpec(forward ? "pack_forward" : "pack_backward"),
    {
      tensors: bind({ w, packed }),
      params: params(g),
      workgroups: grid1d(gpu, Math.ceil(size / WG)),
    },
  );
  return { pack, packed };
});

/**
 * `y = conv2d(x, w) + bias`: x [N, Cin, H, W], w [Cout, Cin, KH, KW], bias [Cout] or undefined, y [N, Cout, OH, OW]
 * with OH = floor((H + 2 ph − KH) / sh) + 1 (and OW alike). Records two kernels: the weights' repacking, then the
 * convolution.
 */
export const conv2d = Effect.fnUntraced(function* (
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  y: Tensor,
  opts: Conv2dOptions = {},
) {
  const gpu = yield* Gpu;
  const g = geometry("conv2d", x, w, opts);
  if (g instanceof ShapeError) return yield* g;
  const bad = (bias && checkShape("conv2d", "bias", bias, [g.Cout])) ??
    checkShape("conv2d", "output", y, [g.N, g.Cout, g.OH, g.OW]) ??
    checkDistinct("conv2d", [y], bias ? [x, w, bias] : [x, w]);
  if (bad !== undefined) return yield* bad;
  const { pack, packed } = yield* packWeights(w, g, true);
  const forward = yield* prepare(
    kernelSpec(bias ? "forward_bias" : "forward"),
    {
      tensors: bind({ x, bias, y, packed4: packed }),
      params: params(g),
      workgroups: pixelGrid(gpu, g.N * g.OH * g.OW, Math.ceil(g.Cout / CH)),
    },
  );
  return sequence("conv2d", [pack, forward]);
});

/**
 * `dx = ∂L/∂x` from `dy = ∂L/∂y` of `conv2d(x, w)`: dy [N, Cout, OH, OW], w [Cout, Cin, KH, KW], dx [N, Cin, H, W];
 * the options are the forward's. Input pixels that no tap reaches (a 1x1 kernel at stride 2) get 0.
 */
export const conv2dBackwardInput = Effect.fnUntraced(function* (
  dy: Tensor,
  w: Tensor,
  dx: Tensor,
  opts: Conv2dOptions = {},
) {
  const gpu = yield* Gpu;
  const g = geometry("conv2dBackwardInput", dx, w, opts);
  if (g instanceof ShapeError) return yield* g;
  const bad = checkShape("conv2dBackwardInput", "output gradient", dy, [g.N, g.Cout, g.OH, g.OW]) ??
    checkDistinct("conv2dBackwardInput", [dx], [dy, w]);
  if (bad !== undefined) return yield* bad;
  const cblocks = Math.ceil(g.Cin / CH);
  // The kernel works per stride phase; phase (0, 0) has the most pixels, ceil(H / sh) x ceil(W / sw) per image.
  const pixels = g.N * Math.ceil(g.H / g.sh) * Math.ceil(g.W / g.sw);
  const { pack, packed } = yield* packWeights(w, g, false);
  const backward = yield* prepare(
    kernelSpec("backward_input"),
    {
      tensors: bind({ dy, dx, packed4: packed }),
      params: params(g, cblocks),
      workgroups: pixelGrid(gpu, pixels, cblocks * g.sh * g.sw),
    },
  );
  return sequence("conv2d", [pack, backward]);
});

/** dw = the sum of `chunks` partial weight gradients [chunks, Cout, Cin·KH·KW], in chunk order. */
const sumPartials = Effect.fnUntraced(function* (dw: Tensor, partials: Tensor, g: ConvGeometry, chunks: number) {
  const gpu = yield* Gpu;
  return yield* prepare(kernelSpec("sum_partials"), {
    tensors: bind({ dw, partials }),
    params: params(g, chunks),
    workgroups: grid1d(gpu, Math.ceil((g.Cout * g.Cin * g.KH * g.KW) / WG)),
  });
});

/**
 * `dw = ∂L/∂w` and, when `dbias` is given, `dbias = ∂L/∂bias`, from x [N, Cin, H, W] and dy [N, Cout, OH, OW]:
 * dw [Cout, Cin, KH, KW] (its shape gives the kernel size), dbias [Cout]; the options are the forward's. Both are
 * overwritten. The returned Dispatch records the weight gradient (for Cin >= 4: the output gradient's repacking,
 * then the gradient in pixel chunks plus their sum when the channels alone leave few workgroups), then the bias
 * gradient when asked for.
 */
export const conv2dBackwardWeight = Effect.fnUntraced(function* (
  x: Tensor,
  dy: Tensor,
  dw: Tensor,
  dbias: Tensor | undefined,
  opts: Conv2dOptions = {},
) {
  const g = geometry("conv2dBackwardWeight", x, dw, opts);
  if (g instanceof ShapeError) return yield* g;
  const outputs = dbias ? [dw, dbias] : [dw];
  const bad = checkShape("conv2dBackwardWeight", "output gradient", dy, [g.N, g.Cout, g.OH, g.OW]) ??
    (dbias && checkShape("conv2dBackwardWeight", "bias gradient", dbias, [g.Cout])) ??
    checkDistinct("conv2dBackwardWeight", outputs, [x, dy]) ??
    (dbias && dbias.buffer === dw.buffer
      ? shapeError("conv2dBackwardWeight", `${dbias} shares a buffer with ${dw}`)
      : undefined);
  if (bad !== undefined) return yield* bad;
  const gpu = yield* Gpu;
  const pixels = g.N * g.OH * g.OW;
  const K = g.Cin * g.KH * g.KW;
  const coBlocks = Math.ceil(g.Cout / CH);
  const parts: Dispatch[] = [];
  if (g.Cin >= 4) {
    const packedSize = pixels * padded(g.Cout);
    const packed = yield* alloc([packedSize], "f32", `${dy.label} packed for conv2dBackwardWeight`);
    parts.push(
      yield* prepare(kernelSpec("pack_output_grad"), {
        tensors: bind({ dy, packed }),
        params: params(g),
        workgroups: grid1d(gpu, Math.ceil(packedSize / CH / WG)),
      }),
    );
    // Lanes are (8 input channels, tap); the pixels split into chunks when that leaves under 64 workgroups. The chunk
    // count depends on the shapes alone, so the order of the sums (and the bits) does too.
    const laneGroups = Math.ceil((Math.ceil(g.Cin / 8) * g.KH * g.KW) / WG);
    const chunks = Math.max(1, Math.min(Math.ceil(64 / (laneGroups * coBlocks)), Math.floor(pixels / 256)));
    const target = chunks > 1 ? yield* alloc([chunks, g.Cout, K], "f32", `${dw.label} partial sums`) : dw;
    parts.push(
      yield* prepare(kernelSpec("backward_weight"), {
        tensors: bind({ x, dw: target, packed4: packed }),
        params: params(g),
        workgroups: [laneGroups, coBlocks, chunks],
      }),
    );
    if (chunks > 1) parts.push(yield* sumPartials(dw, target, g, chunks));
  } else {
    // Workgroups are (8 columns, 16 output channels, a chunk of the pixels): chunks of at least 16 pixels per lane,
    // enough of them for 64 workgroups. The chunk count depends on the shapes alone, so the bits do too.
    const blocks = Math.ceil(K / PIX) * coBlocks;
    const chunks = Math.max(1, Math.min(Math.ceil(64 / blocks), Math.floor(pixels / (16 * WG))));
    const target = chunks > 1 ? yield* alloc([chunks, g.Cout, K], "f32", `${dw.label} partial sums`) : dw;
    parts.push(
      yield* prepare(kernelSpec("backward_weight_taps"), {
        tensors: bind({ x, dy, dw: target }),
        params: params(g),
        workgroups: [Math.ceil(K / PIX), coBlocks, chunks],
      }),
    );
    if (chunks > 1) parts.push(yield* sumPartials(dw, target, g, chunks));
  }
  if (dbias !== undefined) {
    parts.push(
      yield* prepare(kernelSpec("bias_grad"), {
        tensors: bind({ dy, dbias }),
        params: params(g),
        workgroups: [g.Cout],
      }),
    );
  }
  return sequence("conv2d", parts);
});
