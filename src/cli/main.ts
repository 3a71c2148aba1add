/**
 * The command line: `train` and `stage <name>`. Run through `deno task train` / `deno task stage`.
 * Failures print one line (`error: ...`) and exit non-zero; `--log-level debug` adds the cause's details.
 */
import { Cause, Effect, Exit, Layer, Logger, Option, References } from "effect";
import { Command, Flag } from "effect/cli";
import type { TrainConfig } from "../config.ts";
import { Gpu } from "../gpu/gpu.ts";
import type { PhaseProgress, StepProgress } from "../pcl/epoch.ts";
import type { Evaluation } from "../pcl/metrics.ts";
import { train, type TrainResult } from "../pcl/train.ts";
import { evaluatePixelBaseline } from "../pcl/baselines.ts";
import { lockRunDirectory } from "../io/lock.ts";
import { textTable } from "../report/render.ts";
import { DenoCliEnv } from "./env.ts";
import { configFlag, configWithEpochs, epochsFlag, outFlag, stopRequest } from "./flags.ts";
import { stageCommand } from "./stage.ts";
import { compareCommand } from "./compare.ts";

const VERSION = "0.1.0";
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

const summary = (r: TrainResult, config: TrainConfig, pixels: Evaluation | undefined) => {
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
    lines.push(`  ${speed.toFixed(0)} images/s on average (M-step)`);
    const e = last.evaluation;
    if (e) {
      // The learned features beside the raw pixels under the same protocol: the gain a run is for.
      const rows: Array<[string, Evaluation | undefined]> = [["learned features", e], ["raw pixels", pixels]];
      const knn = Object.keys(e.knn ?? {});
      const head = ["", ...knn.map((k) => `kNN ${k.replace("k", "k=")}`), "linear", "AMI", "NMI", "ARI", "ACC"];
      // Each row's figures in column order: percentages (kNN, linear, ACC) and scores (AMI, NMI, ARI).
      const figures = (v: Evaluation) => ({
        rates: [...knn.map((k) => v.knn?.[k] ?? NaN), v.linear ?? NaN],
        scores: (["ami", "nmi", "ari"] as const).map((m) => v.clustering?.[m] ?? NaN),
        acc: v.clustering?.acc ?? NaN,
      });
      const table = rows.filter(([, v]) => v !== undefined).map(([label, v]) => {
        const f = figures(v!);
        return [label, ...f.rates.map(pct), ...f.scores.map((x) => x.toFixed(3)), pct(f.acc)];
      });
      if (pixels !== undefined) {
        // The gain itself: percentage points for the rates, differences of the scores.
        const [a, b] = [figures(e), figures(pixels)];
        const signed = (d: number, digits: number) => `${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(digits)}`;
        table.push([
          "learned − pixels",
          ...a.rates.map((x, i) => signed(100 * (x - b.rates[i]!), 1)),
          ...a.scores.map((x, i) => signed(x - b.scores[i]!, 3)),
          signed(100 * (a.acc - b.acc), 1),
        ]);
      }
      lines.push(
        "",
        "  Evaluation (query encoder, test set; k-means with K = classes on head features)",
        ...textTable(head, table, "    "),
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
      stop: stopRequest,
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
    // Under the run directory's lock: it writes pixels.json there. The run is finished and saved by now, so a
    // failure here costs the summary its pixel row, not the command its exit status.
    const pixels = yield* Effect.scoped(
      Effect.andThen(lockRunDirectory(out), evaluatePixelBaseline(config, out)),
    ).pipe(
      Effect.provide(Gpu.layer),
      Effect.catch((e) => Effect.as(Effect.logWarning(`the raw-pixel baseline was skipped: ${e.message}`), undefined)),
    );
    console.log(summary(result, config, pixels));
  })).pipe(Command.withDescription("Train PCL as configured; resumes the run in --out when there is one"));

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
      if (stopRequest.signal !== undefined) Deno.exit(signal === "SIGTERM" ? 143 : 130); // a second signal: stop now
      stopRequest.signal = signal;
      status.around(() => console.error(`${signal}: finishing the current step, then writing a checkpoint`));
    });
  }
  Deno.exit(await main(Deno.args));
}
