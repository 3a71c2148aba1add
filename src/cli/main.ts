/**
 * The command line: `train` and `stage <name>`. Run through `deno task train` / `deno task stage`.
 * Failures print one line (`error: ...`) and exit non-zero; `--log-level debug` adds the cause's details.
 */
import { Cause, Effect, Exit, Layer, Logger, Option, References } from "effect";
import { Argument, Command, Flag } from "effect/cli";
import { loadConfig, TrainConfig } from "../config.ts";
import { classCounts } from "../data/dataset.ts";
import { readSource } from "../data/source.ts";
import { Gpu } from "../gpu/gpu.ts";
import { writeNpy } from "../io/npy.ts";
import { encoder } from "../nn/models.ts";
import { encoderSpec, evaluateUntrained, evaluationView, train, type TrainResult } from "../../pipelines/pcl.ts";
import { loadDataset } from "../data/source.ts";
import { loadCheckpoint } from "../stages/checkpoint.ts";
import { prepareExtractor } from "../eval/features.ts";
import type { EvaluationReport } from "../eval/mod.ts";
import { DenoCliEnv } from "./env.ts";
import { renderPreview } from "./stage_augment.ts";
import { stageCluster } from "./stage_cluster.ts";

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
    `in ${r.seconds.toFixed(0)} s${r.resumedFrom ? ` (resumed from ${r.resumedFrom})` : ""}`,
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
    lines.push(`  ${speed.toFixed(0)} images/s on average`);
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

const epochsFlag = Flag.Int("epochs").pipe(Flag.withDescription("override the config's epochs"), Flag.optional);

/** The config file, with `--epochs` applied (the constructor validates the override). */
const configWithEpochs = (o: { readonly config: string; readonly epochs: Option.Option<number> }) =>
  Effect.map(
    loadConfig(o.config),
    (loaded) => Option.isSome(o.epochs) ? new TrainConfig({ ...loaded, epochs: o.epochs.value }) : loaded,
  );

const outFlag = (description: string) =>
  Flag.String("out").pipe(Flag.withAlias("o"), Flag.withDescription(description), Flag.optional);

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
      onStep: (p) =>
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
            `  ETA ${
              Math.ceil(
                ((config.epochs - p.epoch - 1) * p.stepsPerEpoch + p.stepsPerEpoch - p.step) * config.batchSize /
                  Math.max(p.imagesPerSecond, 1e-9),
              )
            } s`,
        ),
    }).pipe(Effect.provide(Gpu.layer), Effect.ensuring(Effect.sync(status.done)));
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
      rows.push(
        row(label, r.metrics.at(-1)?.evaluation, `${r.metrics.reduce((s, m) => s + m.seconds, 0).toFixed(0)} s`),
      );
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
  n: Flag.Int("n").pipe(Flag.withDescription("images"), Flag.withDefault(8)),
  views: Flag.Int("views").pipe(Flag.withDescription("views per image"), Flag.withDefault(4)),
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
    yield* Effect.promise(() => Deno.writeFile(o.preview, preview.png));
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

const optionalInt = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.withDescription(description), Flag.optional);

const clusterCommand = Command.make("cluster", {
  features: Flag.String("features").pipe(Flag.withDescription("N x d float32 features: .npy or .safetensors")),
  tensor: Flag.String("tensor").pipe(Flag.withDescription("the tensor's name in a .safetensors file"), Flag.optional),
  k: Flag.String("k").pipe(Flag.withDescription("the K of each clustering, comma-separated (e.g. 10,20,40)")),
  iters: optionalInt("iters", "Lloyd iterations (default 20)"),
  nredo: optionalInt("nredo", "restarts, keeping the lowest objective (default 5)"),
  seed: optionalInt("seed", "the K at position i uses seed + i (default 0)"),
  maxPoints: optionalInt("max-points-per-centroid", "subsample to K times this many points (default 1000)"),
  spherical: Flag.Boolean("spherical").pipe(Flag.withDescription("normalise centroids"), Flag.withDefault(false)),
  temperature: Flag.Finite("temperature").pipe(Flag.withDescription("also write φ, rescaled to mean τ"), Flag.optional),
  out: Flag.String("out").pipe(Flag.withDescription("the prototypes file (.safetensors)")),
}, (o) => {
  // The standalone entry point's own parser does the checking: one set of rules for both ways in.
  const args = ["--features", o.features, "--k", o.k, "--out", o.out];
  const add = (name: string, v: Option.Option<number | string>) => {
    if (Option.isSome(v)) args.push(`--${name}`, String(v.value));
  };
  add("tensor", o.tensor);
  add("iters", o.iters);
  add("nredo", o.nredo);
  add("seed", o.seed);
  add("max-points-per-centroid", o.maxPoints);
  add("temperature", o.temperature);
  if (o.spherical) args.push("--spherical");
  return stageCluster(args).pipe(Effect.provide(Gpu.layer));
}).pipe(Command.withDescription("k-means (and φ with --temperature) of a features file, into a safetensors file"));

const inspectCommand = Command.make(
  "checkpoint",
  { manifest: Argument.String("manifest") },
  (o) =>
    Effect.gen(function* () {
      const c = yield* loadCheckpoint(o.manifest);
      const m = c.manifest;
      console.log(`${o.manifest}: verified (${m.tensors.bytes} bytes, sha256 ${m.tensors.sha256.slice(0, 16)}...)`);
      console.log(
        `epoch ${m.epoch}, step ${m.step}/${m.stepsPerEpoch}, queue pointer ${m.queuePointer}, config ${m.configHash}`,
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
