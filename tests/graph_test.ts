import assert from "node:assert/strict";
import { Data, Effect, Exit, Layer, Logger, Option, Schema } from "effect";
import {
  ArtifactCorrupt,
  ArtifactStore,
  BundleFromBytes,
  configHash,
  Dag,
  Float32FromBytes,
  GraphDefinitionError,
  Int32FromBytes,
  Pipeline,
  readArtifact,
  runPipeline,
  runStage,
  type Stage,
  stage,
  StoreError,
  TensorField,
  UnknownStage,
  writeArtifact,
} from "../src/graph/mod.ts";
import { effectTest, tempDir } from "./helpers.ts";

// ---------------------------------------------------------------------------------------------------------------
// Fixtures: stages that count their attempts and can be told to fail once.

class Boom extends Data.TaggedError("Boom")<{ readonly stage: string }> {}

/** Attempts per stage, and the stages whose next attempt fails. */
const makeProbe = () => {
  const runs: Record<string, number> = {};
  const failNext = new Set<string>();
  const counted = <const N extends string, I, O>(name: N, codec: Schema.Codec<O, unknown>, f: (i: I) => O) =>
    stage(name, codec, (input: I) =>
      Effect.gen(function* () {
        runs[name] = (runs[name] ?? 0) + 1;
        if (failNext.delete(name)) return yield* new Boom({ stage: name });
        return f(input);
      }));
  return { runs, failNext, counted };
};

const Nums = Schema.Array(Schema.Number);

/** load → square → shift → sum → report: five stages, JSON artifacts. */
const chain = () => {
  const probe = makeProbe();
  const { counted } = probe;
  const pipeline = Pipeline.from(counted("load", Nums, (n: number) => Array.from({ length: n }, (_, i) => i)))
    .then(counted("square", Nums, (xs: ReadonlyArray<number>) => xs.map((x) => x * x)))
    .then(counted("shift", Nums, (xs: ReadonlyArray<number>) => xs.map((x) => x + 1)))
    .then(counted("sum", Schema.Number, (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0)))
    .then(counted("report", Schema.String, (total: number) => `total=${total}`));
  return { ...probe, pipeline };
};
const STAGES = ["load", "square", "shift", "sum", "report"];
const EXPECTED = "total=18"; // n = 4: 1 + 2 + 5 + 10

/** Memory store plus a logger that collects lines (and keeps test output quiet). */
const testEnv = (store: Layer.Layer<ArtifactStore> = ArtifactStore.memory) => {
  const logs: Array<string> = [];
  const logger = Logger.make<unknown, void>(({ message }) => {
    logs.push((Array.isArray(message) ? message : [message]).map(String).join(" "));
  });
  return { logs, layer: Layer.merge(store, Logger.layer([logger])) };
};

const opts = { run: "t", config: { lr: 0.1 } };
const keysOf = (config: unknown = opts.config) =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore;
    const prefix = `t/${yield* configHash(config)}`;
    return (yield* store.list(prefix)).map((k) => k.slice(prefix.length + 1));
  });

// ---------------------------------------------------------------------------------------------------------------
// Composition is checked by the compiler

Deno.test("graph: mismatched, duplicate and under-fed compositions are compile errors", async () => {
  // One type-check of the three fixtures (each valid but for one error). `deno eval --check` rather than
  // `deno check <file>`, because the latter skips files that deno.json excludes, and tests/fixtures/ may well be.
  const imports = ["graph_mismatch.ts", "graph_duplicate.ts", "graph_fanin.ts"]
    .map((f) => `import "./tests/fixtures/${f}";`).join(" ");
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--check", imports],
    cwd: new URL("../", import.meta.url),
    env: { NO_COLOR: "1" },
  }).output();
  const out = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.notEqual(code, 0, out);
  assert.match(out, /Found 3 errors/, out); // one per fixture: each is otherwise valid
  assert.match(
    out,
    /TS2345 \[ERROR\]: Argument of type 'Stage<number, string, never, never, "toText">' is not assignable to parameter of type 'Stage<readonly number\[\], string, never, never, "toText">'\.\s+Type 'readonly number\[\]' is not assignable to type 'number'\./,
  );
  assert.match(out, /Type '"inc"' is not assignable to type '"stage name 'inc' is already used"'/);
  assert.match(out, /Property 'cluster' is missing in type '\{ readonly features: readonly number\[\]; \}'/);
});

Deno.test("graph: correct compositions type-check, inline stages get their input type from context", () => {
  const len = Pipeline.from(stage("load", Nums, (n: number) => Effect.succeed([n])))
    .then(stage("len", Schema.Number, (xs) => Effect.succeed(xs.length))); // xs: readonly number[]
  const typed: Pipeline<number, number> = len;
  const dag = Dag.make<number>()
    .node("input", stage("twice", Schema.Number, (n) => Effect.succeed(2 * n)))
    .node(["input", "twice"], stage("both", Schema.String, ({ input, twice }) => Effect.succeed(`${input}:${twice}`)));
  const fanIn: Dag<number, typeof dag["~outs"], string> = dag;
  assert.deepEqual(typed.names, ["load", "len"]);
  assert.deepEqual(fanIn.names, ["twice", "both"]);
  void (() => { // checked by the compiler, never run
    // @ts-expect-error: readonly number[] is not a string
    len.then(stage("upper", Schema.String, (s: string) => Effect.succeed(s.toUpperCase())));
    // @ts-expect-error: 'len' is already used
    len.then(stage("len", Schema.Number, (n) => Effect.succeed(n)));
    const pick = stage(
      "pick",
      Schema.Union([Schema.Number, Schema.String]),
      (b: boolean) => Effect.succeed(b ? 1 : ""),
    );
    // @ts-expect-error: input is checked contravariantly (property syntax, `in I`): number | string is not number
    Pipeline.from(pick).then(stage("double", Schema.Number, (n: number) => Effect.succeed(2 * n)));
    // @ts-expect-error: 'nope' is not an earlier node
    dag.node("nope", stage("x", Schema.Number, (n: number) => Effect.succeed(n)));
  });
});

Deno.test("graph: duplicate and unsafe names are rejected at runtime too", () => {
  const name: string = "load"; // not a literal: only the runtime check sees it
  const load = stage("load", Nums, (n: number) => Effect.succeed([n]));
  const again: Stage<ReadonlyArray<number>, number> = stage(name, Schema.Number, (xs) => Effect.succeed(xs.length));
  assert.throws(() => Pipeline.from(load).then(again), GraphDefinitionError);
  assert.throws(() => stage("../escape", Schema.Number, (n: number) => Effect.succeed(n)), /must match/);
  const dep = "ghost" as "input";
  assert.throws(() => Dag.make<number>().node(dep, load), /depends on 'ghost'/);
});

// ---------------------------------------------------------------------------------------------------------------
// Runner: resume, from, config hash

effectTest(
  "graph: a failure at any stage boundary resumes after the last finished stage",
  Effect.gen(function* () {
    for (const [k, failing] of STAGES.entries()) {
      const { runs, failNext, pipeline } = chain();
      const env = testEnv();
      yield* Effect.gen(function* () {
        failNext.add(failing);
        const first = yield* Effect.exit(runPipeline(pipeline, 4, opts));
        assert.ok(Exit.isFailure(first), `run failing at '${failing}' should fail`);
        assert.deepEqual(yield* keysOf(), STAGES.slice(0, k).toSorted());
        assert.equal(yield* runPipeline(pipeline, 4, opts), EXPECTED);
        // Finished stages ran once; the failing one twice; nothing after it ran before the resume.
        assert.deepEqual(runs, Object.fromEntries(STAGES.map((s, i) => [s, i === k ? 2 : 1])));
        if (k > 0) assert.ok(env.logs.includes(`resume after '${STAGES[k - 1]}'`), env.logs.join("\n"));
        assert.ok(env.logs.some((l) => /^stage 'report' done in \d+ ms$/.test(l)), env.logs.join("\n"));
        // A finished run resumes to its result without running anything.
        const before = { ...runs };
        assert.equal(yield* runPipeline(pipeline, 4, opts), EXPECTED);
        assert.deepEqual(runs, before);
        assert.ok(env.logs.includes("all stages done; nothing to run"));
      }).pipe(Effect.provide(env.layer));
    }
  }),
);

effectTest(
  "graph: `from` discards the stage and its downstream first, then re-runs only those",
  Effect.gen(function* () {
    const { runs, failNext, pipeline } = chain();
    assert.equal(yield* runPipeline(pipeline, 4, opts), EXPECTED);
    // Crash right in the re-run stage: its downstream artifacts must already be gone.
    failNext.add("shift");
    const crashed = yield* Effect.flip(runPipeline(pipeline, 4, { ...opts, from: "shift" }));
    assert.ok(crashed instanceof Boom);
    assert.deepEqual(yield* keysOf(), ["load", "square"]);
    assert.equal(yield* runPipeline(pipeline, 4, opts), EXPECTED); // a plain resume cannot see stale `sum`
    assert.deepEqual(runs, { load: 1, square: 1, shift: 3, sum: 2, report: 2 });

    assert.equal(yield* runPipeline(pipeline, 4, { ...opts, from: "report" }), EXPECTED);
    assert.deepEqual(runs, { load: 1, square: 1, shift: 3, sum: 2, report: 3 });

    const unknown = yield* Effect.flip(runPipeline(pipeline, 4, { ...opts, from: "sqaure" }));
    assert.ok(unknown instanceof UnknownStage);
    assert.deepEqual(unknown.known, STAGES);
    assert.equal(unknown.message, "unknown stage 'sqaure'; the stages are 'load', 'square', 'shift', 'sum', 'report'");
  }).pipe(Effect.provide(testEnv().layer)),
);

effectTest(
  "graph: a different config never reuses artifacts; key order does not change the hash",
  Effect.gen(function* () {
    const { runs, pipeline } = chain();
    assert.equal(yield* runPipeline(pipeline, 4, { run: "t", config: { lr: 0.1, k: [5, 10] } }), EXPECTED);
    assert.equal(yield* runPipeline(pipeline, 4, { run: "t", config: { lr: 0.2, k: [5, 10] } }), EXPECTED);
    assert.deepEqual(runs, { load: 2, square: 2, shift: 2, sum: 2, report: 2 });
    assert.equal(yield* runPipeline(pipeline, 4, { run: "t", config: { k: [5, 10], lr: 0.1 } }), EXPECTED);
    assert.equal(runs.load, 2);
    assert.equal(yield* configHash({ a: 1, b: { c: 2, d: 3 } }), yield* configHash({ b: { d: 3, c: 2 }, a: 1 }));
    assert.match(yield* configHash({ a: 1 }), /^[0-9a-f]{16}$/);
  }).pipe(Effect.provide(testEnv().layer)),
);

// ---------------------------------------------------------------------------------------------------------------
// Fan-in

/** load → features → cluster → stats(features) → concentration(features, cluster) → report(concentration, stats) */
const fanIn = () => {
  const probe = makeProbe();
  const { counted } = probe;
  const Features = Float32FromBytes;
  const seen: Array<unknown> = [];
  const dag = Dag.make<number>()
    .node("input", counted("load", Nums, (n: number) => Array.from({ length: n }, (_, i) => i)))
    .node("load", counted("features", Features, (xs: ReadonlyArray<number>) => Float32Array.from(xs, (x) => x / 2)))
    .node("features", counted("cluster", Int32FromBytes, (f: Float32Array) => Int32Array.from(f, (x) => x < 1 ? 0 : 1)))
    .node("features", counted("stats", Schema.Number, (f: Float32Array) => Math.max(...f)))
    .node(
      ["features", "cluster"],
      counted("concentration", Nums, (i: { readonly features: Float32Array; readonly cluster: Int32Array }) => {
        seen.push(i);
        return [0, 1].map((c) => i.features.filter((_, j) => i.cluster[j] === c).length);
      }),
    )
    .node(
      ["concentration", "stats"],
      counted(
        "report",
        Schema.String,
        (i: { readonly concentration: ReadonlyArray<number>; readonly stats: number }) =>
          `sizes=${i.concentration} max=${i.stats}`,
      ),
    );
  return { ...probe, seen, dag };
};

effectTest(
  "graph: a fan-in node receives both deps; resume and `from` follow the dependencies",
  Effect.gen(function* () {
    const { runs, failNext, seen, dag } = fanIn();
    failNext.add("concentration");
    assert.ok(Exit.isFailure(yield* Effect.exit(runPipeline(dag, 4, opts))));
    assert.equal(yield* runPipeline(dag, 4, opts), "sizes=2,2 max=1.5");
    assert.deepEqual(runs, { load: 1, features: 1, cluster: 1, stats: 1, concentration: 2, report: 1 });
    const last = seen.at(-1) as { features: Float32Array; cluster: Int32Array };
    assert.deepEqual(Object.keys(last).toSorted(), ["cluster", "features"]);
    assert.deepEqual([...last.features], [0, 0.5, 1, 1.5]); // decoded from features.bin on the resume
    assert.deepEqual([...last.cluster], [0, 0, 1, 1]);

    // `stats` does not depend on `cluster`: it is neither discarded nor re-run.
    assert.equal(yield* runPipeline(dag, 4, { ...opts, from: "cluster" }), "sizes=2,2 max=1.5");
    assert.deepEqual(runs, { load: 1, features: 1, cluster: 2, stats: 1, concentration: 3, report: 2 });

    // A crash in a re-run leaves exactly the artifacts that do not depend on it.
    failNext.add("features");
    assert.ok(Exit.isFailure(yield* Effect.exit(runPipeline(dag, 4, { ...opts, from: "features" }))));
    assert.deepEqual(yield* keysOf(), ["load"]);
    assert.equal(yield* runPipeline(dag, 4, opts), "sizes=2,2 max=1.5");

    // Standalone: one stage on its stored inputs; its downstream is discarded, its upstream untouched.
    const before = { ...runs };
    const clusters = yield* runStage(dag, "cluster", 4, opts);
    assert.deepEqual([...(clusters as Int32Array)], [0, 0, 1, 1]);
    assert.deepEqual(runs, { ...before, cluster: before.cluster + 1 });
    assert.deepEqual(yield* keysOf(), ["cluster", "features", "load", "stats"]);

    assert.equal(
      dag.toMermaid(),
      [
        "flowchart LR",
        '  n0(["input"])',
        '  n1["load"]',
        '  n2["features"]',
        '  n3["cluster"]',
        '  n4["stats"]',
        '  n5["concentration"]',
        '  n6["report"]',
        "  n0 --> n1",
        "  n1 --> n2",
        "  n2 --> n3",
        "  n2 --> n4",
        "  n2 --> n5",
        "  n3 --> n5",
        "  n5 --> n6",
        "  n4 --> n6",
      ].join("\n"),
    );
  }).pipe(Effect.provide(testEnv().layer)),
);

// ---------------------------------------------------------------------------------------------------------------
// Directory store and codecs

const filesUnder = async (dir: string, base = ""): Promise<Array<string>> => {
  const out: Array<string> = [];
  for await (const e of Deno.readDir(`${dir}/${base}`)) {
    const rel = base === "" ? e.name : `${base}/${e.name}`;
    out.push(...(e.isDirectory ? await filesUnder(dir, rel) : [rel]));
  }
  return out.sort();
};

effectTest(
  "graph: directory store writes atomically, tensors as .bin, and resumes from them",
  Effect.gen(function* () {
    const dir = yield* tempDir("graph_test_");
    const { runs, dag } = fanIn();
    const env = testEnv(ArtifactStore.directory(dir));
    yield* Effect.gen(function* () {
      assert.equal(yield* runPipeline(dag, 4, opts), "sizes=2,2 max=1.5");
      const hash = yield* configHash(opts.config);
      const files = yield* Effect.promise(() => filesUnder(dir));
      assert.deepEqual(files, [
        ...["cluster.bin", "concentration.json", "features.bin", "load.json", "report.json", "stats.json"]
          .map((f) => `t/${hash}/${f}`),
      ]);
      assert.equal((yield* Effect.promise(() => Deno.stat(`${dir}/t/${hash}/features.bin`))).size, 16);
      assert.equal(yield* runPipeline(dag, 4, { ...opts, from: "concentration" }), "sizes=2,2 max=1.5");
      assert.deepEqual(runs, { load: 1, features: 1, cluster: 1, stats: 1, concentration: 2, report: 2 });
      assert.ok(env.logs.includes("resume after 'features', 'cluster', 'stats'"), env.logs.join("\n"));

      const store = yield* ArtifactStore;
      const bytes = Uint8Array.from([1, 2, 3, 250]);
      yield* store.put("raw/bytes", bytes);
      assert.deepEqual(yield* store.get("raw/bytes"), Option.some(bytes));
      const floats = Float32Array.from([1.5, -2, Math.PI, 1e-30]);
      yield* writeArtifact("raw/floats", Float32FromBytes, floats);
      const back = Option.getOrThrow(yield* readArtifact("raw/floats", Float32FromBytes));
      assert.ok(back instanceof Float32Array);
      assert.deepEqual(back, floats);
      yield* store.put("raw/bytes", { now: "json" }); // a kind change must not leave the .bin behind
      assert.deepEqual(yield* store.get("raw/bytes"), Option.some({ now: "json" }));
      assert.deepEqual(yield* store.list("raw"), ["raw/bytes", "raw/floats"]);
      yield* store.remove("raw/floats");
      assert.deepEqual(yield* store.get("raw/floats"), Option.none());
      const all = yield* Effect.promise(() => filesUnder(dir));
      assert.deepEqual(all.filter((f) => f.endsWith(".tmp")), []);
      assert.deepEqual(all.filter((f) => f.startsWith("raw/")), ["raw/bytes.json"]);

      const notJson = yield* Effect.flip(store.put("raw/f32", floats));
      assert.ok(notJson instanceof StoreError);
      assert.match(notJson.message, /Float32Array cannot be stored as JSON/);
      assert.ok((yield* Effect.flip(store.put("../escape", 1))) instanceof StoreError);
    }).pipe(Effect.provide(env.layer));
  }),
);

effectTest(
  "graph: a corrupt artifact is a typed error naming it, never a silent re-run",
  Effect.gen(function* () {
    const dir = yield* tempDir("graph_test_");
    const { runs, pipeline } = chain();
    yield* Effect.gen(function* () {
      assert.equal(yield* runPipeline(pipeline, 4, opts), EXPECTED);
      const hash = yield* configHash(opts.config);
      const file = `${dir}/t/${hash}/sum.json`;

      yield* Effect.promise(() => Deno.writeTextFile(file, '{"trunc'));
      const broken = yield* Effect.flip(runPipeline(pipeline, 4, { ...opts, from: "report" }));
      assert.ok(broken instanceof ArtifactCorrupt, String(broken));
      assert.equal(broken.file, file);
      assert.ok(broken.message.includes(file), broken.message);

      yield* Effect.promise(() => Deno.writeTextFile(file, '"eighteen"')); // valid JSON, wrong type
      const wrong = yield* Effect.flip(runPipeline(pipeline, 4, { ...opts, from: "report" }));
      assert.ok(wrong instanceof ArtifactCorrupt, String(wrong));
      assert.equal(wrong.key, `t/${hash}/sum`);
      assert.equal(wrong.file, file);
      assert.match(wrong.message, /does not decode: Expected number$/);
      assert.deepEqual(runs, { load: 1, square: 1, shift: 1, sum: 1, report: 1 });
    }).pipe(Effect.provide(testEnv(ArtifactStore.directory(dir)).layer));
  }),
);

effectTest(
  "graph: a bundle codec keeps a struct of tensors in one safetensors-layout file",
  Effect.gen(function* () {
    const Clustering = Schema.Struct({ k: Schema.Number, centroids: TensorField(Float32Array<ArrayBuffer>) });
    const Codec = BundleFromBytes(Schema.Struct({
      epoch: Schema.Number,
      features: TensorField(Float32Array<ArrayBuffer>),
      labels: TensorField(Uint8Array<ArrayBuffer>),
      clusterings: Schema.Array(Clustering),
    }));
    const value = {
      epoch: 3,
      features: Float32Array.from([0.25, -1, 7]),
      labels: Uint8Array.from([9, 8, 7]),
      clusterings: [{ k: 2, centroids: Float32Array.from([1, 2, 3, 4]) }, { k: 1, centroids: new Float32Array(2) }],
    };
    const bytes = yield* Schema.encodeEffect(Codec)(value);
    assert.deepEqual(yield* Schema.decodeUnknownEffect(Codec)(bytes), value);

    const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    assert.equal(headerLength % 8, 0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
    assert.deepEqual(header["clusterings.0.centroids"], { dtype: "F32", shape: [4], data_offsets: [12, 28] });
    assert.deepEqual(header.labels, { dtype: "U8", shape: [3], data_offsets: [36, 39] });
    assert.equal(bytes.byteLength, 8 + headerLength + 39);

    const dir = yield* tempDir("graph_test_");
    yield* Effect.gen(function* () {
      yield* writeArtifact("b/bundle", Codec, value);
      assert.deepEqual(Option.getOrThrow(yield* readArtifact("b/bundle", Codec)), value);
      yield* Effect.promise(() => Deno.truncate(`${dir}/b/bundle.bin`, 20));
      const cut = yield* Effect.flip(readArtifact("b/bundle", Codec));
      assert.ok(cut instanceof ArtifactCorrupt);
      assert.match(cut.message, /tensor bundle: truncated: the header needs \d+ bytes, the file has 20/);
    }).pipe(Effect.provide(testEnv(ArtifactStore.directory(dir)).layer));
  }),
);
