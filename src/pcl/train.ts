/**
 * Training a run: the epoch loop over ./epoch.ts's graphs, resuming from the newest checkpoint (weights, optimizer,
 * queue, position and the epoch's sums; the E-step stages' outputs are artifacts of the epoch, so a run that stopped
 * mid-epoch reuses them rather than clustering again), with the run directory locked, and the report at the end.
 */
import { Effect, Schema } from "effect";
import {
  checkDatasetFits,
  configDiff,
  configJson,
  encoderSpec,
  evaluationView,
  presetOf,
  runIdentity,
  type TrainConfig,
} from "../config.ts";
import { type Dataset, Sampler } from "../data/dataset.ts";
import { loadDataset } from "../data/source.ts";
import { Gpu } from "../gpu/gpu.ts";
import { ArtifactStore, configHash, runPipeline } from "../graph/mod.ts";
import { encoder } from "../nn/models.ts";
import { prepareAugmenter } from "../ops/augment.ts";
import {
  type Checkpoint,
  CheckpointError,
  listManifests,
  loadCheckpoint,
  newestOfEpoch,
  restoreTensors,
} from "./checkpoint.ts";
import {
  evaluationSets,
  infoNceEpoch,
  noSums,
  pclEpoch,
  type TrainingRun,
  type TrainOptions,
  warmupEnd,
} from "./epoch.ts";
import { EpochMetrics, trainingSeconds } from "./metrics.ts";
import { prepareExtractor } from "../eval/features.ts";
import { renderReport } from "../report/mod.ts";
import { MStep } from "./mstep.ts";
import { WriteError } from "../io/atomic.ts";
import { lockRunDirectory } from "../io/lock.ts";

export class ConfigMismatch extends Schema.TaggedError<ConfigMismatch>()("ConfigMismatch", {
  keys: Schema.Array(Schema.String),
  message: Schema.String,
}) {}

export interface TrainResult {
  readonly out: string;
  /** `out/report.html`, unless it could not be written (a warning says why; the run itself succeeded). */
  readonly report: string | undefined;
  readonly metrics: readonly EpochMetrics[];
  readonly checkpoint: string;
  /** The training time of the whole run, resumes included (`trainingSeconds`). */
  readonly seconds: number;
  readonly resumedFrom: string | undefined;
  readonly dataset: Dataset;
  readonly mstep: MStep;
}

const exists = (path: string) => Deno.stat(path).then((s) => s.isFile, () => false);

/** Moves what a previous run left in `out` into `out/archive-<time>/` (nothing is deleted). */
const archive = (out: string) =>
  Effect.tryPromise({
    catch: (e) =>
      new WriteError({ path: out, message: `--fresh: moving the previous run in ${out} aside failed: ${e}` }),
    try: async () => {
      const entries: string[] = [];
      try {
        for await (const e of Deno.readDir(out)) {
          if (!e.name.startsWith("archive-") && e.name !== ".lock") entries.push(e.name);
        }
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      if (entries.length === 0) return undefined;
      const dir = `${out}/archive-${new Date().toISOString().replace(/[:.]/g, "-")}`;
      await Deno.mkdir(dir, { recursive: true });
      for (const name of entries) await Deno.rename(`${out}/${name}`, `${dir}/${name}`);
      return dir;
    },
  });

/** The checkpoint to resume from: the one asked for, else the newest (a corrupt newest one is an error). */
const findCheckpoint = (dir: string, opts: TrainOptions) =>
  Effect.gen(function* () {
    if (opts.fromCheckpoint !== undefined) return yield* loadCheckpoint(opts.fromCheckpoint);
    const manifests = yield* Effect.tryPromise({
      try: () => listManifests(dir),
      catch: (e) => new CheckpointError({ path: dir, message: `cannot list the checkpoints in ${dir}: ${e}` }),
    });
    if (manifests.length === 0) return undefined;
    return yield* loadCheckpoint(manifests[0]).pipe(
      Effect.mapError((e) =>
        new CheckpointError({
          path: e.path,
          message: `${e.message}\nThe newest checkpoint cannot be used. ` +
            (manifests[1]
              ? `To resume from the previous one, pass --from-checkpoint ${manifests[1]}`
              : "There is no earlier checkpoint; pass --fresh to start over (the run is archived, not deleted)."),
        })
      ),
    );
  });

/**
 * The end-of-warm-up checkpoint of the run in `dir`, for a run with `config` to start from (`TrainOptions.warmStart`):
 * none when that run has not finished its warm-up (or kept no checkpoint of its end); `ConfigMismatch` when its config
 * differs from `config` in more than `pcl.*`, since then its warm-up is not this run's.
 */
const warmUpCheckpoint = (dir: string, config: TrainConfig) =>
  Effect.gen(function* () {
    const end = warmupEnd(config, 1); // its step is checked against the manifest's own steps per epoch below
    if (end === undefined) return undefined;
    const path = yield* Effect.tryPromise({
      try: () => newestOfEpoch(`${dir}/checkpoints`, end.epoch),
      catch: (e) => new CheckpointError({ path: dir, message: `cannot list the checkpoints in ${dir}: ${e}` }),
    });
    if (path === undefined) return undefined;
    const c = yield* loadCheckpoint(path);
    if (c.manifest.step !== c.manifest.stepsPerEpoch || c.manifest.progress !== undefined) return undefined;
    const keys = configDiff(c.manifest.config, configJson(config)).filter((k) => !k.startsWith("pcl."));
    if (keys.length > 0) {
      return yield* new ConfigMismatch({
        keys,
        message: `cannot share the warm-up of ${dir}: its config differs in ${keys.join(", ")} (only pcl.* may)`,
      });
    }
    return c;
  });

/**
 * Trains PCL (or the InfoNCE baseline when `pcl.enabled` is false) as configured, resuming where a run stopped. The
 * run directory is locked for the duration (`RunLocked` if another process holds it).
 */
export const train = (config: TrainConfig, opts: TrainOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      if (opts.fresh && opts.fromCheckpoint !== undefined) {
        return yield* new CheckpointError({
          path: opts.fromCheckpoint,
          message:
            "--fresh and --from-checkpoint cannot be combined: --fresh archives the run the checkpoint is part of",
        });
      }
      yield* lockRunDirectory(opts.out);
      return yield* trainLocked(config, opts);
    }),
  );

const trainLocked = (config: TrainConfig, opts: TrainOptions) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const checkpoints = `${opts.out}/checkpoints`;
    if (opts.fresh) {
      const archived = yield* archive(opts.out);
      if (archived) yield* Effect.logInfo(`--fresh: the previous run in ${opts.out} was moved to ${archived}`);
    }
    const own: Checkpoint | undefined = yield* findCheckpoint(checkpoints, opts);
    const shared = own === undefined && opts.warmStart !== undefined
      ? yield* warmUpCheckpoint(opts.warmStart, config)
      : undefined;
    const resume = own ?? shared;
    const identity = runIdentity(config);
    const hash = yield* configHash(identity);
    if (own !== undefined && own.manifest.configHash !== hash) {
      // `epochs` is part of the identity only as a cosine schedule's horizon.
      const keys = configDiff(own.manifest.config, configJson(config))
        .filter((k) => k !== "epochs" || config.optimizer.schedule === "cosine");
      const cosine = keys.includes("epochs") // kept above only under a cosine schedule
        ? " A cosine schedule's rates all depend on the epoch count, so a cosine run cannot be extended: " +
          "use optimizer.schedule: step to extend runs, or start a new run."
        : "";
      return yield* new ConfigMismatch({
        keys,
        message: `the config differs from the one of checkpoint ${own.manifestPath} in: ${keys.join(", ")}.` +
          `${cosine} Use the same config to resume, or pass --fresh to start a new run (the old one is archived).`,
      });
    }

    const dataset = yield* loadDataset(config.train);
    yield* checkDatasetFits(config, dataset.info.n);
    const preset = presetOf(config);
    yield* Effect.logInfo(
      `dataset ${dataset.info.name}: ${dataset.info.n} images ${dataset.info.channels}x${dataset.info.height}x` +
        `${dataset.info.width}; augmentation ${preset.name} to ${preset.side}px`,
    );
    const spec = encoderSpec(config, dataset);
    const query = yield* encoder(spec, config.seed);
    const key = yield* encoder(spec, config.seed);
    const augmenter = yield* prepareAugmenter(dataset, { preset, batch: config.batchSize, seed: config.seed });
    const mstep = yield* MStep.prepare(query, key, augmenter, config.pcl.enabled ? config.pcl.clusters : [], {
      ...config.moco,
      ...config.optimizer,
      negatives: config.pcl.negatives,
      maskDuplicatePositives: config.pcl.maskDuplicatePositives,
      seed: config.seed,
    });
    const keyFeatures = yield* prepareExtractor(key, evaluationView(config));
    const sets = yield* evaluationSets(config, dataset);
    const evaluation = sets && { ...sets, extractor: yield* prepareExtractor(query, evaluationView(config)) };
    const sampler = new Sampler(dataset.info.n, config.batchSize, config.seed);
    const run: TrainingRun = {
      config,
      opts,
      gpu,
      dataset,
      sampler,
      mstep,
      keyFeatures,
      evaluation,
      checkpoints,
      hash,
      metrics: [],
      current: 0,
      epoch: 0,
      step: 0,
      prototypes: undefined,
      lastCheckpoint: "",
      sums: noSums(),
      carried: { seconds: 0, elapsed: 0 },
      mstepStarted: 0,
      epochStarted: 0,
    };
    if (resume !== undefined) {
      if (resume.manifest.stepsPerEpoch !== sampler.stepsPerEpoch) {
        return yield* new CheckpointError({
          path: resume.manifestPath,
          message:
            `${resume.manifestPath}: the run had ${resume.manifest.stepsPerEpoch} steps per epoch, the training ` +
            `set now gives ${sampler.stepsPerEpoch} (${dataset.info.n} images): it changed since; pass --fresh`,
        });
      }
      run.prototypes = yield* restoreTensors(mstep, resume);
      run.epoch = resume.manifest.epoch;
      run.step = resume.manifest.step;
      run.metrics = [
        ...yield* Schema.decodeUnknownEffect(Schema.Array(EpochMetrics))(resume.manifest.metrics).pipe(
          Effect.mapError((e) =>
            new CheckpointError({ path: resume.manifestPath, message: `${resume.manifestPath}: metrics: ${e.message}` })
          ),
        ),
      ];
      run.lastCheckpoint = resume.manifestPath;
      const p = resume.manifest.progress;
      if (p !== undefined) {
        const { seconds, elapsed, ...sums } = p;
        [run.sums, run.carried] = [sums, { seconds, elapsed }];
      }
      yield* Effect.logInfo(
        shared === undefined
          ? `resuming from ${resume.manifestPath}: epoch ${run.epoch + 1}, step ${run.step}/${sampler.stepsPerEpoch}`
          : `starting from the end of the warm-up of ${opts.warmStart} (${resume.manifestPath}): its config ` +
            `differs only in pcl.*, so its ${config.warmupEpochs} warm-up epochs are this run's`,
      );
    }
    // An epoch whose record is in is done; one stopped after its last step still evaluates and records itself.
    const recorded = run.metrics.some((m) => m.epoch === run.epoch);
    const firstEpoch = recorded ? run.epoch + 1 : run.epoch; // a fresh run has no records
    const store = ArtifactStore.directory(`${opts.out}/artifacts`);
    for (let epoch = firstEpoch; epoch < config.epochs; epoch++) {
      run.current = epoch;
      if (run.epoch !== epoch) run.carried = { seconds: 0, elapsed: 0 };
      run.epochStarted = performance.now() - 1000 * run.carried.elapsed;
      const withPrototypes = config.pcl.enabled && epoch >= config.warmupEpochs;
      const plan = withPrototypes ? pclEpoch(run) : infoNceEpoch(run);
      yield* runPipeline(plan, epoch, { run: `epoch-${epoch}`, config: identity, from: "train" }).pipe(
        Effect.provide(store),
        Effect.annotateLogs({ epoch }),
      );
      const m = run.metrics.at(-1)!;
      yield* Effect.logInfo(
        `epoch ${epoch + 1}/${config.epochs}: InfoNCE ${m.infoNce.toFixed(4)}, Acc@Inst ${
          (100 * m.accInst).toFixed(1)
        }%` +
          (m.protoNce.length
            ? `, ProtoNCE ${m.protoNce.map((v) => v.toFixed(3)).join("/")}, Acc@Proto ${
              m.accProto.map((v) => (100 * v).toFixed(1)).join("/")
            }%`
            : "") +
          `, lr ${m.lr.toPrecision(3)}, ${m.imagesPerSecond.toFixed(0)} img/s`,
      );
    }
    // A finished run asked again (a comparison resuming, say) keeps its report: nothing in it changed.
    const kept = `${opts.out}/report.html`;
    const unchanged = firstEpoch >= config.epochs && (yield* Effect.promise(() => exists(kept)));
    const report = unchanged ? kept : yield* renderReport(opts.out).pipe(
      Effect.tap((path) => Effect.logInfo(`report: ${path}`)),
      Effect.catch((e) => Effect.as(Effect.logWarning(`the report could not be written: ${e.message}`), undefined)),
    );
    return {
      out: opts.out,
      report,
      metrics: run.metrics,
      checkpoint: run.lastCheckpoint,
      seconds: trainingSeconds(run.metrics),
      resumedFrom: resume?.manifestPath,
      dataset,
      mstep,
    } satisfies TrainResult;
  });
