/**
 * The command line: `train` and `stage <name>`. Run through `deno task train` / `deno task stage`.
 * Failures print one line (`error: ...`) and exit non-zero; `--log-level debug` adds the cause's details.
 */
import { Cause, Effect, Exit, Layer, Logger, Option, References } from "effect";
import { Argument, Command, Flag } from "effect/cli";
import { loadConfig, TrainConfig } from "../config.ts";
import { PCL_KMEANS } from "../pcl/kmeans.ts";
import { classCounts } from "../data/dataset.ts";
import { readSource } from "../data/source.ts";
import { Gpu } from "../gpu/gpu.ts";
import { writeFile } from "../io/atomic.ts";
import { writeNpy } from "../io/npy.ts";
import { encoder } from "../nn/models.ts";
import {
  encoderSpec,
  evaluateUntrained,
  evaluationView,
  type PhaseProgress,
  type StepProgress,
  train,
  trainingSeconds,
  type TrainResult,
} from "../pcl/train.ts";
import { loadDataset } from "../data/source.ts";
import { loadCheckpoint } from "../pcl/checkpoint.ts";
import { prepareExtractor } from "../eval/features.ts";
import type { EvaluationReport } from "../eval/mod.ts";
import { DenoCliEnv } from "./env.ts";
import { renderPreview } from "./stage_augment.ts";
import { runStageCluster } from "./stage_cluster.ts";

const VERSION = "0.1.0";
const DEFAULT_CONFIG = new URL("../../pipelines/mnist.yaml", import.meta.url).pathname;

const configFlag = Flag.String("config").pipe(
  Flag.withAlias("c"),
  Flag.withDescription(`YAML config (default: pipelines/mnist.yaml)`),
  Flag.withDefault(DEFAULT_CONFIG),
);

/** The stop request a signal makes: the current step finishes, a checkpoint is written, training stops. */
const stop: { signal: string | undefined } = { signal: undefined };

/** A status line on a terminal (stderr), cleared around log lines; nothing when not a terminal. */
const status = (() => {
  const tty = Deno.stderr.isTerminal();
  let text = "";
  let drawn = 0;
  const write = (s: string) => Deno.stderr.writeSync(new TextEncoder().encode(s));
  return {
    tty,
    set: (s: string) => {
      text = s;
      const now = performance.now();
      if (tty && now - drawn > 100) {
        drawn = now;
        write(`\r\x1b[2K${text}`);
      }
    },
    around: (f: () => void) => {
      if (tty && text) write("\r\x1b[2K");
      f();
      if (tty && text) write(text);
    },
    done: () => {
      if (tty && text) write("\r\x1b[2K");
      text = "";
    },
  };
})();

const PHASES: Record<PhaseProgress["phase"], string> = {
  encode: "E-step: encoding the training set",
  cluster: "E-step: k-means",
  concentration: "E-step: concentration φ",
  evaluate: "evaluating",
};

/** The status line of a phase without steps: its label and a clock that keeps ticking until the next update. */
const phaseStatus = (() => {
  let timer: ReturnType<typeof setInterval> | undefined;
  const stop = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };
  return {
    start: (epochs: number, p: PhaseProgress) => {
      stop();
      const started = performance.now();
      const draw = () =>
        status.set(
          `epoch ${p.epoch + 1}/${epochs} ${PHASES[p.phase]} (${((performance.now() - started) / 1000).toFixed(0)} s)`,
        );
      draw();
      if (status.tty) timer = setInterval(draw, 1000);
    },
    stop,
  };
})();

/** `12:03:04 INFO message`, on stderr, around the status line. */
const logger = Logger.make(({ message, logLevel, date }) => {
  const text = Array.isArray(message) ? message.join(" ") : String(message);
  const line = `${date.toISOString().slice(11, 19)} ${logLevel.toUpperCase().padEnd(5)} ${text}`;
  status.around(() => console.error(line));
});

const summary = (r: TrainResult, config: TrainConfig) => {
  const last = r.metrics.at(-1);
  const first = r.metrics[0];
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  const lines = [
    "",
    `Trained ${config.name}: ${r.metrics.length} epochs on ${r.dataset.info.n} ${r.dataset.info.name} images ` +
    `in ${r.seconds.toFixed(0)} s${r.resumedFrom ? ` (resumes included; resumed from ${r.resumedFrom})` : ""}`,
  ];
  if (last && first) {
    lines.push(
      `  InfoNCE  ${first.infoNce.toFixed(3)} -> ${last.infoNce.toFixed(3)}   Acc@Inst ${pct(first.accInst)} -> ` +
        pct(last.accInst),
    );
    if (last.protoNce.length > 0) {
      lines.push(
        `  ProtoNCE ${last.protoNce.map((v) => v.toFixed(3)).join(" / ")} (K = ${config.pcl.clusters.join(", ")})   ` +
          `Acc@Proto ${last.accProto.map(pct).join(" / ")}`,
      );
    }
    const speed = r.metrics.reduce((s, m) => s + m.imagesPerSecond, 0) / r.metrics.length;
    lines.push(`  ${speed.toFixed(0)} images/s on average (M-step); training time ${r.seconds.toFixed(0)} s`);
    const e = last.evaluation;
    if (e) {
      lines.push(
        "",
        "  Evaluation (query encoder, test set)",
        `    kNN top-1         ${
          Object.entries(e.knn).map(([k, v]) => `${k.replace("k", "k=")} ${pct(v)}`).join("   ")
        }`,
        `    linear probe      ${pct(e.linear)}`,
        `    k-means (K = classes) on head features: AMI ${e.clustering.ami.toFixed(3)}  NMI ${
          e.clustering.nmi.toFixed(3)
        }  ARI ${e.clustering.ari.toFixed(3)}  ACC ${pct(e.clustering.acc)}`,
      );
    }
    if (last.estep) {
      lines.push(`    E-step vs labels: ${last.estep.map((c) => `K=${c.k} AMI ${c.ami.toFixed(3)}`).join("   ")}`);
    }
  }
  lines.push(`  checkpoint: ${r.checkpoint}`, `  metrics:    ${r.out}/metrics.jsonl`);
  if (r.report) lines.push(`  report:     ${r.report}`);
  return lines.join("\n");
};

const epochsFlag = Flag.Int("epochs").pipe(
  Flag.withDescription("override the config's epochs (a finished run with a step schedule is extended)"),
  Flag.optional,
);

/** The config file with `--epochs` merged in before decoding: an override meets the YAML's rules and paths. */
const configWithEpochs = (o: { readonly config: string; readonly epochs: Option.Option<number> }) =>
  loadConfig(o.config, Option.isSome(o.epochs) ? { epochs: o.epochs.value } : {});

/** An integer flag with a lower bound: anything below it is a usage error naming the flag. */
const intAtLeast = (name: string, min: number, description: string) =>
  Flag.Int(name).pipe(
    Flag.withDescription(description),
    Flag.filter((v) => v >= min, (v) => `--${name} must be an integer >= ${min}, not ${v}`),
  );

const outFlag = (description: string) =>
  Flag.String("out").pipe(Flag.withAlias("o"), Flag.withDescription(description), Flag.optional);

/**
 * Seconds left: this epoch's remaining steps at the current speed, then each later epoch at the mean wall time of the
 * finished ones (E-step and evaluation included), or at the M-step's speed before any epoch has finished.
 */
const eta = (p: StepProgress, config: TrainConfig) => {
  const stepSeconds = config.batchSize / Math.max(p.imagesPerSecond, 1e-9);
  const later = config.epochs - p.epoch - 1;
  return Math.ceil(
    (p.stepsPerEpoch - p.step) * stepSeconds + later * (p.epochSeconds ?? p.stepsPerEpoch * stepSeconds),
  );
};

const trainCommand = Command.make("train", {
  config: configFlag,
  epochs: epochsFlag,
  out: outFlag("run directory (default: runs/<config name>); an existing run there is resumed"),
  fresh: Flag.Boolean("fresh").pipe(
    Flag.withDescription("start over even if the run directory holds a run (it is archived, not deleted)"),
    Flag.withDefault(false),
  ),
  fromCheckpoint: Flag.String("from-checkpoint").pipe(
    Flag.withDescription("resume from this checkpoint manifest (.json) instead of the newest"),
    Flag.optional,
  ),
}, (o) =>
  Effect.gen(function* () {
    const config = yield* configWithEpochs(o);
    const out = Option.getOrElse(o.out, () => `runs/${config.name}`);
    yield* Effect.logInfo(`config ${o.config} -> run directory ${out}`);
    const result = yield* train(config, {
      out,
      fresh: o.fresh,
      ...(Option.isSome(o.fromCheckpoint) ? { fromCheckpoint: o.fromCheckpoint.value } : {}),
      stop,
      onPhase: (p) => phaseStatus.start(config.epochs, p),
      onStep: (p) => {
        phaseStatus.stop();
        status.set(
          `epoch ${p.epoch + 1}/${config.epochs} step ${p.step}/${p.stepsPerEpoch}  ${
            p.imagesPerSecond.toFixed(0)
          } img/s` +
            (p.last
              ? `  loss ${p.last.infoNce.toFixed(3)}  Acc@Inst ${(100 * p.last.accInst).toFixed(1)}%` +
                (p.last.accProto.length
                  ? `  Acc@Proto ${p.last.accProto.map((v) => (100 * v).toFixed(0)).join("/")}%`
                  : "")
              : "") +
            `  ETA ${eta(p, config)} s`,
        );
      },
    }).pipe(Effect.provide(Gpu.layer), Effect.ensuring(Effect.sync(() => (phaseStatus.stop(), status.done()))));
    console.log(summary(result, config));
  })).pipe(Command.withDescription("Train PCL as configured; resumes the run in --out when there is one"));

const compareCommand = Command.make("compare", {
  config: configFlag,
  epochs: epochsFlag,
  out: outFlag("directory for the runs (default: runs/compare-<config name>); existing runs are resumed"),
  maskBoth: Flag.Boolean("mask-both").pipe(
    Flag.withDescription("also train PCL with duplicate-positive masking switched the other way"),
    Flag.withDefault(false),
  ),
}, (o) =>
  Effect.gen(function* () {
    const base = yield* configWithEpochs(o);
    const out = Option.getOrElse(o.out, () => `runs/compare-${base.name}`);
    const variants: Array<[string, TrainConfig]> = [
      [`PCL (mask ${base.pcl.maskDuplicatePositives ? "on" : "off"})`, base],
      ["InfoNCE only", new TrainConfig({ ...base, pcl: { ...base.pcl, enabled: false } })],
    ];
    if (o.maskBoth) {
      const flipped = !base.pcl.maskDuplicatePositives;
      variants.splice(1, 0, [
        `PCL (mask ${flipped ? "on" : "off"})`,
        new TrainConfig({ ...base, pcl: { ...base.pcl, maskDuplicatePositives: flipped } }),
      ]);
    }
    const pct = (v: number | undefined) => (v === undefined ? "-" : `${(100 * v).toFixed(1)}%`);
    const row = (
      label: string,
      e: Pick<EvaluationReport, "knn" | "linear" | "clustering"> | undefined,
      time: string,
    ) => [
      label,
      pct(e?.knn["k20"]),
      pct(e?.knn["k200"]),
      pct(e?.linear),
      e ? e.clustering.ami.toFixed(3) : "-",
      e ? e.clustering.nmi.toFixed(3) : "-",
      time,
    ];
    const rows: string[][] = [];
    for (const [i, [label, config]] of variants.entries()) {
      yield* Effect.logInfo(`compare: training ${label} in ${out}/${i}`);
      const r = yield* train(config, { out: `${out}/${i}`, stop }).pipe(Effect.provide(Gpu.layer));
      rows.push(row(label, r.metrics.at(-1)?.evaluation, `${trainingSeconds(r.metrics).toFixed(0)} s`));
    }
    yield* Effect.logInfo("compare: evaluating the untrained encoder (same seed) as the random baseline");
    rows.push(row("random encoder (untrained)", yield* evaluateUntrained(base).pipe(Effect.provide(Gpu.layer)), "-"));
    const header = ["run", "kNN k=20", "kNN k=200", "linear", "AMI", "NMI", "train time"];
    const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
    const line = (r: string[]) => r.map((v, c) => v.padEnd(widths[c])).join("  ").trimEnd();
    console.log(
      ["", `${base.name}, seed ${base.seed}, ${base.epochs} epochs each:`, line(header), ...rows.map(line)].join("\n"),
    );
  })).pipe(Command.withDescription("Train PCL and the InfoNCE-only baseline with the same seed and budget; compare"));

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
  n: intAtLeast("n", 1, "images").pipe(Flag.withDefault(8)),
  views: intAtLeast("views", 1, "views per image").pipe(Flag.withDefault(4)),
}, (o) =>
  Effect.gen(function* () {
    const config = yield* loadConfig(o.config);
    const preview = yield* renderPreview({
      source: config.train,
      preset: config.augment.preset,
      ...(config.augment.side === undefined ? {} : { side: config.augment.side }),
      n: o.n,
      views: o.views,
      seed: config.seed,
      epoch: 0,
      step: 0,
      zoom: 4,
    }).pipe(Effect.provide(Gpu.layer));
    yield* writeFile(o.preview, preview.png);
    console.log(`wrote ${o.preview} (${preview.width}x${preview.height})`);
  })).pipe(Command.withDescription("Write a preview grid of the config's augmentation as a PNG"));

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
    const gpu = yield* Gpu;
    const state = new Map(
      [...key.params.parameters, ...key.params.bufferNames].map((e) => {
        const t = ckpt.tensors.get(`encoder_k.${e.name}`);
        return [e.name, t?.data as Float32Array<ArrayBuffer>] as const;
      }),
    );
    key.params.loadStateDict(gpu, state);
    const extractor = yield* prepareExtractor(key, evaluationView(config));
    const f = yield* extractor.extract(dataset);
    yield* writeNpy(o.out, f.head);
    console.log(`wrote ${o.out}: ${f.head.shape.join(" x ")} features of the momentum encoder`);
  }).pipe(Effect.provide(Gpu.layer))).pipe(
    Command.withDescription("Encode the training set with a checkpoint's momentum encoder into a .npy file"),
  );

/** `--k 10,20,40`: distinct integers >= 2. */
const parseKs = (text: string) => {
  const ks = text.split(",").map((s) => Number(s.trim()));
  return ks.every((k) => Number.isSafeInteger(k) && k >= 2) && new Set(ks).size === ks.length
    ? Option.some(ks)
    : Option.none();
};

const clusterCommand = Command.make("cluster", {
  features: Flag.String("features").pipe(Flag.withDescription("N x d float32 features: .npy or .safetensors")),
  tensor: Flag.String("tensor").pipe(Flag.withDescription("the tensor's name in a .safetensors file"), Flag.optional),
  k: Flag.String("k").pipe(
    Flag.withDescription("the K of each clustering, comma-separated (e.g. 10,20,40)"),
    Flag.filterMap(parseKs, (text) => `--k must list distinct integers >= 2, not '${text}'`),
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

const stageCommand = Command.make("stage").pipe(
  Command.withDescription("Run one stage on its own"),
  Command.withSubcommands([loadCommand, augmentCommand, encodeCommand, clusterCommand, inspectCommand]),
);

export const cli = Command.make("pcl").pipe(
  Command.withDescription("Prototypical Contrastive Learning on WebGPU"),
  Command.withSubcommands([trainCommand, compareCommand, stageCommand]),
);

/** Runs the CLI on `args`; resolves to the process exit code. */
export const main = async (args: ReadonlyArray<string>): Promise<number> => {
  const debug = args.includes("debug") && args.some((a) => a.startsWith("--log-level"));
  const program = Command.runWith(cli, { version: VERSION })(args).pipe(
    Effect.provide(Layer.mergeAll(DenoCliEnv(args), Logger.layer([logger]))),
    Effect.provideService(References.MinimumLogLevel, debug ? "Debug" : "Info"),
  );
  const exit = await Effect.runPromiseExit(program);
  if (Exit.isSuccess(exit)) return 0;
  const error = Cause.squash(exit.cause) as { _tag?: string; message?: string; signal?: string };
  if (error?._tag === "Interrupted") {
    console.error(error.message);
    return error.signal === "SIGTERM" ? 143 : 130;
  }
  if (error?._tag?.startsWith("Cli") || error?._tag === "ShowHelp") return 2; // effect/cli printed it already
  console.error(`error: ${error?.message ?? String(error)}`);
  if (debug) console.error(Cause.pretty(exit.cause));
  return 1;
};

if (import.meta.main) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      if (stop.signal !== undefined) Deno.exit(signal === "SIGTERM" ? 143 : 130); // a second signal: stop now
      stop.signal = signal;
      status.around(() => console.error(`${signal}: finishing the current step, then writing a checkpoint`));
    });
  }
  Deno.exit(await main(Deno.args));
}
