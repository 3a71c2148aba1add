/**
 * What a run records, as schemas shared by the trainer (which writes `metrics.jsonl` and the checkpoint manifests)
 * and the report (which reads them back). A loss can be NaN or infinite; JSON writes that as null, so every measured
 * number decodes null back to NaN: a diverged or damaged run still reads, with gaps in its curves.
 */
import { Schema, SchemaTransformation } from "effect";

/** A measured number: `null` in JSON for NaN and ±Inf. */
export const Measured = Schema.NullOr(Schema.Number).pipe(
  Schema.decodeTo(
    Schema.Number,
    SchemaTransformation.transform<number, number | null>({
      decode: (v) => v ?? NaN,
      encode: (v) => (Number.isFinite(v) ? v : null),
    }),
  ),
);

/** Clustering agreement with the labels, as fractions in [0, 1]. */
export const Scores = Schema.Struct({ ami: Measured, nmi: Measured, ari: Measured, acc: Measured });
export type Scores = typeof Scores.Type;

/**
 * The query encoder's evaluation (see `EvaluationConfig`): fractions in [0, 1]. Training writes every part; each is
 * optional so that an evaluation may skip the costlier ones and a report still reads it.
 */
export const Evaluation = Schema.Struct({
  knn: Schema.optionalKey(Schema.Record(Schema.String, Measured)),
  linear: Schema.optionalKey(Measured),
  clustering: Schema.optionalKey(Scores),
  seconds: Schema.optionalKey(Measured),
});
export type Evaluation = typeof Evaluation.Type;

/** The E-step's clusterings scored against the training labels, one per K. */
export const EStepScores = Schema.Array(Schema.Struct({ k: Schema.Number, ...Scores.fields }));
export type EStepScores = typeof EStepScores.Type;

/** The fields every epoch record has. */
export const EpochCore = Schema.Struct({
  /** From 0 in files; people read epoch + 1. */
  epoch: Schema.Number,
  lr: Measured,
  /** Steps the epoch's sums cover (all of them, resumes included). */
  steps: Schema.Number,
  infoNce: Measured,
  accInst: Measured,
  protoNce: Schema.Array(Measured),
  accProto: Schema.Array(Measured),
  /** The M-step's seconds (what `imagesPerSecond` is measured over). */
  seconds: Measured,
  imagesPerSecond: Measured,
  /** The whole epoch's wall time: E-step, M-step, evaluation and the mid-epoch checkpoints, summed over resumes. */
  elapsed: Schema.optionalKey(Measured),
});

/** One epoch's record in the checkpoints and `metrics.jsonl`. */
export const EpochMetrics = Schema.Struct({
  ...EpochCore.fields,
  estep: Schema.optionalKey(EStepScores),
  evaluation: Schema.optionalKey(Evaluation),
});
export type EpochMetrics = typeof EpochMetrics.Type;

/** A run's training time: every epoch's whole wall time (E-step, M-step, evaluation), over resumes. */
export const trainingSeconds = (metrics: readonly EpochMetrics[]) =>
  metrics.reduce((a, m) => a + (m.elapsed ?? m.seconds), 0);
