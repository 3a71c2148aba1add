/**
 * The raw-pixel baseline: the evaluation protocol run on the images themselves (values in [0, 1], C·H·W features), so
 * that learned features can be read against what they start from. kNN compares L2-normalised rows (cosine); the probe
 * standardises its inputs; k-means clusters the L2-normalised rows, as it clusters the normalised head output z.
 */
import type { HostDataset } from "../data/dataset.ts";
import type { Matrix } from "../io/matrix.ts";
import type { DatasetFeatures } from "./features.ts";
import { evaluateFeatures, type EvaluateOptions } from "./mod.ts";

/**
 * A dataset's pixels as features: `backbone` the raw rows, `head` the same rows L2-normalised, built on first use
 * (the protocol reads the bank's head only for kNN on head features: 188 MB for MNIST's 60,000-image bank).
 */
export const pixelFeatures = (host: HostDataset): DatasetFeatures => {
  const n = host.info.n, f = host.images.length / n;
  const raw = Float32Array.from(host.images, (v) => v / 255);
  let head: Matrix | undefined;
  const unit = (): Matrix => {
    const data = new Float32Array(n * f);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < f; j++) s += (host.images[i * f + j]! / 255) ** 2;
      const scale = 1 / Math.max(Math.sqrt(s), 1e-12);
      for (let j = 0; j < f; j++) data[i * f + j] = raw[i * f + j]! * scale;
    }
    return { data, shape: [n, f] };
  };
  return {
    n,
    labels: host.labels,
    backbone: { data: raw, shape: [n, f] },
    get head() {
      return head ??= unit();
    },
  };
};

/** The evaluation of raw pixels: bank and test images as they are, the same kNN, probe and k-means. */
export const evaluatePixels = (
  bank: HostDataset,
  test: HostDataset,
  options: Omit<EvaluateOptions, "view" | "extractor"> = {},
) => evaluateFeatures(pixelFeatures(bank), pixelFeatures(test), bank.info.classes, options);
