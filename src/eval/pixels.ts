/**
 * The raw-pixel baseline: the evaluation protocol run on the images themselves (values in [0, 1], C·H·W features), so
 * that learned features can be read against what they start from. kNN compares L2-normalised rows (cosine); the probe
 * standardises its inputs; k-means clusters the L2-normalised rows, as it clusters the normalised head output z.
 */
import type { HostDataset } from "../data/dataset.ts";
import type { DatasetFeatures } from "./features.ts";
import { evaluateFeatures, type EvaluateOptions } from "./mod.ts";

/** A dataset's pixels as features: `backbone` the raw rows, `head` the same rows L2-normalised. */
export const pixelFeatures = (host: HostDataset): DatasetFeatures => {
  const n = host.info.n, f = host.images.length / n;
  const raw = new Float32Array(n * f);
  const unit = new Float32Array(n * f);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < f; j++) {
      const v = host.images[i * f + j]! / 255;
      raw[i * f + j] = v;
      s += v * v;
    }
    const scale = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < f; j++) unit[i * f + j] = raw[i * f + j]! * scale;
  }
  return { n, labels: host.labels, backbone: { data: raw, shape: [n, f] }, head: { data: unit, shape: [n, f] } };
};

/** The evaluation of raw pixels: bank and test images as they are, the same kNN, probe and k-means. */
export const evaluatePixels = (
  bank: HostDataset,
  test: HostDataset,
  options: Omit<EvaluateOptions, "view" | "extractor"> = {},
) => evaluateFeatures(pixelFeatures(bank), pixelFeatures(test), bank.info.classes, options);
