/**
 * PCL on WebGPU: the public API. Stages, the typed graph and its runner, the Gpu service, models, datasets, configs
 * and the training pipelines. See README.md for the ways to use it (train, custom pipelines, standalone stages).
 */

// The GPU: the service (provide `Gpu.layer` once), tensors, kernel preparation, typed errors.
export * from "./src/gpu/mod.ts";

// The typed stage graph: Stage, Pipeline, Dag, the resumable runner, artifact stores, codecs.
export * from "./src/graph/mod.ts";

// Data: sources, GPU-resident datasets, the sampler, augmentation presets, the counter-based RNG.
export * from "./src/data/mod.ts";
export { type Augmenter, type EvalViewer, prepareAugmenter, prepareEvalViewer } from "./src/ops/augment.ts";

// Models: modules with explicit backward, the convnet and ResNet-18 encoders, parameter stores, schedules.
export * from "./src/nn/module.ts";
export * from "./src/nn/layers.ts";
export * from "./src/nn/models.ts";
export { type Init, ParamBuilder, ParamStore, Slot, StateDictError, type StoreEntry } from "./src/nn/params.ts";
export * from "./src/nn/schedule.ts";

// The losses: InfoNCE and ProtoNCE share one masked softmax cross-entropy kernel; the plain one for probes.
export * from "./src/ops/contrastive.ts";
export * from "./src/ops/softmax_ce.ts";

// Data stages: load, augment.
export * from "./src/data/stages.ts";

// The method (src/pcl): Features -> Clusterings -> Prototypes with φ (the E-step), the M-step, checkpoints, training.
export * from "./src/pcl/kmeans.ts";
export * from "./src/pcl/concentration.ts";
export * from "./src/pcl/estep.ts";
export {
  fixedViews,
  MStep,
  type MStepConfig,
  MStepError,
  type PrototypeTensors,
  sampleColumns,
  type StepMetrics,
  type ViewSource,
} from "./src/pcl/mstep.ts";
export * from "./src/pcl/checkpoint.ts";
export * from "./src/pcl/metrics.ts";

// Evaluation: features, weighted kNN, linear probe, clustering metrics.
export * from "./src/eval/mod.ts";

// Files.
export * from "./src/io/npy.ts";
export * from "./src/io/safetensors.ts";
export * from "./src/io/matrix.ts";
export { WriteError, writeFile } from "./src/io/atomic.ts";
export { lockRunDirectory, RunLocked } from "./src/io/lock.ts";

// Configs and training.
export * from "./src/config.ts";
export { ConfigMismatch, train, type TrainResult } from "./src/pcl/train.ts";
export * from "./src/pcl/baselines.ts";
export * from "./src/pcl/comparison.ts";
export * from "./src/eval/pixels.ts";
export {
  Diverged,
  infoNceEpoch,
  Interrupted,
  pclEpoch,
  type PhaseProgress,
  type StepProgress,
  type TrainingRun,
  type TrainOptions,
} from "./src/pcl/epoch.ts";
