import { Effect } from "effect";
import type { Tensor } from "../gpu/tensor.ts";
import { add, relu as reluOp, reluBackward } from "../ops/elementwise.ts";
import { copy } from "../ops/fill.ts";
import { alloc, type Dispatch } from "../gpu/kernel.ts";
import {
  batchNorm,
  conv2dLayer,
  type ConvInit,
  globalAvgPoolLayer,
  l2Normalize,
  linear,
  maxPool,
  relu,
  shapeOf,
} from "./layers.ts";
import { type BindOptions, flopsOf, type Module, sequential } from "./module.ts";
import { ParamBuilder, type ParamStore } from "./params.ts";

const convBnRelu = (p: ParamBuilder, i: number, inC: number, outC: number, stride: number, init?: ConvInit) => [
  conv2dLayer(p.scope(`conv${i}`), inC, outC, { kernel: 3, stride, padding: 1, init }),
  batchNorm(p.scope(`bn${i}`), outC),
  relu,
];

/** conv3x3 + BN + ReLU layers of (channels times `width`, stride), then the global average pool. */
const convStack = (
  p: ParamBuilder,
  inChannels: number,
  init: ConvInit | undefined,
  width: number,
  plan: ReadonlyArray<readonly [number, number]>,
) => {
  let channels = inChannels;
  const layers = plan.flatMap(([out, stride], i) => {
    const c = Math.max(1, Math.round(out * width));
    const layer = convBnRelu(p, i + 1, channels, c, stride, init);
    channels = c;
    return layer;
  });
  return { backbone: sequential(...layers, globalAvgPoolLayer), features: channels };
};

/**
 * The small encoder for 28x28 grey images: three conv3x3 + BN + ReLU (32, 64 s2, 128 s2, each times `width`), global
 * average pool.
 */
export const convnet = (p: ParamBuilder, inChannels = 1, init?: ConvInit, width = 1) =>
  convStack(p, inChannels, init, width, [[32, 1], [64, 2], [128, 2]]);

/**
 * `convnet` with two more conv3x3 + BN + ReLU (32, 64 s2, 128 s2, 128 s2, 128, each times `width`), global average
 * pool: 128 · width features. Named for its five convolutions. The reason for it is the receptive field: `convnet`'s
 * last layer sees a 9x9 patch of a 28x28 image (7x7 positions before the pool), so its pooled feature is a bag of local
 * strokes; here each of the 4x4 positions before the pool sees 33x33, the whole image, and the pool averages views of
 * the whole digit.
 */
export const convnet5 = (p: ParamBuilder, inChannels = 1, init?: ConvInit, width = 1) =>
  convStack(p, inChannels, init, width, [[32, 1], [64, 2], [128, 2], [128, 2], [128, 1]]);

/** y = relu(body(x) + shortcut(x)), the shortcut being the identity when absent. */
export const residual = (body: Module, shortcut: Module | undefined): Module => ({
  outputShape: body.outputShape,
  flops: (input) =>
    Effect.zipWith(
      flopsOf(body, input),
      shortcut ? flopsOf(shortcut, input) : Effect.succeed(0),
      (b, s) => b + s,
    ),
  bind: Effect.fnUntraced(function* (x, dx, opts) {
    const b = yield* body.bind(x, dx, opts);
    const dxShortcut = dx && shortcut ? yield* alloc(x.shape, "f32", "residual.dxShortcut") : undefined;
    const s = shortcut ? yield* shortcut.bind(x, dxShortcut, opts) : undefined;
    const sum = yield* alloc(b.y.shape, "f32", "residual.sum");
    const y = yield* alloc(b.y.shape, "f32", "residual.y");
    const forward = [...b.forward, ...(s?.forward ?? []), yield* add(b.y, s?.y ?? x, sum), yield* reluOp(sum, y)];
    if (b.dy === undefined) return { y, dy: undefined, forward, backward: [] };
    const dy = yield* alloc(y.shape, "f32", "residual.dy");
    // Both branches receive the same gradient: relu' into the body's dy, copied to the shortcut's.
    const backward: Dispatch[] = [yield* reluBackward(sum, dy, b.dy)];
    if (s?.dy !== undefined) backward.push(yield* copy(b.dy, s.dy));
    backward.push(...b.backward, ...(s?.backward ?? []));
    if (dx !== undefined) backward.push(yield* add(dx, dxShortcut ?? b.dy, dx));
    return { y, dy, forward, backward };
  }),
});

/** torchvision's BasicBlock, with its parameter names (conv1, bn1, conv2, bn2, downsample.0, downsample.1). */
const basicBlock = (p: ParamBuilder, inC: number, outC: number, stride: number, init?: ConvInit): Module =>
  residual(
    sequential(
      conv2dLayer(p.scope("conv1"), inC, outC, { kernel: 3, stride, padding: 1, init }),
      batchNorm(p.scope("bn1"), outC),
      relu,
      conv2dLayer(p.scope("conv2"), outC, outC, { kernel: 3, stride: 1, padding: 1, init }),
      batchNorm(p.scope("bn2"), outC),
    ),
    stride !== 1 || inC !== outC
      ? sequential(
        conv2dLayer(p.scope("downsample.0"), inC, outC, { kernel: 1, stride, init }),
        batchNorm(p.scope("downsample.1"), outC),
      )
      : undefined,
  );

/**
 * torchvision's Bottleneck (ResNet v1.5: the stride is in the 3x3 conv2), with its parameter names: conv1 1x1
 * (in → width), bn1, conv2 3x3 (width → width, stride), bn2, conv3 1x1 (width → 4·width), bn3, and downsample.0
 * (1x1, stride) + downsample.1 when the stride or the channel count changes.
 */
export const bottleneck = (p: ParamBuilder, inC: number, width: number, stride: number, init?: ConvInit): Module => {
  const outC = width * 4;
  return residual(
    sequential(
      conv2dLayer(p.scope("conv1"), inC, width, { kernel: 1, init }),
      batchNorm(p.scope("bn1"), width),
      relu,
      conv2dLayer(p.scope("conv2"), width, width, { kernel: 3, stride, padding: 1, init }),
      batchNorm(p.scope("bn2"), width),
      relu,
      conv2dLayer(p.scope("conv3"), width, outC, { kernel: 1, init }),
      batchNorm(p.scope("bn3"), outC),
    ),
    stride !== 1 || inC !== outC
      ? sequential(
        conv2dLayer(p.scope("downsample.0"), inC, outC, { kernel: 1, stride, init }),
        batchNorm(p.scope("downsample.1"), outC),
      )
      : undefined,
  );
};

/** A residual block builder: `inC` channels in, `width · expansion` out, the stride in its first layer's blocks. */
type Block = (p: ParamBuilder, inC: number, width: number, stride: number, init?: ConvInit) => Module;

/**
 * torchvision's ResNet layout: the stem (conv1, bn1, ReLU, and for ImageNet the max pool), then layer1..layer4 of
 * `depths` blocks at widths 64, 128, 256, 512 (the first block of layer2..4 strided), global average pool.
 */
const resnet = (
  p: ParamBuilder,
  stem: "cifar" | "imagenet",
  inChannels: number,
  block: Block,
  expansion: number,
  depths: readonly [number, number, number, number],
  init?: ConvInit,
) => {
  const stemLayers = stem === "cifar"
    ? [conv2dLayer(p.scope("conv1"), inChannels, 64, { kernel: 3, stride: 1, padding: 1, init })]
    : [conv2dLayer(p.scope("conv1"), inChannels, 64, { kernel: 7, stride: 2, padding: 3, init })];
  const bn1 = batchNorm(p.scope("bn1"), 64); // declared here: parameter order is torchvision's
  const blocks: Module[] = [];
  let channels = 64;
  [64, 128, 256, 512].forEach((width, i) => {
    const layer = p.scope(`layer${i + 1}`);
    for (let j = 0; j < depths[i]; j++) {
      blocks.push(block(layer.scope(j), channels, width, i > 0 && j === 0 ? 2 : 1, init));
      channels = width * expansion;
    }
  });
  return {
    backbone: sequential(
      ...stemLayers,
      bn1,
      relu,
      ...(stem === "imagenet" ? [maxPool(3, 2, 1)] : []),
      ...blocks,
      globalAvgPoolLayer,
    ),
    features: 512 * expansion,
  };
};

/**
 * ResNet-18 with torchvision's names. The CIFAR stem is a 3x3 conv without max pool (for 32x32 inputs); the
 * ImageNet stem a 7x7 stride-2 conv and a 3x3 stride-2 max pool.
 */
export const resnet18 = (p: ParamBuilder, stem: "cifar" | "imagenet", inChannels = 3, init?: ConvInit) =>
  resnet(p, stem, inChannels, basicBlock, 1, [2, 2, 2, 2], init);

/**
 * ResNet-50 with torchvision's names (Bottleneck blocks, [3, 4, 6, 3], 2048 features): the paper's encoder. Stems
 * as `resnet18`'s.
 */
export const resnet50 = (p: ParamBuilder, stem: "cifar" | "imagenet", inChannels = 3, init?: ConvInit) =>
  resnet(p, stem, inChannels, bottleneck, 4, [3, 4, 6, 3], init);

export type Architecture =
  | "convnet"
  | "convnet5"
  | "resnet18-cifar"
  | "resnet18-imagenet"
  | "resnet50-cifar"
  | "resnet50-imagenet";

export interface EncoderSpec {
  readonly arch: Architecture;
  readonly inChannels: number;
  /** `linear` is PCL v1's head (features → dim); `mlp` is v2's (features → hidden → ReLU → dim), no BN. */
  readonly head: "linear" | "mlp";
  readonly hidden?: number;
  readonly dim: number;
  /** How the backbone's convolutions start (default `kaiming-normal-fan-out`, torchvision's). */
  readonly convInit?: ConvInit | undefined;
  /** The convnets' channels times this (default 1). */
  readonly width?: number | undefined;
}

/** A backbone, a projection head and the output normalisation, with all their parameters in one store. */
export interface Encoder {
  readonly spec: EncoderSpec;
  readonly params: ParamStore;
  readonly backbone: Module;
  readonly head: Module;
  readonly features: number;
}

/** The backbone `spec.arch` names, its parameters declared in `p`. */
const backboneOf = (p: ParamBuilder, spec: EncoderSpec): { readonly backbone: Module; readonly features: number } => {
  switch (spec.arch) {
    case "convnet":
      return convnet(p, spec.inChannels, spec.convInit, spec.width);
    case "convnet5":
      return convnet5(p, spec.inChannels, spec.convInit, spec.width);
    case "resnet18-cifar":
      return resnet18(p, "cifar", spec.inChannels, spec.convInit);
    case "resnet18-imagenet":
      return resnet18(p, "imagenet", spec.inChannels, spec.convInit);
    case "resnet50-cifar":
      return resnet50(p, "cifar", spec.inChannels, spec.convInit);
    case "resnet50-imagenet":
      return resnet50(p, "imagenet", spec.inChannels, spec.convInit);
  }
};

/** Builds an encoder with PyTorch names (`conv1.weight`, ..., `fc.0.weight` for the MLP head), seeded. */
export const encoder = (spec: EncoderSpec, seed: number) =>
  Effect.gen(function* () {
    const p = ParamBuilder.create();
    const { backbone, features } = backboneOf(p, spec);
    const head = spec.head === "linear" ? linear(p.scope("fc"), features, spec.dim) : sequential(
      linear(p.scope("fc.0"), features, spec.hidden ?? features),
      relu,
      linear(p.scope("fc.2"), spec.hidden ?? features, spec.dim),
    );
    const params = yield* p.allocate(seed, spec.arch);
    return { spec, params, backbone, head, features } satisfies Encoder;
  });

/**
 * Forward FLOPs of the backbone and head for one image of `[channels, height, width]`: 2 per multiply-add of the
 * convolutions and linear layers (BN, ReLU, pooling and the normalisation are not counted). A training step costs
 * about three times this (forward, and the input and weight gradients of each layer). An image the encoder cannot
 * take fails with a ShapeError.
 */
export const flopsPerImage = (e: Encoder, image: readonly [number, number, number]) =>
  flopsOf(sequential(e.backbone, e.head), [1, ...image]);

/** An encoder bound to an input batch: backbone features, the normalised embedding z, and both passes. */
export interface BoundEncoder {
  readonly features: Tensor<"f32">;
  readonly z: Tensor<"f32">;
  /** Gradient of the loss with respect to z, to be filled before `backward` runs (when bound with `grad`). */
  readonly dz: Tensor<"f32"> | undefined;
  readonly forward: readonly Dispatch[];
  readonly backward: readonly Dispatch[];
}

export const bindEncoder = Effect.fnUntraced(function* (e: Encoder, x: Tensor<"f32">, opts: BindOptions) {
  yield* shapeOf(sequential(e.backbone, e.head), x);
  const b = yield* e.backbone.bind(x, undefined, opts);
  const h = yield* e.head.bind(b.y, b.dy, opts);
  const n = yield* l2Normalize.bind(h.y, h.dy, opts);
  return {
    features: b.y,
    z: n.y,
    dz: n.dy,
    forward: [...b.forward, ...h.forward, ...n.forward],
    backward: [...n.backward, ...h.backward, ...b.backward],
  } satisfies BoundEncoder;
});
