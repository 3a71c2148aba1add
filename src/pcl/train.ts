/**
 * PCL as a typed composition of stages (pcl-algorithm.md §1). Every epoch after warm-up is one run of the graph
 *
 *   input (epoch) ─> encode ─> cluster ─> concentration ─┐
 *        └───────────────────────────────────────────────┴─> train ─> checkpoint
 *
 * where `encode` is the momentum encoder on the training set (evaluation view), `cluster` the k-means for each K,
 * `concentration` φ, `train` the epoch's M-step (augment → ProtoNCE step, one submit per step) and `checkpoint` the
 * epoch's checkpoint. Warm-up epochs (and the InfoNCE-only baseline) run `input ─> train ─> checkpoint`.
 *
 * Resume: the newest checkpoint restores the M-step state (weights, optimizer, queue, position); the E-step stages'
 * outputs are artifacts of the epoch, so a run that stopped mid-epoch reuses them rather than clustering again.
 */
import { Effect, Schema } from "effect";
import { checkDatasetFits, configDiff, configJson, runIdentity, type TrainConfig } from "../config.ts";
import { mnist, type PresetOptions, v1, v2 } from "../data/augmentations.ts";
import { type Dataset, Sampler } from "../data/dataset.ts";
import { loadDataset } from "../data/source.ts";
import { Gpu, type GpuContext } from "../gpu/gpu.ts";
import { ArtifactStore, BundleFromBytes, configHash, Dag, runPipeline, stage, TensorField } from "../graph/mod.ts";
import { encoder } from "../nn/models.ts";
import { learningRate } from "../nn/schedule.ts";
import { prepareAugmenter } from "../ops/augment.ts";
import {
  captureTensors,
  type Checkpoint,
  CheckpointError,
  type EpochSums,
  listManifests,
  loadCheckpoint,
  restoreTensors,
  saveCheckpoint,
} from "./checkpoint.ts";
import { cluster, type Clusterings, ClusteringsSchema as ClusteringsArtifact } from "./kmeans.ts";
import { type ClusterResult, ClusterResultSchema as ClusterResultArtifact, concentration } from "./concentration.ts";
import { type FeatureExtractor, prepareExtractor } from "../eval/features.ts";
import { evaluate, scoreClusterings } from "../eval/mod.ts";
import { renderReport } from "../report/mod.ts";
import { type Clustering, MStep, type StepMetrics } from "./mstep.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { lockRunDirectory } from "../io/lock.ts";
import type { SafeTensor } from "../io/safetensors.ts";

const Scores = Schema.Struct({ ami: Schema.Number, nmi: Schema.Number, ari: Schema.Number, acc: Schema.Number });

/** The query encoder's evaluation (see `EvaluationConfig`): fractions in [0, 1]. */
export const Evaluation = Schema.Struct({
  knn: Schema.Record(Schema.String, Schema.Number),
  linear: Schema.Number,
  clustering: Scores,
  seconds: Schema.Number,
});

/** One epoch's record in the checkpoints and `metrics.jsonl`. */
export const EpochMetrics = Schema.Struct({
  epoch: Schema.Number,
  lr: Schema.Number,
  steps: Schema.Number,
  infoNce: Schema.Number,
  accInst: Schema.Number,
  protoNce: Schema.Array(Schema.Number),
  accProto: Schema.Array(Schema.Number),
  /** The M-step's seconds (what `imagesPerSecond` is measured over). */
  seconds: Schema.Number,
  imagesPerSecond: Schema.Number,
  /** The whole epoch's wall time: E-step, M-step, evaluation and checkpoints, summed over resumes. */
  elapsed: Schema.optionalKey(Schema.Number),
  /** The E-step's clusterings scored against the training labels, one per K. */
  estep: Schema.optionalKey(Schema.Array(Scores.pipe(Schema.fieldsAssign({ k: Schema.Number })))),
  evaluation: Schema.optionalKey(Evaluation),
});
export type EpochMetrics = typeof EpochMetrics.Type;

export class ConfigMismatch extends Schema.TaggedError<ConfigMismatch>()("ConfigMismatch", {
  keys: Schema.Array(Schema.String),
  message: Schema.String,
}) {}

/** A loss became NaN or infinite: training stopped before any checkpoint could hold non-finite weights. */
export class Diverged extends Schema.TaggedError<Diverged>()("Diverged", {
  epoch: Schema.Number,
  step: Schema.Number,
  message: Schema.String,
}) {}

/** Training stopped by a signal after writing a checkpoint. */
export class Interrupted extends Schema.TaggedError<Interrupted>()("Interrupted", {
  signal: Schema.String,
  checkpoint: Schema.String,
  message: Schema.String,
}) {}

export interface TrainOptions {
  /** The run directory: checkpoints/, artifacts/, metrics.jsonl. */
  readonly out: string;
  /** Start over even if the directory holds a run (what was there is moved to `archive-<time>/`, not deleted). */
  readonly fresh?: boolean;
  /** Resume from this checkpoint manifest instead of the newest one. */
  readonly fromCheckpoint?: string;
  /** Set by a signal handler: the step in progress finishes, a checkpoint is written, training stops. */
  readonly stop?: { signal: string | undefined };
  /** Called after every step (for a progress bar). */
  readonly onStep?: (p: StepProgress) => void;
  /** Called when a phase other than the M-step starts (the E-step's stages, evaluation, a checkpoint). */
  readonly onPhase?: (p: PhaseProgress) => void;
  /** Test hook: called at every stage boundary (`epoch-E/<stage>`) and step (`epoch-E/step-S`); may throw. */
  readonly fault?: (point: string) => void;
}

export interface StepProgress {
  readonly epoch: number;
  readonly step: number;
  readonly stepsPerEpoch: number;
  readonly imagesPerSecond: number;
  readonly last: StepMetrics | undefined;
  /** The mean wall time of the epochs finished so far (E-step and evaluation included), for an ETA. */
  readonly epochSeconds: number | undefined;
}

export interface PhaseProgress {
  readonly epoch: number;
  readonly phase: "encode" | "cluster" | "concentration" | "evaluate";
}

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

/** The evaluation view (E-step, evaluation, `stage encode`): the preset's side and normalisation, no randomness. */
export const evaluationView = (c: TrainConfig) => {
  const p = presetOf(c);
  return { side: p.side, mean: p.mean, std: p.std, batch: c.batchSize };
};

/** The encoder a config describes, for a dataset's channels. */
export const encoderSpec = (c: TrainConfig, dataset: Dataset) => ({ ...c.model, inChannels: dataset.info.channels });

/** The evaluation's kNN bank (the training set unless the config names one) and test set; none without a test set. */
const evaluationSets = (config: TrainConfig, train: Dataset) =>
  Effect.gen(function* () {
    if (config.evaluation.test === undefined) return undefined;
    const bank = config.evaluation.bank === undefined ? train : yield* loadDataset(config.evaluation.bank);
    return { bank, test: yield* loadDataset(config.evaluation.test) };
  });

/** What `evaluate` is told by the config: the evaluation view and the probe's training images. */
const evaluateOptions = (config: TrainConfig) => ({
  view: evaluationView(config),
  probe: { trainImages: config.evaluation.probeImages },
});

export const presetOf = (c: TrainConfig) => {
  const o: PresetOptions = c.augment.side === undefined ? {} : { side: c.augment.side };
  return c.augment.preset === "mnist" ? mnist(o) : c.augment.preset === "v1" ? v1(o) : v2(o);
};

const FeaturesArtifact = BundleFromBytes(
  Schema.Struct({ n: Schema.Number, dim: Schema.Number, z: TensorField(Float32Array) }),
);
type FeaturesArtifact = typeof FeaturesArtifact.Type;

/** Everything one training run holds on the GPU and between epochs. */
interface Run {
  readonly config: TrainConfig;
  readonly opts: TrainOptions;
  readonly gpu: GpuContext;
  readonly dataset: Dataset;
  readonly sampler: Sampler;
  readonly mstep: MStep;
  /** The momentum encoder's features of the training set (the E-step's input). */
  readonly keyFeatures: FeatureExtractor;
  /** The query encoder's evaluation, when the config names a test set. */
  readonly evaluation:
    | { readonly extractor: FeatureExtractor; readonly bank: Dataset; readonly test: Dataset }
    | undefined;
  readonly checkpoints: string;
  readonly hash: string;
  metrics: EpochMetrics[];
  /** The epoch whose graph is running. */
  current: number;
  /** The position reached: `step` steps of `epoch` are done. */
  epoch: number;
  step: number;
  prototypes: Clustering[] | undefined;
  lastCheckpoint: string;
  /** The epoch in progress: its running sums, and when its M-step and the epoch itself started (`performance.now()`
   * less what earlier processes spent on it). */
  sums: EpochSums;
  /** What earlier processes spent on the epoch in progress (zero unless resumed mid-epoch). */
  carried: { seconds: number; elapsed: number };
  mstepStarted: number;
  epochStarted: number;
}

/** The first tensor holding a NaN or an infinity, if any. */
const nonFinite = (tensors: ReadonlyMap<string, SafeTensor>) => {
  for (const [name, t] of tensors) {
    if (t.dtype === "F32" && !t.data.every(Number.isFinite)) return name;
  }
  return undefined;
};

const noSums = (): EpochSums => ({ steps: 0, infoNce: 0, accInst: 0, protoNce: [], accProto: [] });

const addSums = (sums: EpochSums, m: StepMetrics): EpochSums => ({
  steps: sums.steps + 1,
  infoNce: sums.infoNce + m.infoNce,
  accInst: sums.accInst + m.accInst,
  protoNce: m.protoNce.map((v, i) => (sums.protoNce[i] ?? 0) + v),
  accProto: m.accProto.map((v, i) => (sums.accProto[i] ?? 0) + v),
});

const finite = (m: StepMetrics) => [m.infoNce, ...m.protoNce].every(Number.isFinite);

const phase = (run: Run, p: PhaseProgress["phase"]) =>
  Effect.sync(() => run.opts.onPhase?.({ epoch: run.current, phase: p }));

const fault = (run: Run, point: string) => Effect.sync(() => run.opts.fault?.(point));

const toClusterings = (r: ClusterResult): Clustering[] =>
  r.clusterings.map((c) => ({ prototypes: c.prototypes, concentration: c.concentration, im2cluster: c.im2cluster }));

/**
 * Writes the current state as a checkpoint and metrics.jsonl (rewritten whole, so it always matches). Weights that are
 * not finite are never written: training stops with `Diverged` and the checkpoints on disk stay as they were.
 */
const writeCheckpoint = (run: Run) =>
  Effect.gen(function* () {
    const tensors = yield* Effect.promise(() => captureTensors(run.gpu, run.mstep, run.prototypes));
    const bad = nonFinite(tensors);
    if (bad !== undefined) {
      return yield* new Diverged({
        epoch: run.epoch,
        step: run.step,
        message: `${bad} became non-finite at epoch ${run.epoch + 1}, step ${run.step}; lower optimizer.lr ` +
          `(${run.config.optimizer.lr}). No checkpoint was written: the last good one is ${
            run.lastCheckpoint || "(none yet)"
          }`,
      });
    }
    const now = performance.now();
    const midEpoch = run.step < run.sampler.stepsPerEpoch;
    const path = yield* saveCheckpoint(run.checkpoints, tensors, {
      epoch: run.epoch,
      step: run.step,
      stepsPerEpoch: run.sampler.stepsPerEpoch,
      queuePointer: run.mstep.queuePointer,
      configHash: run.hash,
      config: configJson(run.config),
      rng: "Philox4x32-10 keyed by (seed, stream), counters (epoch, step, ...): nothing else to restore",
      metrics: run.metrics,
      ...(midEpoch
        ? {
          progress: {
            ...run.sums,
            seconds: (now - run.mstepStarted) / 1000,
            elapsed: (now - run.epochStarted) / 1000,
          },
        }
        : {}),
      adapter: run.gpu.adapter.description,
    }, run.config.checkpoint.keep);
    const metrics = `${run.opts.out}/metrics.jsonl`;
    yield* Effect.tryPromise({
      try: () => writeFileAtomic(metrics, run.metrics.map((m) => JSON.stringify(m) + "\n").join("")),
      catch: (e) => new CheckpointError({ path: metrics, message: `writing ${metrics} failed: ${e}` }),
    });
    run.lastCheckpoint = path;
    return path;
  });

/** The M-step over the rest of `epoch`: one submit per step, metrics read one step behind. */
const trainEpoch = (run: Run, epoch: number, prototypes: Clustering[] | undefined) =>
  Effect.gen(function* () {
    const { config, mstep, sampler } = run;
    const lr = learningRate(
      config.optimizer.schedule === "cosine"
        ? { kind: "cosine" }
        : { kind: "step", milestones: config.optimizer.milestones },
      config.optimizer.lr,
      epoch,
      config.epochs,
    );
    mstep.setLearningRate(lr);
    mstep.setPrototypes(prototypes);
    run.prototypes = prototypes;
    if (run.epoch !== epoch) [run.epoch, run.step, run.sums] = [epoch, 0, noSums()];
    const first = run.step;
    const steps = sampler.stepsPerEpoch;
    const start = performance.now();
    run.mstepStarted = start - 1000 * run.carried.seconds;
    const done = run.metrics.filter((m) => m.elapsed !== undefined);
    const epochSeconds = done.length > 0 ? done.reduce((a, m) => a + m.elapsed!, 0) / done.length : undefined;
    let pending: { step: number; read: Promise<StepMetrics> } | undefined;
    let last: StepMetrics | undefined;
    const settle = Effect.gen(function* () {
      if (pending === undefined) return;
      const { step, read } = pending;
      last = yield* run.gpu.guard(Effect.promise(() => read));
      pending = undefined;
      if (!finite(last)) {
        return yield* new Diverged({
          epoch,
          step,
          message: `loss became non-finite at epoch ${epoch + 1}, step ${step}; lower optimizer.lr ` +
            `(${config.optimizer.lr}). Checkpoints on disk are unchanged; the last good one is ${
              run.lastCheckpoint || "(none yet)"
            }`,
        });
      }
      run.sums = addSums(run.sums, last);
    });
    for (let s = first; s < steps; s++) {
      yield* fault(run, `epoch-${epoch}/step-${s}`);
      const { metrics, notes } = mstep.step(epoch, s, sampler.indices(epoch, s));
      for (const note of notes) yield* Effect.logInfo(note);
      yield* settle; // the previous step's metrics: the GPU has moved on to this one meanwhile
      pending = { step: s + 1, read: metrics() };
      pending.read.catch(() => {}); // awaited by the next `settle`, unless the run fails before that
      run.step = s + 1;
      run.opts.onStep?.({
        epoch,
        step: s + 1,
        stepsPerEpoch: steps,
        imagesPerSecond: ((s + 1 - first) * config.batchSize) / ((performance.now() - start) / 1000),
        last,
        epochSeconds,
      });
      const signal = run.opts.stop?.signal;
      const every = config.checkpoint.everySteps;
      if (signal !== undefined || (every > 0 && (s + 1) % every === 0 && s + 1 < steps)) {
        yield* settle;
        const path = yield* writeCheckpoint(run);
        if (signal !== undefined) {
          return yield* new Interrupted({
            signal,
            checkpoint: path,
            message: `stopped by ${signal} at epoch ${epoch + 1}, step ${s + 1}/${steps}; checkpoint ${path}`,
          });
        }
      }
    }
    yield* settle;
    const seconds = (performance.now() - run.mstepStarted) / 1000;
    const { sums } = run;
    const n = Math.max(1, sums.steps);
    return {
      epoch,
      lr,
      steps: sums.steps,
      infoNce: sums.infoNce / n,
      accInst: sums.accInst / n,
      protoNce: sums.protoNce.map((v) => v / n),
      accProto: sums.accProto.map((v) => v / n),
      seconds,
      imagesPerSecond: (sums.steps * config.batchSize) / Math.max(seconds, 1e-9),
    } satisfies EpochMetrics;
  });

/** The stages of one epoch, bound to a run. */
const stagesOf = (run: Run) => {
  const { config } = run;
  const encode = stage("encode", FeaturesArtifact, (epoch: number) =>
    Effect.gen(function* () {
      yield* phase(run, "encode");
      const f = yield* run.keyFeatures.extract(run.dataset);
      yield* fault(run, `epoch-${epoch}/encode`);
      return { n: f.n, dim: f.head.shape[1], z: f.head.data };
    }));
  const clusterStage = stage(
    "cluster",
    BundleFromBytes(ClusteringsArtifact),
    (f: FeaturesArtifact) =>
      Effect.gen(function* () {
        yield* phase(run, "cluster");
        const result = yield* cluster({ data: f.z, shape: [f.n, f.dim] }, {
          ks: config.pcl.clusters,
          niter: config.pcl.kmeans.iterations,
          nredo: config.pcl.kmeans.restarts,
          maxPointsPerCentroid: config.pcl.kmeans.maxPointsPerCentroid,
          spherical: config.pcl.kmeans.spherical,
          seed: 0,
        });
        for (const c of result.clusterings) {
          const sizes = new Int32Array(c.k);
          for (const a of c.im2cluster) sizes[a]++;
          yield* Effect.logInfo(
            `k-means K=${c.k}: objective ${c.objective.toFixed(2)}, ${sizes.filter((s) => s === 0).length} empty, ` +
              `largest ${Math.max(...sizes)}, restart ${c.bestRestart} of ${c.restartObjectives.length}`,
          );
        }
        yield* fault(run, `epoch-${run.current}/cluster`);
        return result;
      }),
  );
  const concentrationStage = stage(
    "concentration",
    BundleFromBytes(ClusterResultArtifact),
    (c: Clusterings) =>
      phase(run, "concentration").pipe(
        Effect.andThen(concentration(c, config.moco.temperature)),
        Effect.tap(() => fault(run, `epoch-${run.current}/concentration`)),
      ),
  );
  const train = stage(
    "train",
    EpochMetrics,
    (i: { readonly input: number; readonly concentration?: ClusterResult }) =>
      Effect.gen(function* () {
        const metrics = yield* trainEpoch(run, i.input, i.concentration && toClusterings(i.concentration));
        if (i.concentration === undefined) return metrics;
        const estep = scoreClusterings(i.concentration.clusterings, run.dataset.labels);
        yield* Effect.logInfo(
          `E-step against the labels: ${estep.map((c) => `K=${c.k} AMI ${c.ami.toFixed(3)}`).join(", ")}`,
        );
        return { ...metrics, estep };
      }),
  );
  const evaluationStage = stage("evaluate", EpochMetrics, (m: EpochMetrics) =>
    Effect.gen(function* () {
      const every = config.evaluation.every;
      const due = m.epoch === config.epochs - 1 || (every > 0 && (m.epoch + 1) % every === 0);
      if (run.evaluation === undefined || !due) return m;
      yield* phase(run, "evaluate");
      const started = performance.now();
      const e = yield* evaluate(run.mstep.query, { train: run.evaluation.bank, test: run.evaluation.test }, {
        ...evaluateOptions(config),
        extractor: run.evaluation.extractor,
      });
      const evaluation = {
        knn: e.knn,
        linear: e.linear,
        clustering: e.clustering,
        seconds: (performance.now() - started) / 1000,
      };
      yield* Effect.logInfo(
        `evaluation: kNN ${Object.entries(e.knn).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(", ")}, ` +
          `linear ${(100 * e.linear).toFixed(1)}%, test k-means AMI ${e.clustering.ami.toFixed(3)} ` +
          `NMI ${e.clustering.nmi.toFixed(3)} (${evaluation.seconds.toFixed(0)} s)`,
      );
      return { ...m, evaluation };
    }));
  const checkpoint = stage(
    "checkpoint",
    Schema.Struct({ path: Schema.String }),
    (m: EpochMetrics) =>
      Effect.gen(function* () {
        const elapsed = (performance.now() - run.epochStarted) / 1000;
        run.metrics = [...run.metrics.filter((x) => x.epoch !== m.epoch), { ...m, elapsed }];
        const path = yield* writeCheckpoint(run);
        yield* fault(run, `epoch-${m.epoch}/checkpoint`);
        return { path };
      }),
  );
  return {
    encode,
    cluster: clusterStage,
    concentration: concentrationStage,
    train,
    evaluate: evaluationStage,
    checkpoint,
  };
};

/** An epoch with the E-step: the PCL graph. */
export const pclEpoch = (run: Run) => {
  const s = stagesOf(run);
  return Dag.make<number>()
    .node("input", s.encode)
    .node("encode", s.cluster)
    .node("cluster", s.concentration)
    .node(["input", "concentration"], s.train)
    .node("train", s.evaluate)
    .node("evaluate", s.checkpoint);
};

/** An epoch without it: warm-up, and the InfoNCE-only baseline throughout. */
export const infoNceEpoch = (run: Run) => {
  const s = stagesOf(run);
  return Dag.make<number>()
    .node(["input"], s.train)
    .node("train", s.evaluate)
    .node("evaluate", s.checkpoint);
};

/** A run's training time: every epoch's whole wall time (E-step, M-step, evaluation, checkpoints), over resumes. */
export const trainingSeconds = (metrics: readonly EpochMetrics[]) =>
  metrics.reduce((a, m) => a + (m.elapsed ?? m.seconds), 0);

/** Moves what a previous run left in `out` into `out/archive-<time>/` (nothing is deleted). */
const archive = (out: string) =>
  Effect.promise(async () => {
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
  });

/** The checkpoint to resume from: the one asked for, else the newest (a corrupt newest one is an error). */
const findCheckpoint = (dir: string, opts: TrainOptions) =>
  Effect.gen(function* () {
    if (opts.fromCheckpoint !== undefined) return yield* loadCheckpoint(opts.fromCheckpoint);
    const manifests = yield* Effect.promise(() => listManifests(dir));
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
 * Trains PCL (or the InfoNCE baseline when `pcl.enabled` is false) as configured, resuming where a run stopped. The
 * run directory is locked for the duration (`RunLocked` if another process holds it).
 */
export const train = (config: TrainConfig, opts: TrainOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
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
    const resume: Checkpoint | undefined = yield* findCheckpoint(checkpoints, opts);
    const identity = runIdentity(config);
    const hash = yield* configHash(identity);
    if (resume !== undefined && resume.manifest.configHash !== hash) {
      const keys = configDiff(resume.manifest.config, configJson(config));
      const cosine = keys.includes("epochs") && config.optimizer.schedule === "cosine"
        ? " A cosine schedule's rates all depend on the epoch count, so a cosine run cannot be extended: " +
          "use optimizer.schedule: step to extend runs, or start a new run."
        : "";
      return yield* new ConfigMismatch({
        keys,
        message: `the config differs from the one of checkpoint ${resume.manifestPath} in: ${keys.join(", ")}.` +
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
    const run: Run = {
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
      run.prototypes = restoreTensors(gpu, mstep, resume);
      run.epoch = resume.manifest.epoch;
      run.step = resume.manifest.step;
      run.metrics = [...resume.manifest.metrics] as EpochMetrics[];
      run.lastCheckpoint = resume.manifestPath;
      const p = resume.manifest.progress;
      if (p !== undefined) {
        const { seconds, elapsed, ...sums } = p;
        [run.sums, run.carried] = [sums, { seconds, elapsed }];
      }
      yield* Effect.logInfo(
        `resuming from ${resume.manifestPath}: epoch ${run.epoch}, step ${run.step}/` +
          `${sampler.stepsPerEpoch}`,
      );
    }
    const firstEpoch = run.step >= sampler.stepsPerEpoch ? run.epoch + 1 : run.epoch;
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
    const report = yield* renderReport(opts.out).pipe(
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

/**
 * The evaluation of the untrained encoder a run starts from (the same seed, so the same initial weights): the
 * "random encoder" baseline every trained figure should be read against. Undefined when the config names no test set.
 */
export const evaluateUntrained = (config: TrainConfig) =>
  Effect.gen(function* () {
    if (config.evaluation.test === undefined) return undefined;
    const dataset = yield* loadDataset(config.train);
    const query = yield* encoder(encoderSpec(config, dataset), config.seed);
    const { bank, test } = (yield* evaluationSets(config, dataset))!;
    return yield* evaluate(query, { train: bank, test }, evaluateOptions(config));
  });
