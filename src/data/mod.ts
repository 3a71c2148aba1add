/**
 * Datasets (sources, GPU residency, the epoch sampler), the counter-based generator, and the augmentation presets
 * with their parameter drawing and host reference. The augment kernel's binding is in src/ops/augment.ts.
 */
export { DataError } from "./errors.ts";
export {
  classCounts,
  type Dataset,
  DatasetInfo,
  type HostDataset,
  imageBytes,
  type ResidentOptions,
  Sampler,
  takeFirst,
  toGpu,
} from "./dataset.ts";
export { loadDataset, readSource, Source } from "./source.ts";
export { type IdxArray, parseIdx, readIdxDir, readIdxPair, type Split } from "./idx.ts";
export { FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, mnistDataDir, readFashionMnist, readMnist } from "./mnist.ts";
export { CIFAR10_CLASSES, readCifar10 } from "./cifar.ts";
export { decodeImage, type ImageFolderOptions, readImageFolder } from "./imagefolder.ts";
export { readSynthetic, SHAPES, type SyntheticOptions } from "./synthetic.ts";
export { Draws, mulhi, NormalRng, permutation, philox4x32, RNG_WGSL, SequentialRng, Stream, u01 } from "./rng.ts";
export {
  type AugmentOp,
  type AugmentPreset,
  type ColourOp,
  type Dims,
  drawCrop,
  drawView,
  evalView,
  IMAGENET_MEAN,
  IMAGENET_STD,
  mnist,
  MNIST_MEAN,
  MNIST_STD,
  type Outside,
  type PresetName,
  presetProblem,
  PRESETS,
  roundHalfEven,
  v1,
  v2,
  type ViewKey,
  type ViewParams,
} from "./augmentations.ts";
export { augmentCpu } from "./augment_cpu.ts";
