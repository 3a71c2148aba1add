/** `pcl stage <name>`: each stage of the pipeline run on its own, from files to files. */
import { Effect, Option } from "effect";
import { Argument, Command, Flag } from "effect/cli";
import { encoderSpec, evaluationView, loadConfig } from "../config.ts";
import { type PresetName, PRESETS } from "../data/augmentations.ts";
import { classCounts } from "../data/dataset.ts";
import { loadDataset, readSource } from "../data/source.ts";
import { prepareExtractor } from "../eval/features.ts";
import { Gpu } from "../gpu/gpu.ts";
import { writeFile } from "../io/atomic.ts";
import { writeNpy } from "../io/npy.ts";
import { encoder } from "../nn/models.ts";
import { loadCheckpoint, loadEncoderState } from "../pcl/checkpoint.ts";
import { PCL_KMEANS } from "../pcl/kmeans.ts";
import { encodeStage } from "../pcl/estep.ts";
import { configFlag, intAtLeast, intList } from "./flags.ts";
import { parseSource, renderPreview } from "./stage_augment.ts";
import { runStageCluster } from "./stage_cluster.ts";

const loadCommand = Command.make("load", { config: configFlag }, (o) =>
  Effect.gen(function* () {
    const config = yield* loadConfig(o.config);
    const host = yield* readSource(config.train);
    const i = host.info;
    console.log(`${i.name}: ${i.n} images, ${i.channels}x${i.height}x${i.width}, ${i.classes} classes (${i.source})`);
    console.log(`per class: ${classCounts(host.labels, i.classes).join(", ")}`);
  })).pipe(Command.withDescription("Load the config's training set and print a summary"));

const augmentCommand = Command.make("augment", {
  config: configFlag,
  preview: Flag.String("preview").pipe(Flag.withDescription("PNG to write: originals and their augmented views")),
  preset: Flag.String("preset").pipe(
    Flag.withDescription(`augmentation preset (${Object.keys(PRESETS).join(", ")}); default the config's`),
    Flag.filter((p) => p in PRESETS, (p) => `--preset must be one of ${Object.keys(PRESETS).join(", ")}, not '${p}'`),
    Flag.optional,
  ),
  source: Flag.String("source").pipe(
    Flag.withDescription(
      "mnist | fashion-mnist[:DIR] | cifar10:DIR | imagefolder:DIR | synthetic; default the config's",
    ),
    Flag.filterMap((t) => Option.fromNullishOr(parseSource(t)), (t) => `--source '${t}' is not a source`),
    Flag.optional,
  ),
  n: intAtLeast("n", 1, "images").pipe(Flag.withDefault(8)),
  views: intAtLeast("views", 1, "views per image").pipe(Flag.withDefault(4)),
  seed: intAtLeast("seed", 0, "seed of the draws (default the config's)").pipe(Flag.optional),
  epoch: intAtLeast("epoch", 0, "epoch of the draws").pipe(Flag.withDefault(0)),
  step: intAtLeast("step", 0, "step of the draws").pipe(Flag.withDefault(0)),
  side: intAtLeast("side", 1, "output side (default the config's, else the preset's)").pipe(Flag.optional),
  zoom: intAtLeast("zoom", 1, "pixels per image pixel (default about 112 / side)").pipe(Flag.optional),
}, (o) =>
  Effect.gen(function* () {
    const config = yield* loadConfig(o.config);
    const preset = Option.getOrElse(o.preset, () => config.augment.preset) as PresetName;
    const side = Option.isSome(o.side) ? o.side.value : Option.isSome(o.preset) ? undefined : config.augment.side;
    const preview = yield* renderPreview({
      source: Option.getOrElse(o.source, () => config.train),
      preset,
      ...(side === undefined ? {} : { side }),
      ...(Option.isSome(o.zoom) ? { zoom: o.zoom.value } : {}),
      n: o.n,
      views: o.views,
      seed: Option.getOrElse(o.seed, () => config.seed),
      epoch: o.epoch,
      step: o.step,
    }).pipe(Effect.provide(Gpu.layer));
    yield* writeFile(o.preview, preview.png);
    console.log(
      `wrote ${o.preview} (${preview.width}x${preview.height}): ${o.n} images, the original then ${o.views} ` +
        `${preset} views each`,
    );
  })).pipe(Command.withDescription("Write a preview grid of an augmentation (the config's unless told) as a PNG"));

const checkpointFlag = Flag.String("checkpoint").pipe(Flag.withDescription("checkpoint manifest (.json)"));

const encodeCommand = Command.make("encode", {
  config: configFlag,
  checkpoint: checkpointFlag,
  out: Flag.String("out").pipe(Flag.withDescription(".npy file for the N x d features")),
}, (o) =>
  Effect.gen(function* () {
    const config = yield* loadConfig(o.config);
    const ckpt = yield* loadCheckpoint(o.checkpoint);
    const dataset = yield* loadDataset(config.train);
    const key = yield* encoder(encoderSpec(config, dataset), config.seed);
    yield* loadEncoderState(ckpt, key.params, "encoder_k.");
    const extractor = yield* prepareExtractor(key, evaluationView(config));
    const features = yield* encodeStage(extractor, dataset).run(undefined);
    yield* writeNpy(o.out, features);
    console.log(`wrote ${o.out}: ${features.shape.join(" x ")} features of the momentum encoder`);
  }).pipe(Effect.provide(Gpu.layer))).pipe(
    Command.withDescription("Encode the training set with a checkpoint's momentum encoder into a .npy file"),
  );

const clusterCommand = Command.make("cluster", {
  features: Flag.String("features").pipe(Flag.withDescription("N x d float32 features: .npy or .safetensors")),
  tensor: Flag.String("tensor").pipe(Flag.withDescription("the tensor's name in a .safetensors file"), Flag.optional),
  k: Flag.String("k").pipe(
    Flag.withDescription("the K of each clustering, comma-separated (e.g. 10,20,40)"),
    Flag.filterMap(intList(2), (text) => `--k must list distinct integers >= 2, not '${text}'`),
  ),
  iters: intAtLeast("iters", 1, "Lloyd iterations").pipe(Flag.withDefault(PCL_KMEANS.niter)),
  nredo: intAtLeast("nredo", 1, "restarts, keeping the lowest objective").pipe(Flag.withDefault(PCL_KMEANS.nredo)),
  seed: intAtLeast("seed", 0, "the K at position i uses seed + i").pipe(Flag.withDefault(PCL_KMEANS.seed)),
  maxPoints: intAtLeast("max-points-per-centroid", 1, "subsample to K times this many points").pipe(
    Flag.withDefault(PCL_KMEANS.maxPointsPerCentroid),
  ),
  spherical: Flag.Boolean("spherical").pipe(Flag.withDescription("normalise centroids"), Flag.withDefault(false)),
  temperature: Flag.Finite("temperature").pipe(
    Flag.withDescription("also write φ, rescaled to mean τ"),
    Flag.filter((t) => t > 0, (t) => `--temperature must be a positive number, not ${t}`),
    Flag.optional,
  ),
  out: Flag.String("out").pipe(Flag.withDescription("the prototypes file (.safetensors)")),
}, (o) =>
  runStageCluster({
    features: o.features,
    tensor: Option.getOrUndefined(o.tensor),
    out: o.out,
    temperature: Option.getOrUndefined(o.temperature),
    options: {
      ks: o.k,
      niter: o.iters,
      nredo: o.nredo,
      seed: o.seed,
      maxPointsPerCentroid: o.maxPoints,
      spherical: o.spherical,
    },
  }).pipe(Effect.provide(Gpu.layer))).pipe(
    Command.withDescription("k-means (and φ with --temperature) of a features file, into a safetensors file"),
  );

const inspectCommand = Command.make(
  "checkpoint",
  { manifest: Argument.String("manifest") },
  (o) =>
    Effect.gen(function* () {
      const c = yield* loadCheckpoint(o.manifest);
      const m = c.manifest;
      console.log(`${o.manifest}: verified (${m.tensors.bytes} bytes, sha256 ${m.tensors.sha256.slice(0, 16)}...)`);
      console.log(
        `epoch ${m.epoch + 1}, step ${m.step}/${m.stepsPerEpoch}, queue pointer ${m.queuePointer}, ` +
          `config ${m.configHash}`,
      );
      console.log(
        `${c.tensors.size} tensors; metrics of ${m.metrics.length} epochs; written ${m.createdAt} on ${m.adapter}`,
      );
    }),
).pipe(Command.withDescription("Verify a checkpoint and print what it holds"));

export const stageCommand = Command.make("stage").pipe(
  Command.withDescription("Run one stage on its own"),
  Command.withSubcommands([loadCommand, augmentCommand, encodeCommand, clusterCommand, inspectCommand]),
);
