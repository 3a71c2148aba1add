import { Effect, Schema } from "effect";
import YAML from "yaml";
import { Source } from "./data/source.ts";
import { mnist, type PresetOptions, v1, v2 } from "./data/augmentations.ts";
import type { Dataset } from "./data/dataset.ts";

const PosInt = Schema.Int.check(Schema.isGreaterThan(0));
const NonNegInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));
const Positive = Schema.Finite.check(Schema.isGreaterThan(0));
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0));
const Unit = Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 }));
const def = <S extends Schema.Top>(v: S["Encoded"]) => Schema.withDecodingDefaultKey<S>(Effect.succeed(v));

/** The encoder: backbone, projection head (PCL v1: linear; v2: MLP), embedding size. */
export const ModelConfig = Schema.Struct({
  arch: Schema.Literals([
    "convnet",
    "convnet5",
    "resnet18-cifar",
    "resnet18-imagenet",
    "resnet50-cifar",
    "resnet50-imagenet",
  ]).pipe(def("convnet")),
  head: Schema.Literals(["linear", "mlp"]).pipe(def("mlp")),
  hidden: PosInt.pipe(def(128)),
  dim: PosInt.pipe(def(64)),
  /**
   * How the backbone's convolutions start: `kaiming-normal-fan-out` (torchvision's ResNet init, the default) or
   * `uniform-fan-in` (`nn.Conv2d`'s own: smaller weights, so with BN after each convolution a larger effective
   * learning rate). Measured on mnist-reference in docs/results.md.
   */
  convInit: Schema.Literals(["kaiming-normal-fan-out", "uniform-fan-in"]).pipe(def("kaiming-normal-fan-out")),
  /**
   * The channels of every convolution times this (`convnet` and `convnet5` only; absent = 1): 0.5 is about a quarter
   * of the FLOPs, a 3.3x faster training step at batch 256 on llvmpipe (docs/quality-log.md).
   */
  width: Schema.optionalKey(Positive),
});

export const OptimizerConfig = Schema.Struct({
  lr: Positive.pipe(def(0.06)),
  /** Per epoch, no warm-up (docs/algorithm.md §6): cosine lr·½(1 + cos(π·epoch/epochs)), or ×0.1 at milestones. */
  schedule: Schema.Literals(["cosine", "step"]).pipe(def("cosine")),
  milestones: Schema.Array(NonNegInt).pipe(def([120, 160])),
  momentum: Unit.pipe(def(0.9)),
  weightDecay: NonNegative.pipe(def(5e-4)),
});

/** MoCo's half: InfoNCE temperature, key queue, key-encoder momentum, and our ShuffleBN replacement. */
export const MocoConfig = Schema.Struct({
  temperature: Positive.pipe(def(0.2)),
  queueSize: PosInt.pipe(def(4096)),
  keyMomentum: Unit.pipe(def(0.99)),
  /** Split-batch BN groups with the key batch shuffled across them (1 = plain BN, no shuffle). */
  bnGroups: PosInt.pipe(def(4)),
});

export const KMeansConfig = Schema.Struct({
  iterations: PosInt.pipe(def(20)),
  restarts: PosInt.pipe(def(5)),
  maxPointsPerCentroid: PosInt.pipe(def(1000)),
  spherical: Schema.Boolean.pipe(def(false)),
});

/** PCL's half: the clusterings of the E-step and ProtoNCE. `enabled: false` is the InfoNCE-only baseline. */
export const PclConfig = Schema.Struct({
  enabled: Schema.Boolean.pipe(def(true)),
  clusters: Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(def([10, 20, 40])),
  /** r of ProtoNCE: negative prototypes per clustering and step (all free clusters when fewer). */
  negatives: PosInt.pipe(def(16)),
  /** Mask in-batch columns holding row i's own prototype (on for small K; the official code has it off). */
  maskDuplicatePositives: Schema.Boolean.pipe(def(true)),
  kmeans: KMeansConfig.pipe(def({})),
});

export const CheckpointConfig = Schema.Struct({
  /** Also checkpoint every N steps within an epoch (0: only at the end of each epoch). */
  everySteps: NonNegInt.pipe(def(0)),
  /** Checkpoints kept (the newest ones); older ones are deleted. */
  keep: PosInt.pipe(def(3)),
});

export const AugmentConfig = Schema.Struct({
  preset: Schema.Literals(["mnist", "v1", "v2"]).pipe(def("mnist")),
  /** Output side; default the preset's (28 for mnist, 224 for v1/v2). */
  side: Schema.optionalKey(PosInt),
});

/**
 * Evaluation of the query encoder (docs/algorithm.md §7, §12): weighted kNN (k = 20, 200, cosine, weights
 * exp(sim/0.07)) on backbone features, a linear probe on the first `probeImages` bank images' standardised backbone
 * features, and the AMI/NMI/ARI/accuracy of k-means (K = classes) on the test set's head features.
 */
export const EvaluationConfig = Schema.Struct({
  /** Held-out images; no evaluation without them. */
  test: Schema.optionalKey(Source),
  /** The kNN bank and the probe's training images; the training set when absent. */
  bank: Schema.optionalKey(Source),
  /** Evaluate every N epochs (0: only after the last epoch). */
  every: NonNegInt.pipe(def(0)),
  /**
   * Images per forward pass when encoding: the E-step, the evaluation, `stage encode` (the training batch when absent).
   * BN runs on its running statistics there, so features do not depend on it beyond float rounding; a larger batch is
   * faster on a CPU (fewer dispatches per image) and holds more activations.
   */
  batchSize: Schema.optionalKey(PosInt),
  probeImages: PosInt.pipe(def(10000)),
});

export class TrainConfig extends Schema.Class<TrainConfig>("pcl/TrainConfig")({
  name: Schema.String.pipe(def("pcl")),
  seed: NonNegInt.pipe(def(0)),
  train: Source.pipe(def({ kind: "mnist", split: "train" })),
  evaluation: EvaluationConfig.pipe(def({})),
  augment: AugmentConfig.pipe(def({})),
  model: ModelConfig.pipe(def({})),
  epochs: PosInt.pipe(def(12)),
  /** Epochs of InfoNCE alone before the first E-step (docs/algorithm.md §1). */
  warmupEpochs: NonNegInt.pipe(def(2)),
  batchSize: PosInt.pipe(def(256)),
  optimizer: OptimizerConfig.pipe(def({})),
  moco: MocoConfig.pipe(def({})),
  pcl: PclConfig.pipe(def({})),
  checkpoint: CheckpointConfig.pipe(def({})),
}) {}

export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  path: Schema.String,
  message: Schema.String,
}) {}

/**
 * Decodes a config value: every problem with its path in one message, unknown keys refused. `overrides` (the command
 * line's `--epochs` and the like) are merged into `raw` first, so they meet the same schema and cross-field rules.
 */
export const decodeConfig = (raw: unknown, path = "<config>", overrides: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    if (raw === null || raw === undefined) {
      return yield* new ConfigError({ path, message: `${path}: empty config: start from pipelines/mnist.yaml` });
    }
    const merged: unknown = isObject(raw) ? merge(raw, overrides) : raw;
    const c = yield* Schema.decodeUnknownEffect(TrainConfig)(merged, { errors: "all", onExcessProperty: "error" }).pipe(
      Effect.mapError((e) => new ConfigError({ path, message: `${path}: invalid config\n${e.message}` })),
    );
    return yield* checkConsistency(c, path);
  });

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** `over` merged into `base`, objects key by key, anything else replaced. */
const merge = (base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> => {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObject(v) && isObject(base[k]) ? merge(base[k], v) : v;
  return out;
};

/** Rules across fields that the schema cannot state. */
const checkConsistency = (c: TrainConfig, path: string) => {
  const problems: string[] = [];
  if (c.moco.queueSize % c.batchSize !== 0) {
    problems.push(`moco.queueSize (${c.moco.queueSize}) must be a multiple of batchSize (${c.batchSize})`);
  }
  if (c.batchSize % c.moco.bnGroups !== 0 || c.batchSize / c.moco.bnGroups < 2) {
    problems.push(`moco.bnGroups (${c.moco.bnGroups}) must divide batchSize (${c.batchSize}) into groups of 2 or more`);
  }
  if (c.model.width !== undefined && c.model.arch !== "convnet" && c.model.arch !== "convnet5") {
    problems.push(`model.width applies to convnet and convnet5, not ${c.model.arch}`);
  }
  if (c.pcl.enabled && c.warmupEpochs >= c.epochs) {
    problems.push(`warmupEpochs (${c.warmupEpochs}) leaves no PCL epoch out of ${c.epochs}`);
  }
  return problems.length === 0
    ? Effect.succeed(c)
    : Effect.fail(new ConfigError({ path, message: `${path}: invalid config\n${problems.join("\n")}` }));
};

/** Rules that need the training set's size `n`: checked once it is loaded, before the first step. */
export const checkDatasetFits = (c: TrainConfig, n: number) => {
  const problems: string[] = [];
  if (n < c.batchSize) {
    problems.push(`batchSize (${c.batchSize}) is more than the ${n} training images: an epoch would have no step`);
  }
  const k = Math.max(...c.pcl.clusters);
  if (c.pcl.enabled && k > n) problems.push(`pcl.clusters: K = ${k} is more than the ${n} training images`);
  return problems.length === 0 ? Effect.void : Effect.fail(
    new ConfigError({ path: "train", message: `the config does not fit its training set\n${problems.join("\n")}` }),
  );
};

/** Reads and decodes a YAML config file, with command-line overrides (see `decodeConfig`). */
export const loadConfig = (path: string, overrides: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => Deno.readTextFile(path),
      catch: (e) => new ConfigError({ path, message: `cannot read config ${path}: ${(e as Error).message}` }),
    });
    const raw = yield* Effect.try({
      try: () => YAML.parse(text) as unknown,
      catch: (e) => new ConfigError({ path, message: `${path}: YAML syntax: ${(e as Error).message}` }),
    });
    return yield* decodeConfig(raw, path, overrides);
  });

/** The config as plain JSON (saved in checkpoints, diffed on resume; what is hashed is its `runIdentity`). */
export const configJson = (c: TrainConfig): Record<string, unknown> =>
  Schema.encodeSync(TrainConfig)(c) as unknown as Record<string, unknown>;

/**
 * What identifies a run, for resuming and for the artifacts' keys: the config without `epochs`, so that `--epochs N`
 * extends a finished run. The schedule's horizon stays in it: a cosine schedule's rates all depend on the epoch count
 * (lr·½(1 + cos(π·epoch/epochs))), so extending a cosine run would change the epochs already trained and is refused;
 * a step schedule does not depend on it.
 */
export const runIdentity = (c: TrainConfig): Record<string, unknown> => {
  const { epochs: _, ...rest } = configJson(c);
  return c.optimizer.schedule === "cosine" ? { ...rest, cosineHorizon: c.epochs } : rest;
};

/** Dotted paths whose values differ between two JSON values (for "config differs from the checkpoint's"). */
export const configDiff = (a: unknown, b: unknown, prefix = ""): string[] => {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null && !Array.isArray(a)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) =>
      configDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], prefix ? `${prefix}.${k}` : k)
    );
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix || "(root)"];
};

/** The evaluation view (E-step, evaluation, `stage encode`): the preset's side and normalisation, no randomness. */
export const evaluationView = (c: TrainConfig) => {
  const p = presetOf(c);
  return { side: p.side, mean: p.mean, std: p.std, batch: c.evaluation.batchSize ?? c.batchSize };
};

/** The encoder a config describes, for a dataset's channels. */
export const encoderSpec = (c: TrainConfig, dataset: Dataset) => ({ ...c.model, inChannels: dataset.info.channels });

/** The augmentation preset a config names, at its side. */
export const presetOf = (c: TrainConfig) => {
  const o: PresetOptions = c.augment.side === undefined ? {} : { side: c.augment.side };
  return c.augment.preset === "mnist" ? mnist(o) : c.augment.preset === "v1" ? v1(o) : v2(o);
};
