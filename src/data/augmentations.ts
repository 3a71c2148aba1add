/**
 * Augmentation pipelines as data (presets), and the per-sample random parameters they draw. Drawing happens on the
 * host from the counter-based generator keyed by (seed, epoch, step, sample, view): a few dozen numbers per view,
 * written to the GPU once per step, so the kernel only applies them and the draws are testable without a GPU.
 *
 * The sampling follows torchvision: RandomResizedCrop (10 attempts of area / log-ratio sampling, then the centre-crop
 * fallback, Python's round-half-even), ColorJitter (factors uniform in [max(0, 1 - s), 1 + s], hue in [-h, h], the
 * four ops in a random order), RandomApply / RandomGrayscale / RandomHorizontalFlip as `u < p`.
 */
import { Draws, Stream } from "./rng.ts";

export type ColourOp = "brightness" | "contrast" | "saturation" | "hue";

export type AugmentOp =
  /** RandomResizedCrop; with `rotation` (degrees) composed with a rotation about the crop centre, zeros outside. */
  | {
    readonly op: "resizedCrop";
    readonly scale: readonly [number, number];
    readonly ratio: readonly [number, number];
    readonly rotation?: number;
  }
  | { readonly op: "flip"; readonly p: number }
  /** ColorJitter wrapped in RandomApply(p); `order` "random" as torchvision, or a fixed list of the ops to apply. */
  | {
    readonly op: "colorJitter";
    readonly p: number;
    readonly brightness: number;
    readonly contrast: number;
    readonly saturation: number;
    readonly hue: number;
    readonly order: "random" | readonly ColourOp[];
  }
  | { readonly op: "grayscale"; readonly p: number }
  /** Gaussian blur with sigma ~ U(sigma), applied with probability p; `radius` fixed, or ceil(3 sigma) if absent. */
  | { readonly op: "blur"; readonly p: number; readonly sigma: readonly [number, number]; readonly radius?: number };

export interface AugmentPreset {
  readonly name: string;
  /** Output side S: views are C x S x S. */
  readonly side: number;
  /** In the official order. The first must be `resizedCrop`; `blur` must come after every colour op. */
  readonly ops: readonly AugmentOp[];
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;
export const MNIST_MEAN = [0.1307] as const;
export const MNIST_STD = [0.3081] as const;

export interface PresetOptions {
  readonly side?: number;
  readonly mean?: readonly number[];
  readonly std?: readonly number[];
}

const CROP = { op: "resizedCrop", scale: [0.2, 1], ratio: [3 / 4, 4 / 3] } as const;

/** PCL v1 (InstDisc / MoCo v1 augmentation), docs/algorithm.md section 6. */
export const v1 = (o: PresetOptions = {}): AugmentPreset => ({
  name: "v1",
  side: o.side ?? 224,
  ops: [
    CROP,
    { op: "grayscale", p: 0.2 },
    { op: "colorJitter", p: 1, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.4, order: "random" },
    { op: "flip", p: 0.5 },
  ],
  mean: o.mean ?? IMAGENET_MEAN,
  std: o.std ?? IMAGENET_STD,
});

/** PCL v2 (`--aug-plus`, MoCo v2 / SimCLR), docs/algorithm.md section 6. Blur sigma in output pixels, as there. */
export const v2 = (o: PresetOptions = {}): AugmentPreset => ({
  name: "v2",
  side: o.side ?? 224,
  ops: [
    CROP,
    { op: "colorJitter", p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, order: "random" },
    { op: "grayscale", p: 0.2 },
    { op: "blur", p: 0.5, sigma: [0.1, 2.0] },
    { op: "flip", p: 0.5 },
  ],
  mean: o.mean ?? IMAGENET_MEAN,
  std: o.std ?? IMAGENET_STD,
});

/** 28 x 28 digits: crop + rotation as one warp, contrast then brightness, a 5 x 5 blur; no flip (digits are not). */
export const mnist = (o: PresetOptions = {}): AugmentPreset => ({
  name: "mnist",
  side: o.side ?? 28,
  ops: [
    { op: "resizedCrop", scale: [0.5, 1], ratio: [3 / 4, 4 / 3], rotation: 10 },
    {
      op: "colorJitter",
      p: 0.8,
      brightness: 0.4,
      contrast: 0.4,
      saturation: 0,
      hue: 0,
      order: ["contrast", "brightness"],
    },
    { op: "blur", p: 0.5, sigma: [0.1, 1.0], radius: 2 },
  ],
  mean: o.mean ?? MNIST_MEAN,
  std: o.std ?? MNIST_STD,
});

export const PRESETS = { v1, v2, "aug-plus": v2, mnist } as const;
export type PresetName = keyof typeof PRESETS;

/** Source image dimensions. */
export interface Dims {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
}

/** What the source-to-output warp reads outside its box. */
export type Outside =
  /** Taps clipped to the (integer) crop box and renormalised: crop, then resize. */
  | "box"
  /** Taps clipped to the image and renormalised: resize, then crop (the evaluation view). */
  | "image"
  /** Zeros outside the image (a rotation's corners). */
  | "zero";

/** One view's parameters, in the words of the operations. */
export interface ViewParams {
  /** Source region (pixels; integers for random crops) resized to S x S. */
  readonly box: { readonly x: number; readonly y: number; readonly w: number; readonly h: number };
  readonly outside: Outside;
  /** Rotation about the box centre, degrees (counter-clockwise on screen, as torchvision's rotate). */
  readonly angle: number;
  readonly flip: boolean;
  /** Colour operations in the order they apply (factor: the jitter factor; hue: the shift; grayscale: unused). */
  readonly colour: ReadonlyArray<{ readonly op: ColourOp | "grayscale"; readonly factor: number }>;
  /** Gaussian blur sigma (0: none) and tap radius. */
  readonly sigma: number;
  readonly radius: number;
}

/** Python's round(): half to even (torchvision's crop size uses it). */
export const roundHalfEven = (x: number): number => {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/** Draw slots: fixed per parameter, so a skipped branch never shifts another parameter's draw. */
const SLOT = {
  attempt: 0, // 2 per attempt: area fraction, log ratio (10 attempts: slots 0..19)
  top: 20,
  left: 21,
  angle: 22,
  flip: 23,
  jitter: 24,
  brightness: 25,
  contrast: 26,
  saturation: 27,
  hue: 28,
  perm: 29, // 29, 30, 31
  gray: 32,
  blur: 33,
  sigma: 34,
} as const;

/** The key of one view's draws. */
export interface ViewKey {
  readonly seed: number;
  readonly epoch: number;
  readonly step: number;
  /** Position in the batch. */
  readonly sample: number;
  readonly view: number;
}

export const viewDraws = (k: ViewKey): Draws =>
  new Draws([k.seed, Stream.augment], [k.epoch, k.step, k.sample, (k.view << 16) >>> 0]);

/** torchvision's RandomResizedCrop.get_params. */
export const drawCrop = (
  d: Draws,
  height: number,
  width: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): { x: number; y: number; w: number; h: number } => {
  const area = height * width;
  const logLo = Math.log(ratio[0]), logHi = Math.log(ratio[1]);
  for (let t = 0; t < 10; t++) {
    const target = area * d.uniform(SLOT.attempt + 2 * t, scale[0], scale[1]);
    const aspect = Math.exp(d.uniform(SLOT.attempt + 2 * t + 1, logLo, logHi));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      return { y: d.int(SLOT.top, height - h + 1), x: d.int(SLOT.left, width - w + 1), w, h };
    }
  }
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < Math.min(ratio[0], ratio[1])) h = roundHalfEven(w / Math.min(ratio[0], ratio[1]));
  else if (inRatio > Math.max(ratio[0], ratio[1])) w = roundHalfEven(h * Math.max(ratio[0], ratio[1]));
  return { y: Math.floor((height - h) / 2), x: Math.floor((width - w) / 2), w, h };
};

const JITTER_ORDER: readonly ColourOp[] = ["brightness", "contrast", "saturation", "hue"];

/** Ops that have no meaning on grey images (skipped for C = 1). */
const COLOUR_ONLY = new Set(["saturation", "hue", "grayscale"]);

/** One view's parameters for an image of `dims` (the crop is drawn in source pixels). */
export const drawView = (preset: AugmentPreset, dims: Dims, key: ViewKey): ViewParams => {
  const d = viewDraws(key);
  let box = { x: 0, y: 0, w: dims.width, h: dims.height };
  let outside: Outside = "image";
  let angle = 0, flip = false, sigma = 0, radius = 0;
  const colour: { op: ColourOp | "grayscale"; factor: number }[] = [];
  for (const op of preset.ops) {
    switch (op.op) {
      case "resizedCrop":
        box = drawCrop(d, dims.height, dims.width, op.scale, op.ratio);
        angle = op.rotation ? d.uniform(SLOT.angle, -op.rotation, op.rotation) : 0;
        outside = op.rotation ? "zero" : "box";
        break;
      case "flip":
        flip = d.u(SLOT.flip) < op.p;
        break;
      case "grayscale":
        if (d.u(SLOT.gray) < op.p) colour.push({ op: "grayscale", factor: 0 });
        break;
      case "colorJitter": {
        if (!(d.u(SLOT.jitter) < op.p)) break;
        let order: ColourOp[];
        if (op.order === "random") {
          order = [...JITTER_ORDER];
          for (let j = 3; j > 0; j--) {
            const k = d.int(SLOT.perm + 3 - j, j + 1);
            [order[j], order[k]] = [order[k]!, order[j]!];
          }
        } else order = [...op.order];
        for (const c of order) {
          const s = op[c];
          if (s <= 0) continue; // torchvision leaves out an op whose strength is 0
          const factor = c === "hue" ? d.uniform(SLOT.hue, -s, s) : d.uniform(SLOT[c], Math.max(0, 1 - s), 1 + s);
          colour.push({ op: c, factor });
        }
        break;
      }
      case "blur":
        if (d.u(SLOT.blur) < op.p) {
          sigma = d.uniform(SLOT.sigma, op.sigma[0], op.sigma[1]);
          radius = op.radius ?? Math.ceil(3 * sigma);
        }
        break;
    }
  }
  return {
    box,
    outside,
    angle,
    flip,
    colour: dims.channels === 1 ? colour.filter((c) => !COLOUR_ONLY.has(c.op)) : colour,
    sigma,
    radius,
  };
};

/**
 * The evaluation view (E-step and evaluation): resize the shorter side to `resize`, centre crop S (as Resize(256) /
 * CenterCrop(224) at S = 224), as one resampling of a centre box; an image already S x S is taken as it is.
 */
export const evalView = (dims: Dims, side: number, resize = Math.round((side * 256) / 224)): ViewParams => {
  const shorter = Math.min(dims.height, dims.width);
  const same = dims.height === side && dims.width === side;
  const extent = same ? side : (shorter * side) / resize; // the source span that ends up as the S x S crop
  return {
    box: { x: (dims.width - extent) / 2, y: (dims.height - extent) / 2, w: extent, h: extent },
    outside: "image",
    angle: 0,
    flip: false,
    colour: [],
    sigma: 0,
    radius: 0,
  };
};

/** Why a preset does not fit the kernel's fixed structure (crop, colour ops, blur, normalise), or undefined. */
export const presetProblem = (preset: AugmentPreset): string | undefined => {
  if (preset.ops[0]?.op !== "resizedCrop") return `preset '${preset.name}': the first op must be resizedCrop`;
  const blurAt = preset.ops.findIndex((o) => o.op === "blur");
  const lastColour = preset.ops.findLastIndex((o) => o.op === "colorJitter" || o.op === "grayscale");
  if (blurAt >= 0 && blurAt < lastColour) return `preset '${preset.name}': blur must come after the colour ops`;
  if (preset.ops.filter((o) => o.op === "resizedCrop").length > 1) return `preset '${preset.name}': two crops`;
  if (!Number.isInteger(preset.side) || preset.side < 1) return `preset '${preset.name}': side ${preset.side}`;
  return undefined;
};
