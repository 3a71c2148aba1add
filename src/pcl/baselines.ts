/**
 * What every trained figure is read against: the untrained encoder a run starts from (same seed, same weights) and
 * the raw pixels, both under the run's evaluation protocol.
 */
import { Effect, Schema } from "effect";
import { encoderSpec, type TrainConfig } from "../config.ts";
import { loadDataset, readSource } from "../data/source.ts";
import { evaluate } from "../eval/mod.ts";
import { evaluatePixels } from "../eval/pixels.ts";
import { writeFile } from "../io/atomic.ts";
import { encoder } from "../nn/models.ts";
import { evaluateOptions, evaluationSets } from "./epoch.ts";
import { Evaluation } from "./metrics.ts";

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

const PixelRecord = Schema.Struct({ key: Schema.String, evaluation: Evaluation });

/**
 * The raw-pixel baseline of a config's evaluation (its bank, test set and probe size), undefined without a test set.
 * Kept in `dir/pixels.json` when a directory is given, so that a run or a comparison computes it once.
 */
export const evaluatePixelBaseline = (config: TrainConfig, dir?: string) =>
  Effect.gen(function* () {
    const { test, bank = config.train, probeImages } = config.evaluation;
    if (test === undefined) return undefined;
    const key = JSON.stringify({ bank, test, probeImages });
    const file = dir === undefined ? undefined : `${dir}/pixels.json`;
    if (file !== undefined) {
      const cached = yield* Effect.tryPromise(() => Deno.readTextFile(file)).pipe(
        Effect.flatMap((text) => Schema.decodeUnknownEffect(Schema.fromJsonString(PixelRecord))(text)),
        Effect.option,
      );
      if (cached._tag === "Some" && cached.value.key === key) return cached.value.evaluation;
    }
    yield* Effect.logInfo("evaluating the raw pixels (the baseline every learned figure is read against)");
    const started = performance.now();
    const [b, t] = [yield* readSource(bank), yield* readSource(test)];
    const e = yield* evaluatePixels(b, t, evaluateOptions(config));
    const evaluation = {
      knn: e.knn,
      linear: e.linear,
      clustering: e.clustering,
      seconds: (performance.now() - started) / 1000,
    };
    if (file !== undefined) {
      yield* writeFile(file, JSON.stringify({ key, evaluation }) + "\n").pipe(
        Effect.catch((e) => Effect.logWarning(`the pixel baseline is not kept: ${e.message}`)),
      );
    }
    return evaluation;
  });
