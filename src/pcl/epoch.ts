/**
 * One epoch of training as a typed graph of stages (docs/algorithm.md §1). After warm-up:
 *
 *   input (epoch) ─> encode ─> cluster ─> concentration ─┐
 *        └───────────────────────────────────────────────┴─> train ─> evaluate ─> checkpoint
 *
 * where `encode`, `cluster` and `concentration` are the E-step's stages (./estep.ts), `train` the epoch's M-step
 * (augment → ProtoNCE step, one submit per step), `evaluate` the query encoder's evaluation when one is due, and
 * `checkpoint` the epoch's checkpoint. Warm-up epochs (and the InfoNCE-only baseline) run
 * `input ─> train ─> evaluate ─> checkpoint`. The whole run (resume, locking, the epoch loop) is ./train.ts.
 */
import { Effect, Schema } from "effect";
import { configJson, evaluationView, type TrainConfig } from "../config.ts";
import type { Dataset, Sampler } from "../data/dataset.ts";
import { loadDataset } from "../data/source.ts";
import type { GpuContext } from "../gpu/gpu.ts";
import { GpuDeviceLost } from "../gpu/errors.ts";
import { Dag, hookPoint, type Stage, stage } from "../graph/mod.ts";
import { learningRate } from "../nn/schedule.ts";
import { captureTensors, CheckpointError, type EpochSums, saveCheckpoint } from "./checkpoint.ts";
import type { Prototypes } from "./concentration.ts";
import { clusterStage, concentrationStage, encodeStage } from "./estep.ts";
import { EpochMetrics } from "./metrics.ts";
import type { FeatureExtractor } from "../eval/features.ts";
import { evaluate, scoreClusterings } from "../eval/mod.ts";
import { METRICS_RING, type MStep, type PrototypeTensors, type StepMetrics } from "./mstep.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import type { SafeTensor } from "../io/safetensors.ts";

/** A loss became NaN or infinite: training stopped before any checkpoint could hold non-finite weights. */
export class Diverged extends Schema.TaggedError<Diverged>()("Diverged", {
  epoch: Schema.Number,
  step: Schema.Number,
  message: Schema.String,
}) {}

/** `what` non-finite at (epoch, step), told in the one way: where, what to do, and which checkpoint is still good. */
const diverged = (run: TrainingRun, what: string, epoch: number, step: number, disk: string) =>
  new Diverged({
    epoch,
    step,
    message:
      `${what} non-finite at epoch ${epoch + 1}, step ${step}; lower optimizer.lr (${run.config.optimizer.lr}). ` +
      `${disk}: the last good one is ${run.lastCheckpoint || "(none yet)"}`,
  });

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
  /**
   * A run directory whose warm-up this run shares: the same config but for `pcl.*` (PCL and its InfoNCE-only
   * baseline, say). A run with no checkpoint of its own starts from that run's end-of-warm-up checkpoint, when it has
   * one, rather than training the same warm-up epochs again: the weights are the same bit for bit.
   */
  readonly warmStart?: string;
  /** Set by a signal handler: the step in progress finishes, a checkpoint is written, training stops. */
  readonly stop?: { signal: string | undefined };
  /** Called after every step (for a progress bar). */
  readonly onStep?: (p: StepProgress) => void;
  /** Called when a phase other than the M-step starts (the E-step's stages, the evaluation). */
  readonly onPhase?: (p: PhaseProgress) => void;
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

/** The evaluation's kNN bank (the training set unless the config names one) and test set; none without a test set. */
export const evaluationSets = (config: TrainConfig, train: Dataset) =>
  Effect.gen(function* () {
    if (config.evaluation.test === undefined) return undefined;
    const bank = config.evaluation.bank === undefined ? train : yield* loadDataset(config.evaluation.bank);
    return { bank, test: yield* loadDataset(config.evaluation.test) };
  });

/** What `evaluate` is told by the config: the evaluation view and the probe's training images. */
export const evaluateOptions = (config: TrainConfig) => ({
  view: evaluationView(config),
  probe: { trainImages: config.evaluation.probeImages },
});

/** Everything one training run holds on the GPU and between epochs. */
export interface TrainingRun {
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
  prototypes: readonly PrototypeTensors[] | undefined;
  lastCheckpoint: string;
  /** The epoch in progress: its running sums. */
  sums: EpochSums;
  /** What earlier processes spent on the epoch in progress (zero unless resumed mid-epoch). */
  carried: { seconds: number; elapsed: number };
  /** When the epoch's M-step and the epoch itself started (`performance.now()`, less the carried seconds). */
  mstepStarted: number;
  epochStarted: number;
}

/** The position a run's warm-up ends at (its last epoch, every step done), if it has one. */
export const warmupEnd = (config: TrainConfig, stepsPerEpoch: number) =>
  config.warmupEpochs > 0 && config.warmupEpochs < config.epochs
    ? { epoch: config.warmupEpochs - 1, step: stepsPerEpoch }
    : undefined;

/** The first tensor holding a NaN or an infinity, if any. */
const nonFinite = (tensors: ReadonlyMap<string, SafeTensor>) => {
  for (const [name, t] of tensors) {
    if (t.dtype === "F32" && !t.data.every(Number.isFinite)) return name;
  }
  return undefined;
};

export const noSums = (): EpochSums => ({ steps: 0, infoNce: 0, accInst: 0, protoNce: [], accProto: [] });

const addSums = (sums: EpochSums, m: StepMetrics): EpochSums => ({
  steps: sums.steps + 1,
  infoNce: sums.infoNce + m.infoNce,
  accInst: sums.accInst + m.accInst,
  protoNce: m.protoNce.map((v, i) => (sums.protoNce[i] ?? 0) + v),
  accProto: m.accProto.map((v, i) => (sums.accProto[i] ?? 0) + v),
});

const finite = (m: StepMetrics) => [m.infoNce, ...m.protoNce].every(Number.isFinite);

const phase = (run: TrainingRun, p: PhaseProgress["phase"]) =>
  Effect.sync(() => run.opts.onPhase?.({ epoch: run.current, phase: p }));

/** `s` with the progress line told when it starts. */
const announced = <I, O, E, R>(run: TrainingRun, s: Stage<I, O, E, R>): Stage<I, O, E, R> => ({
  ...s,
  run: (input: I) => Effect.andThen(phase(run, s.name as PhaseProgress["phase"]), s.run(input)),
});

/**
 * Writes the current state as a checkpoint and metrics.jsonl (rewritten whole, so it always matches). Weights that are
 * not finite are never written: training stops with `Diverged` and the checkpoints on disk stay as they were.
 */
const writeCheckpoint = (run: TrainingRun) =>
  Effect.gen(function* () {
    const tensors = yield* run.gpu.guard(Effect.tryPromise({
      try: () => captureTensors(run.gpu, run.mstep, run.prototypes),
      catch: (e) =>
        e instanceof GpuDeviceLost
          ? e
          : new CheckpointError({ path: run.checkpoints, message: `reading the state for a checkpoint failed: ${e}` }),
    }));
    const bad = nonFinite(tensors);
    if (bad !== undefined) {
      return yield* diverged(run, `${bad} became`, run.epoch, run.step, "No checkpoint was written");
    }
    const now = performance.now();
    // Within an epoch until its record is in: a signal after the last step still has to evaluate and record it.
    const midEpoch = !run.metrics.some((m) => m.epoch === run.epoch);
    const path = yield* saveCheckpoint(
      run.checkpoints,
      tensors,
      {
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
      },
      run.config.checkpoint.keep,
      warmupEnd(run.config, run.sampler.stepsPerEpoch),
    );
    const metrics = `${run.opts.out}/metrics.jsonl`;
    yield* Effect.tryPromise({
      try: () => writeFileAtomic(metrics, run.metrics.map((m) => JSON.stringify(m) + "\n").join("")),
      catch: (e) => new CheckpointError({ path: metrics, message: `writing ${metrics} failed: ${e}` }),
    });
    run.lastCheckpoint = path;
    return path;
  });

/** The M-step over the rest of `epoch`: one submit per step, metrics read one step behind. */
const trainEpoch = (run: TrainingRun, epoch: number, prototypes: readonly PrototypeTensors[] | undefined) =>
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
    // Step metrics are read in batches of METRICS_RING steps (one readback each; see MStep.step): a batch's read
    // starts when it is complete and is awaited when the next one is, so the GPU runs the steps in between meanwhile.
    let unread: Array<{ step: number; metrics: () => Promise<StepMetrics> }> = [];
    let reading: Promise<Array<{ step: number; m: StepMetrics }>> | undefined;
    let last: StepMetrics | undefined;
    const startRead = () => {
      const batch = unread;
      unread = [];
      if (batch.length === 0) return;
      reading = Promise.all(batch.map(async ({ step, metrics }) => ({ step, m: await metrics() })));
      reading.catch(() => {}); // awaited by the next `settle`, unless the run fails before that
    };
    const settle = Effect.gen(function* () {
      if (reading === undefined) return;
      const read = reading;
      reading = undefined;
      for (const { step, m } of yield* run.gpu.guard(Effect.promise(() => read))) {
        last = m;
        if (!finite(m)) return yield* diverged(run, "loss became", epoch, step, "Checkpoints on disk are unchanged");
        run.sums = addSums(run.sums, m);
      }
    });
    /** Every step's metrics so far, in the sums: before a checkpoint and at the end. */
    const settleAll = Effect.gen(function* () {
      yield* settle;
      startRead();
      yield* settle;
    });
    for (let s = first; s < steps; s++) {
      yield* hookPoint(`epoch-${epoch}/step-${s}`);
      const { metrics, notes } = mstep.step(epoch, s, sampler.indices(epoch, s));
      for (const note of notes) yield* Effect.logInfo(note);
      unread.push({ step: s + 1, metrics });
      if (unread.length === METRICS_RING) {
        yield* settle;
        startRead();
      }
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
        yield* settleAll;
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
    yield* settleAll;
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
const stagesOf = (run: TrainingRun) => {
  const { config } = run;
  const encode = announced(run, encodeStage(run.keyFeatures, run.dataset));
  const cluster = announced(
    run,
    clusterStage({
      ks: config.pcl.clusters,
      niter: config.pcl.kmeans.iterations,
      nredo: config.pcl.kmeans.restarts,
      maxPointsPerCentroid: config.pcl.kmeans.maxPointsPerCentroid,
      spherical: config.pcl.kmeans.spherical,
      seed: 0,
    }),
  );
  const concentration = announced(run, concentrationStage(config.moco.temperature));
  const train = stage(
    "train",
    EpochMetrics,
    (i: { readonly input: number; readonly concentration?: Prototypes }) =>
      Effect.gen(function* () {
        const metrics = yield* trainEpoch(run, i.input, i.concentration?.clusterings);
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
        return { path };
      }),
  );
  return {
    encode,
    cluster,
    concentration,
    train,
    evaluate: evaluationStage,
    checkpoint,
  };
};

/** An epoch with the E-step: the PCL graph. */
export const pclEpoch = (run: TrainingRun) => {
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
export const infoNceEpoch = (run: TrainingRun) => {
  const s = stagesOf(run);
  return Dag.make<number>()
    .node(["input"], s.train)
    .node("train", s.evaluate)
    .node("evaluate", s.checkpoint);
};
