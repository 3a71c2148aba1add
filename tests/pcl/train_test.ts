import assert from "node:assert/strict";
import { Effect } from "effect";
import { configJson, decodeConfig, evaluationView, loadConfig, type TrainConfig } from "../../src/config.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { readSafetensors, type SafeTensor } from "../../src/io/safetensors.ts";
import { ConfigMismatch, train } from "../../src/pcl/train.ts";
import { evaluatePixelBaseline, evaluateUntrained } from "../../src/pcl/baselines.ts";
import type { TrainOptions } from "../../src/pcl/epoch.ts";
import { METRICS_RING } from "../../src/pcl/mstep.ts";
import { CheckpointError, listManifests } from "../../src/pcl/checkpoint.ts";
import { main } from "../../src/cli/main.ts";
import { StageHooks } from "../../src/graph/mod.ts";
import { effectTest, tempDir } from "../helpers.ts";
import { cli, snapshot } from "../cli/run.ts";
import type { SeedRun } from "../../src/pcl/comparison.ts";
import { tinyConfig } from "./tiny.ts";
import YAML from "yaml";
import { References } from "effect";

const decode = (raw: unknown) => Effect.runPromise(decodeConfig(raw));

const run = (config: TrainConfig, opts: TrainOptions) =>
  train(config, opts).pipe(Effect.provide(Gpu.layer), Effect.provideService(References.MinimumLogLevel, "Warn"));

/** The newest checkpoint's tensors, by name. */
const finalTensors = (dir: string) =>
  Effect.gen(function* () {
    const [newest] = yield* Effect.promise(() => listManifests(`${dir}/checkpoints`));
    const st = yield* readSafetensors(newest.replace(/\.json$/, ".safetensors"));
    return { name: newest.split("/").at(-1), tensors: st.tensors };
  });

/** Byte-for-byte equality of two checkpoints' tensors, naming the first difference. */
const sameTensors = (a: ReadonlyMap<string, SafeTensor>, b: ReadonlyMap<string, SafeTensor>, what: string) => {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: tensor names`);
  for (const [name, t] of a) {
    const x = new Uint8Array(t.data.buffer), y = new Uint8Array(b.get(name)!.data.buffer);
    const i = x.findIndex((v, i) => v !== y[i]);
    if (i >= 0 || x.length !== y.length) assert.fail(`${what}: ${name} differs from the uninterrupted run (byte ${i})`);
  }
};

Deno.test("config: every shipped pipelines/*.yaml decodes", async () => {
  const dir = new URL("../../pipelines/", import.meta.url);
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".yaml")).sort();
  assert.ok(files.includes("mnist.yaml") && files.includes("mnist-reference.yaml"), `${files}`);
  for (const f of files) {
    const config = await Effect.runPromise(loadConfig(new URL(f, dir).pathname));
    assert.ok(config.epochs > 0, f);
  }
});

Deno.test("config: the encoding batch is evaluation.batchSize, else the training batch", async () => {
  assert.equal(evaluationView(await decode(tinyConfig)).batch, tinyConfig.batchSize);
  const larger = await decode({ ...tinyConfig, evaluation: { batchSize: 256 } });
  assert.equal(evaluationView(larger).batch, 256);
  // An optional key: a config without it keeps the identity (and the checkpoints) it had before the key existed.
  assert.ok(!("batchSize" in (configJson(await decode(tinyConfig)).evaluation as object)));
});

effectTest(
  "train: resuming after a crash at any stage boundary gives bit-identical weights",
  Effect.gen(function* () {
    const config = yield* Effect.promise(() => decode(tinyConfig));
    const straight = yield* tempDir("pcl-straight-");
    const phases: string[] = [];
    const result = yield* run(config, { out: straight, onPhase: (p) => phases.push(`${p.epoch}/${p.phase}`) });
    assert.equal(result.metrics.length, 2);
    // The progress line hears of each E-step stage (warm-up has none; the tiny run has no evaluation).
    assert.deepEqual(phases, ["1/encode", "1/cluster", "1/concentration"]);
    const reference = yield* finalTensors(straight);
    assert.equal(reference.name, "ckpt-0001-000008.json");
    for (
      const point of [
        "epoch-0/step-4", // mid-epoch: resumes from the step-3 checkpoint
        "epoch-0/checkpoint", // after the epoch's checkpoint, before the runner records it
        "epoch-1/encode",
        "epoch-1/cluster",
        "epoch-1/concentration",
        "epoch-1/step-7",
        "epoch-1/checkpoint",
      ]
    ) {
      const out = yield* tempDir("pcl-crash-");
      const crash = (p: string) =>
        Effect.sync(() => {
          if (p === point) throw new Error(`injected crash at ${p}`);
        });
      const crashed = yield* Effect.exit(run(config, { out }).pipe(Effect.provideService(StageHooks, { at: crash })));
      assert.equal(crashed._tag, "Failure", `a crash at ${point} fails the run`);
      yield* run(config, { out });
      const resumed = yield* finalTensors(out);
      assert.equal(resumed.name, reference.name);
      sameTensors(reference.tensors, resumed.tensors, `crash at ${point}`);
    }
  }),
);

effectTest(
  "train: a signal after an epoch's last step: the resumed run records that epoch whole and ends with the same bits",
  Effect.gen(function* () {
    const config = yield* Effect.promise(() => decode(tinyConfig));
    const straight = yield* tempDir("pcl-straight-");
    yield* run(config, { out: straight });
    const out = yield* tempDir("pcl-last-step-");
    const stop: { signal: string | undefined } = { signal: undefined };
    const onStep: TrainOptions["onStep"] = (p) => {
      if (p.epoch === 0 && p.step === p.stepsPerEpoch) stop.signal = "SIGINT";
    };
    const stopped = yield* Effect.flip(run(config, { out, stop, onStep }));
    assert.equal(stopped._tag, "Interrupted", `${stopped}`);
    assert.match(stopped.message, /stopped by SIGINT at epoch 1, step 8\/8/);
    yield* run(config, { out });
    sameTensors((yield* finalTensors(straight)).tensors, (yield* finalTensors(out)).tensors, "after the stop at 8/8");
    const lines = (d: string) =>
      Deno.readTextFileSync(`${d}/metrics.jsonl`).trim().split("\n").map((l) => {
        const { seconds: _s, imagesPerSecond: _i, elapsed: _e, ...rest } = JSON.parse(l);
        return rest;
      });
    assert.deepEqual(lines(out), lines(straight));
  }),
);

effectTest(
  "train: an epoch longer than the metrics ring has the same metrics and weights whether they are read in batches or every step",
  Effect.gen(function* () {
    const steps = METRICS_RING + 4;
    const base = { ...tinyConfig, train: { ...tinyConfig.train, n: 16 * steps }, epochs: 1, warmupEpochs: 0 };
    const [dirs, lines] = [[] as string[], [] as unknown[]];
    for (const everySteps of [0, 1]) { // no mid-epoch checkpoint: batches of the ring; one per step: batches of 1
      const config = yield* Effect.promise(() => decode({ ...base, checkpoint: { everySteps, keep: 2 } }));
      const out = yield* tempDir("pcl-ring-");
      const r = yield* run(config, { out });
      assert.equal(r.metrics[0]!.steps, steps);
      const { seconds: _s, imagesPerSecond: _i, elapsed: _e, ...rest } = r.metrics[0]!;
      [dirs.push(out), lines.push(rest)];
    }
    assert.deepEqual(lines[0], lines[1]);
    sameTensors((yield* finalTensors(dirs[0]!)).tensors, (yield* finalTensors(dirs[1]!)).tensors, "batched reads");
  }),
);

effectTest(
  "train: an InfoNCE run started from a PCL run's end of warm-up equals one trained from scratch, bit for bit",
  Effect.gen(function* () {
    const checkpoint = { everySteps: 3, keep: 2 };
    const pcl = yield* Effect.promise(() => decode({ ...tinyConfig, checkpoint }));
    const infoNce = yield* Effect.promise(() =>
      decode({ ...tinyConfig, checkpoint, pcl: { ...tinyConfig.pcl, enabled: false } })
    );
    const [pclDir, scratch, shared] = [yield* tempDir("pcl-w-"), yield* tempDir("pcl-ws-"), yield* tempDir("pcl-wx-")];
    yield* run(pcl, { out: pclDir });
    // The newest `keep`, and the end of the warm-up (epoch 1 of 2, all 8 steps), kept past them.
    const names = (yield* Effect.promise(() => listManifests(`${pclDir}/checkpoints`))).map((p) => p.split("/").at(-1));
    assert.deepEqual(names, ["ckpt-0001-000008.json", "ckpt-0001-000006.json", "ckpt-0000-000008.json"]);
    const a = yield* run(infoNce, { out: scratch });
    const b = yield* run(infoNce, { out: shared, warmStart: pclDir });
    sameTensors((yield* finalTensors(scratch)).tensors, (yield* finalTensors(shared)).tensors, "warm-started");
    assert.deepEqual(b.metrics.map((m) => m.infoNce), a.metrics.map((m) => m.infoNce));
    // Its first epoch is the PCL run's, record and all (its time too); only the second was trained.
    const pclRecord = JSON.parse(Deno.readTextFileSync(`${pclDir}/metrics.jsonl`).split("\n")[0]!);
    assert.deepEqual(JSON.parse(JSON.stringify(b.metrics[0])), pclRecord);
    assert.notEqual(a.metrics[0]!.seconds, pclRecord.seconds);
    // A config that differs outside pcl.* cannot share it: refused, naming the keys, before anything is written.
    const other = yield* Effect.promise(() => decode({ ...tinyConfig, checkpoint, optimizer: { lr: 0.04 } }));
    const refused = yield* tempDir("pcl-wr-");
    const exit = yield* Effect.exit(run(other, { out: refused, warmStart: pclDir }));
    const e = exit._tag === "Failure" ? exit.cause.reasons.map((r) => ("error" in r ? r.error : r))[0] : undefined;
    assert.ok(e instanceof ConfigMismatch, String(e));
    assert.deepEqual(e.keys, ["optimizer.lr"]);
    assert.deepEqual(yield* Effect.promise(() => listManifests(`${refused}/checkpoints`)), []);
  }),
);

effectTest(
  "train: a corrupt newest checkpoint is an error naming it, and nothing on disk changes",
  Effect.gen(function* () {
    const config = yield* Effect.promise(() => decode({ ...tinyConfig, epochs: 1, warmupEpochs: 0 }));
    const out = yield* tempDir("pcl-corrupt-");
    yield* run(config, { out });
    const manifests = yield* Effect.promise(() => listManifests(`${out}/checkpoints`));
    const tensors = manifests[0].replace(/\.json$/, ".safetensors");
    const bytes = yield* Effect.promise(() => Deno.readFile(tensors));
    yield* Effect.promise(() => Deno.writeFile(tensors, bytes.subarray(0, bytes.length - 100)));
    const before = yield* Effect.promise(() => snapshot(out));
    const exit = yield* Effect.exit(run(config, { out }));
    assert.equal(exit._tag, "Failure");
    const e = exit._tag === "Failure" ? exit.cause.reasons.map((r) => ("error" in r ? r.error : r))[0] : undefined;
    assert.ok(e instanceof CheckpointError, String(e));
    assert.match(e.message, /ckpt-0000-000008\.json.*corrupt or truncated/s);
    assert.match(e.message, /--from-checkpoint .*ckpt-0000-000006\.json/);
    assert.deepEqual(yield* Effect.promise(() => snapshot(out)), before);
    // Asked for explicitly, the previous checkpoint is used.
    yield* run(config, { out, fromCheckpoint: manifests[1] });
  }),
);

effectTest(
  "train: a config that differs from the checkpoint's is refused, listing the keys; --fresh archives the old run",
  Effect.gen(function* () {
    const config = yield* Effect.promise(() => decode({ ...tinyConfig, epochs: 1, warmupEpochs: 0 }));
    const out = yield* tempDir("pcl-mismatch-");
    yield* run(config, { out });
    const before = yield* Effect.promise(() => snapshot(out));
    const changed = yield* Effect.promise(() =>
      decode({ ...tinyConfig, epochs: 1, warmupEpochs: 0, seed: 5, moco: { queueSize: 48, bnGroups: 2 } })
    );
    const exit = yield* Effect.exit(run(changed, { out }));
    const e = exit._tag === "Failure" ? exit.cause.reasons.map((r) => ("error" in r ? r.error : r))[0] : undefined;
    assert.ok(e instanceof ConfigMismatch, String(e));
    assert.deepEqual(e.keys, ["moco.queueSize", "seed"]);
    assert.deepEqual(yield* Effect.promise(() => snapshot(out)), before);
    yield* run(changed, { out, fresh: true });
    const entries = [...Deno.readDirSync(out)].map((e) => e.name);
    assert.ok(entries.some((n) => n.startsWith("archive-")), `archived: ${entries}`);
    assert.deepEqual(configJson(changed).seed, 5);
  }),
);

effectTest(
  "cli: train through the command line, then bad YAML, a bad config and a missing dataset fail with one line",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-cli-");
    const config = `${dir}/tiny.yaml`;
    yield* Effect.promise(() => Deno.writeTextFile(config, YAML.stringify({ ...tinyConfig, epochs: 2 })));
    const errors: string[] = [];
    const logs: string[] = [];
    const { error, log } = console;
    console.error = (...a: unknown[]) => errors.push(a.join(" "));
    console.log = (...a: unknown[]) => logs.push(a.join(" "));
    try {
      assert.equal(yield* Effect.promise(() => main(["train", "--config", config, "--out", `${dir}/run`])), 0);
      const metrics = (yield* Effect.promise(() => Deno.readTextFile(`${dir}/run/metrics.jsonl`))).trim().split("\n");
      assert.equal(metrics.length, 2);
      assert.deepEqual(JSON.parse(metrics[1]).protoNce.length, 2);
      assert.match(logs.join("\n"), /Trained tiny: 2 epochs on 128 .* images/);
      assert.match(logs.join("\n"), /checkpoint: .*ckpt-0001-000008\.json/);

      const bad = `${dir}/bad.yaml`;
      yield* Effect.promise(() => Deno.writeTextFile(bad, "epochs: [1,\n"));
      errors.length = 0;
      assert.equal(yield* Effect.promise(() => main(["train", "--config", bad, "--out", `${dir}/x`])), 1);
      assert.match(errors.at(-1)!, /^error: .*bad\.yaml: YAML syntax/);

      yield* Effect.promise(() => Deno.writeTextFile(bad, "epochs: -1\nbatchSize: 1.5\nlr: 3\n"));
      assert.equal(yield* Effect.promise(() => main(["train", "--config", bad, "--out", `${dir}/x`])), 1);
      assert.match(errors.at(-1)!, /invalid config[\s\S]*excess property[\s\S]*"lr"[\s\S]*"epochs"[\s\S]*"batchSize"/);

      yield* Effect.promise(() =>
        Deno.writeTextFile(
          bad,
          YAML.stringify({ ...tinyConfig, train: { kind: "cifar10", dir: `${dir}/none`, split: "train" } }),
        )
      );
      assert.equal(yield* Effect.promise(() => main(["train", "--config", bad, "--out", `${dir}/x`])), 1);
      assert.match(errors.at(-1)!, /^error: .*none/);
    } finally {
      console.error = error;
      console.log = log;
    }
  }),
);

effectTest(
  "cli: compare over two seeds: mean ± sd per method, the paired difference ± SE, the untrained encoder and raw pixels; resumable",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-compare-");
    const config = `${dir}/tiny.yaml`;
    const evaluation = { test: { kind: "synthetic", n: 64, side: 12, seed: 9 }, probeImages: 128 };
    yield* Effect.promise(() => Deno.writeTextFile(config, YAML.stringify({ ...tinyConfig, evaluation })));
    const compare = () => cli("compare", "--config", config, "--seeds", "4,5", "--out", `${dir}/cmp`);
    const first = yield* Effect.promise(compare);
    assert.equal(first.code, 0, first.out);
    const table = first.out;
    assert.match(table, /tiny, 2 epochs each, seeds 4, 5 \(mean ± sd; the paired difference ± its standard error\)/);
    assert.match(table, /run\s+kNN k=20\s+kNN k=200\s+linear\s+AMI\s+NMI\s+train time/);
    assert.match(table, /PCL \(mask on\)\s+\d+\.\d ± \d+\.\d%\s+\d+\.\d ± \d+\.\d%\s+\d+\.\d ± \d+\.\d%\s+0\.\d{3} ± /);
    assert.match(table, /InfoNCE only\s+\d+\.\d ± \d+\.\d%/);
    // Every number is the summary of the saved per-seed runs.
    const saved = JSON.parse(yield* Effect.promise(() => Deno.readTextFile(`${dir}/cmp/comparison.json`)));
    assert.deepEqual(saved.seeds, [4, 5]);
    const ami = (method: string, seed: number) =>
      saved.runs.find((r: SeedRun) => r.method === method && r.seed === seed).evaluation.clustering.ami;
    const d = [4, 5].map((s) => ami("PCL (mask on)", s) - ami("InfoNCE only", s));
    const mean = (d[0]! + d[1]!) / 2, se = Math.abs(d[0]! - d[1]!) / 2; // sd of two values / √2
    assert.ok(Math.abs(saved.difference.AMI.mean - mean) < 1e-12 && Math.abs(saved.difference.AMI.se - se) < 1e-12);
    const diffRow = table.split("\n").find((l) => l.startsWith("PCL − InfoNCE, paired"))!.split(/\s{2,}/);
    // Signed as the training summary signs its differences: "+" or "−" (U+2212).
    assert.equal(diffRow[4], `${mean >= 0 ? "+" : "−"}${Math.abs(mean).toFixed(3)} ± ${se.toFixed(3)}`);
    assert.match(diffRow[1]!, /^[+−]\d+\.\d{2} ± \d+\.\d{2}$/, "percentage-point differences with two decimals");
    // The random row is the evaluation of the encoder the runs of the config's seed started from; the pixel row the
    // raw images under the same protocol.
    const decoded = yield* decodeConfig({ ...tinyConfig, evaluation });
    const untrained = (yield* evaluateUntrained(decoded).pipe(Effect.provide(Gpu.layer)))!;
    const pixels = (yield* evaluatePixelBaseline(decoded).pipe(Effect.provide(Gpu.layer)))!;
    const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
    const row = (label: string) => table.split("\n").find((l) => l.startsWith(label))?.split(/\s{2,}/).slice(1);
    for (const [label, e] of [["random encoder (untrained)", untrained], ["raw pixels", pixels]] as const) {
      assert.deepEqual(row(label), [
        pct(e.knn!["k20"]!),
        pct(e.knn!["k200"]!),
        pct(e.linear!),
        e.clustering!.ami.toFixed(3),
        e.clustering!.nmi.toFixed(3),
        "-",
      ]);
    }
    const baseline = (yield* Effect.promise(() => Deno.readTextFile(`${dir}/cmp/seed-5/infonce/metrics.jsonl`)))
      .trim().split("\n");
    assert.deepEqual(baseline.map((l) => JSON.parse(l).protoNce.length), [0, 0]);
    // The baseline shares PCL's warm-up epoch (the same weights): its record is PCL's, time included.
    const pclFirst = Deno.readTextFileSync(`${dir}/cmp/seed-5/pcl/metrics.jsonl`).split("\n")[0]!;
    assert.deepEqual(JSON.parse(baseline[0]!), JSON.parse(pclFirst));
    // A second run trains nothing again: the runs' files stay as they were, the table is the same.
    const before = yield* Effect.promise(() => snapshot(`${dir}/cmp/seed-4`));
    const again = yield* Effect.promise(compare);
    assert.equal(again.code, 0, again.out);
    assert.deepEqual(yield* Effect.promise(() => snapshot(`${dir}/cmp/seed-4`)), before);
    const tableOf = (out: string) => out.slice(out.indexOf("tiny, 2 epochs"), out.indexOf("saved "));
    assert.equal(tableOf(again.out), tableOf(table));
    // The same table as a page.
    const page = yield* Effect.promise(() => Deno.readTextFile(`${dir}/cmp/comparison.html`));
    assert.ok(page.includes(`<td>PCL − InfoNCE, paired</td><td>${diffRow[1]}</td>`), "the page's difference row");
  }),
);
