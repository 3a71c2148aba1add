/**
 * `pcl compare`: PCL against the InfoNCE-only baseline (MoCo) over seeds, with the same config and budget, beside the
 * untrained encoder and the raw pixels. Each (method, seed) trains in `OUT/seed-S/<method>/`, so a finished one is not
 * trained again and an interrupted one resumes; the InfoNCE run starts from the PCL run's end of warm-up (the same
 * weights as training those epochs again: `TrainOptions.warmStart`), so it trains only the epochs after it. The table
 * (printed, and as `OUT/comparison.html`) and `OUT/comparison.json` give each method's mean ± sd over the seeds and the
 * paired PCL − InfoNCE difference ± its standard error.
 */
import { Effect, Option } from "effect";
import { Command, Flag } from "effect/cli";
import { TrainConfig } from "../config.ts";
import { Gpu } from "../gpu/gpu.ts";
import { writeFile } from "../io/atomic.ts";
import { tablePage, textTable } from "../report/render.ts";
import { evaluatePixelBaseline, evaluateUntrained } from "../pcl/baselines.ts";
import { compareMethods, type Difference, METRICS, type SeedRun, type Spread, summarise } from "../pcl/comparison.ts";
import type { Evaluation } from "../pcl/metrics.ts";
import { train } from "../pcl/train.ts";
import { configFlag, configWithEpochs, epochsFlag, intList, outFlag, stopRequest } from "./flags.ts";

/** How a metric is printed: a percentage, a 0-1 score, or seconds. */
type Unit = boolean | "s";
/** Percentages with one decimal, or two for a paired difference, whose standard error is often under 0.1 points. */
const fmt = (v: number, unit: Unit, digits = 1) =>
  unit === "s" ? v.toFixed(0) : unit ? (100 * v).toFixed(digits) : v.toFixed(3);

/** A spread as "91.2 ± 0.6%" (or the single value when there is one seed). */
const cell = (s: Spread | undefined, pct: Unit) =>
  s === undefined || s.n === 0 || !Number.isFinite(s.mean)
    ? "-"
    : `${fmt(s.mean, pct)}${s.n > 1 ? ` ± ${fmt(s.sd, pct)}` : ""}${pct === true ? "%" : pct === "s" ? " s" : ""}`;

const diffCell = (d: Difference, pct: Unit) =>
  d.n === 0
    ? "-"
    : `${d.mean >= 0 ? "+" : "−"}${fmt(Math.abs(d.mean), pct, 2)}${d.n > 1 ? ` ± ${fmt(d.se, pct, 2)}` : ""}${
      pct === "s" ? " s" : ""
    }`;

const single = (e: Evaluation | undefined) =>
  Object.fromEntries(METRICS.map(([name, get]) => {
    const v = e && get(e);
    return [name, v === undefined ? { n: 0, mean: NaN, sd: 0 } : { n: 1, mean: v, sd: 0 }];
  }));

export const compareCommand = Command.make("compare", {
  config: configFlag,
  epochs: epochsFlag,
  seeds: Flag.String("seeds").pipe(
    Flag.withDescription("the seeds to train each method with, comma-separated (default: the config's seed)"),
    Flag.filterMap(intList(0), (t) => `--seeds must list distinct non-negative integers, not '${t}'`),
    Flag.optional,
  ),
  out: outFlag("directory for the runs (default: runs/compare-<config name>); finished runs are not trained again"),
  maskBoth: Flag.Boolean("mask-both").pipe(
    Flag.withDescription("also train PCL with duplicate-positive masking switched the other way"),
    Flag.withDefault(false),
  ),
}, (o) =>
  Effect.gen(function* () {
    const base = yield* configWithEpochs(o);
    const out = Option.getOrElse(o.out, () => `runs/compare-${base.name}`);
    const seeds = Option.getOrElse(o.seeds, () => [base.seed]);
    const pcl = `PCL (mask ${base.pcl.maskDuplicatePositives ? "on" : "off"})`;
    const variants: Array<[string, string, TrainConfig]> = [
      [pcl, "pcl", base],
      ["InfoNCE only", "infonce", new TrainConfig({ ...base, pcl: { ...base.pcl, enabled: false } })],
    ];
    if (o.maskBoth) {
      const flipped = !base.pcl.maskDuplicatePositives;
      variants.splice(1, 0, [
        `PCL (mask ${flipped ? "on" : "off"})`,
        "pcl-mask-flipped",
        new TrainConfig({ ...base, pcl: { ...base.pcl, maskDuplicatePositives: flipped } }),
      ]);
    }
    const runs: SeedRun[] = [];
    for (const seed of seeds) {
      for (const [method, dir, config] of variants) {
        const at = `${out}/seed-${seed}/${dir}`;
        yield* Effect.logInfo(`compare: ${method}, seed ${seed}, in ${at}`);
        // The other methods differ from PCL only in pcl.*: they start from its end of warm-up, the same weights.
        const first = `${out}/seed-${seed}/${variants[0]![1]}`;
        const r = yield* train(new TrainConfig({ ...config, seed }), {
          out: at,
          stop: stopRequest,
          ...(at === first ? {} : { warmStart: first }),
        }).pipe(Effect.provide(Gpu.layer));
        runs.push({ method, seed, evaluation: r.metrics.at(-1)?.evaluation, seconds: r.seconds });
      }
    }
    yield* Effect.logInfo(`compare: the untrained encoder (seed ${base.seed}) and the raw pixels`);
    const untrained = yield* evaluateUntrained(base).pipe(Effect.provide(Gpu.layer));
    const pixels = yield* evaluatePixelBaseline(base, out).pipe(Effect.provide(Gpu.layer));

    const methods = variants.map(([m]) => m);
    const summaries = summarise(runs, methods);
    const difference = compareMethods(runs, pcl, "InfoNCE only");
    const header = ["run", ...METRICS.map(([name]) => name), "train time"];
    const rows = summaries.map((s) => [
      s.method,
      ...METRICS.map(([name, , pct]) => cell(s.metrics[name], pct)),
      cell(s.metrics["seconds"], "s"),
    ]);
    for (const [label, e] of [["random encoder (untrained)", untrained], ["raw pixels", pixels]] as const) {
      const s = single(e);
      rows.push([label, ...METRICS.map(([name, , pct]) => cell(s[name], pct)), "-"]);
    }
    rows.push([
      `${pcl.split(" (")[0]} − InfoNCE, paired`,
      ...METRICS.map(([name, , pct]) => diffCell(difference[name]!, pct)),
      diffCell(difference["seconds"]!, "s"),
    ]);
    const what = seeds.length === 1
      ? `seed ${seeds[0]}`
      : `seeds ${seeds.join(", ")} (mean ± sd; the paired difference ± its standard error)`;
    console.log(["", `${base.name}, ${base.epochs} epochs each, ${what}:`, ...textTable(header, rows)].join("\n"));
    const file = `${out}/comparison.json`;
    yield* writeFile(
      file,
      JSON.stringify({
        config: base.name,
        epochs: base.epochs,
        seeds,
        runs,
        summaries,
        difference,
        untrained,
        pixels,
      }) +
        "\n",
    );
    const page = `${out}/comparison.html`;
    const notes = [
      `${base.name}, ${base.epochs} epochs each, ${what}.`,
      "Each method's figures are its mean ± sample sd over the seeds; the last row is PCL − InfoNCE paired by seed, " +
      "± its standard error. The untrained encoder is the config's seed's; the raw pixels are the images themselves " +
      "under the same protocol. The InfoNCE runs start from the PCL runs' end of warm-up (the same weights as " +
      "training those epochs again); their train time counts those epochs as the PCL runs spent them.",
    ];
    yield* writeFile(page, tablePage(`PCL vs InfoNCE-only: ${base.name}`, notes, header, rows));
    console.log(`\nsaved ${file} and ${page}`);
  })).pipe(
    Command.withDescription(
      "Train PCL and the InfoNCE-only baseline with the same config and budget over seeds; compare them, the untrained " +
        "encoder and the raw pixels",
    ),
  );
