/**
 * The augment stage alone, as a picture: a grid of n images (one per row), the original (evaluation view) in the
 * first column and `views` independent augmented views beside it, written as a PNG for a person to look at.
 *
 *   deno task stage augment --preview out.png [--config FILE] [--preset mnist|v1|v2|aug-plus] [--n 8] [--views 4]
 *     [--seed S] [--epoch 0] [--step 0] [--side S] [--zoom Z]
 *     [--source mnist|fashion-mnist[:DIR]|cifar10:DIR|imagefolder:DIR|synthetic]
 *
 * The config (default pipelines/mnist.yaml) gives the source, preset, side and seed; the flags override them. Without
 * a side, v1/v2 previews stay at the source's own side (their default 224 would only upscale 32-pixel images).
 */
import { Effect } from "effect";
import { shapeError } from "../gpu/errors.ts";
import { encode as encodePng } from "fast-png";
import { read, runDispatches } from "../gpu/kernel.ts";
import { type PresetName, PRESETS } from "../data/augmentations.ts";
import { Sampler, toGpu } from "../data/dataset.ts";
import type { Source } from "../data/source.ts";
import { prepareAugmenter, prepareEvalViewer } from "../ops/augment.ts";
import { load } from "../data/stages.ts";

export interface PreviewOptions {
  readonly preset: PresetName;
  readonly source: Source;
  readonly n: number;
  readonly views: number;
  readonly seed: number;
  readonly epoch: number;
  readonly step: number;
  readonly side?: number;
  readonly zoom?: number;
}

const GAP = 2;
const BACKGROUND = [40, 40, 40] as const;
const SEPARATOR = [128, 128, 128] as const;

/** `--source` text to a Source (image folders are brought to 64 x 64 for the preview). */
export const parseSource = (text: string): Source | undefined => {
  const [kind, ...rest] = text.split(":");
  const dir = rest.join(":");
  if (kind === "mnist" && dir === "") return { kind: "mnist", split: "train" };
  if (kind === "fashion-mnist") return dir === "" ? { kind: kind, split: "train" } : { kind, split: "train", dir };
  if (kind === "cifar10" && dir !== "") return { kind, dir, split: "train" };
  if (kind === "imagefolder" && dir !== "") return { kind, dir, side: 64 };
  if (kind === "synthetic" && dir === "") return { kind, n: 512, side: 32, channels: 3, seed: 0 };
  return undefined;
};

/** The preview grid as PNG bytes, with its size. */
export const renderPreview = (o: PreviewOptions) =>
  Effect.gen(function* () {
    const host = yield* load(o.source);
    const { info } = host;
    const side = o.side ?? (o.preset === "mnist" ? 28 : Math.min(info.height, info.width));
    const preset = PRESETS[o.preset]({ side });
    const c = info.channels;
    const steps = Math.floor(info.n / o.n);
    if (steps < 1 || o.step >= steps) {
      return yield* shapeError(
        "stage augment",
        steps < 1
          ? `--n ${o.n} is more than the ${info.n} images of ${info.name}`
          : `--step ${o.step}: ${info.name} has ${steps} steps of ${o.n} images per epoch`,
      );
    }
    const dataset = yield* toGpu(host);
    const indices = new Sampler(info.n, o.n, o.seed).indices(o.epoch, o.step);
    const originals = yield* prepareEvalViewer(dataset, { batch: o.n, side, mean: [0, 0, 0], std: [1, 1, 1] });
    const augmenter = yield* prepareAugmenter(dataset, { preset, batch: o.n, seed: o.seed, views: o.views });
    originals.setIndices(indices);
    augmenter.setStep(o.epoch, o.step, indices);
    yield* runDispatches([...originals.dispatches, ...augmenter.dispatches], "preview");
    // columns: the original in [0, 1], then each view de-normalised
    const columns = [{ data: yield* read(originals.outputs[0]!), mean: [0, 0, 0], std: [1, 1, 1] }];
    for (const t of augmenter.outputs) {
      columns.push({ data: yield* read(t), mean: [...preset.mean], std: [...preset.std] });
    }

    const zoom = o.zoom ?? Math.max(1, Math.round(112 / side));
    const tile = side * zoom;
    const width = columns.length * tile + (columns.length + 2) * GAP; // a double gap after the originals
    const height = o.n * tile + (o.n + 1) * GAP;
    const rgb = new Uint8Array(width * height * 3);
    for (let k = 0; k < width * height; k++) {
      const x = k % width; // the double gap between the originals and the views is drawn lighter
      rgb.set(x >= GAP + tile && x < tile + 3 * GAP ? SEPARATOR : BACKGROUND, 3 * k);
    }
    for (const [col, { data, mean, std }] of columns.entries()) {
      const left = GAP + col * (tile + GAP) + (col > 0 ? GAP : 0);
      for (let b = 0; b < o.n; b++) {
        const top = GAP + b * (tile + GAP);
        for (let y = 0; y < tile; y++) {
          for (let x = 0; x < tile; x++) {
            const p = Math.floor(y / zoom) * side + Math.floor(x / zoom);
            const at = 3 * ((top + y) * width + left + x);
            for (let ch = 0; ch < 3; ch++) {
              const k = Math.min(ch, c - 1);
              const v = data[(b * c + k) * side * side + p]! * std[k]! + mean[k]!;
              rgb[at + ch] = Math.round(255 * Math.min(1, Math.max(0, v)));
            }
          }
        }
      }
    }
    return { png: encodePng({ width, height, channels: 3, depth: 8, data: rgb }), width, height, side };
  });

if (import.meta.main) {
  // One parser for both ways in: this entry point is `pcl stage augment`.
  const { main } = await import("./main.ts");
  Deno.exit(await main(["stage", "augment", ...Deno.args]));
}
