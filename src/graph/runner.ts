/**
 * Runs a `Pipeline` or `Dag`, recording each finished stage's encoded output under `<run>/<config hash>/<stage>`.
 *
 * - Resume: a stage is skipped when its artifact exists and nothing upstream of it re-runs; the runner loads only
 *   the artifacts that a stage still to run reads (for a chain: the newest finished one).
 * - `from: "x"` forces `x` and everything downstream of it to re-run.
 * - Before anything runs, the artifacts of every stage about to re-run are deleted, so a crash midway can never
 *   resume from an output computed from an older upstream.
 * - The config hash is part of the key: a changed config starts from scratch instead of from stale artifacts.
 *
 * Stages run one at a time, in the order they were added (GPU stages would serialise anyway).
 */
import { Duration, Effect, Option, Schema } from "effect";
import { ArtifactCorrupt, StoreError, UnknownStage } from "./errors.ts";
import { INPUT, type Plan } from "./pipeline.ts";
import type { Stage } from "./stage.ts";
import { ArtifactStore } from "./store.ts";
import { hookPoint } from "./hooks.ts";

export interface RunOptions {
  /** Names the run, e.g. `mnist-pcl` or `mnist-pcl/epoch-3`; `/`-separated [A-Za-z0-9_.-] segments. */
  readonly run: string;
  /** Any JSON-able value; artifacts are keyed by its hash. */
  readonly config: unknown;
  /** Re-run this stage and everything downstream of it, even if their artifacts exist. */
  readonly from?: string | undefined;
}

export type RunError = StoreError | ArtifactCorrupt | UnknownStage;

/** JSON with object keys sorted, so the hash does not depend on key order. */
export const canonicalJson = (value: unknown): string =>
  JSON.stringify(
    value,
    (_key, v: unknown) =>
      v !== null && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]]))
        : v,
  ) ?? "null";

/** First 16 hex digits of the SHA-256 of the config's canonical JSON. */
export const configHash = (config: unknown): Effect.Effect<string> =>
  Effect.promise(async () => {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonicalJson(config)));
    return Array.from(new Uint8Array(digest).subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  });

export const artifactKey = (run: string, hash: string, stage: string): string => `${run}/${hash}/${stage}`;

/** Loads and decodes an artifact; a value the codec rejects is `ArtifactCorrupt`, never a silent re-run. */
export const readArtifact = <A>(
  key: string,
  codec: Schema.Codec<A, unknown>,
): Effect.Effect<Option.Option<A>, StoreError | ArtifactCorrupt, ArtifactStore> =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore;
    const raw = yield* store.get(key);
    if (Option.isNone(raw)) return Option.none();
    const value = yield* Schema.decodeUnknownEffect(codec)(raw.value).pipe(
      Effect.mapError((e) =>
        new ArtifactCorrupt({
          key,
          file: store.fileOf(key, raw.value),
          message: `artifact ${store.fileOf(key, raw.value)} does not decode: ${e.message}`,
        })
      ),
    );
    return Option.some(value);
  });

/** Encodes with the codec and stores. */
export const writeArtifact = <A>(
  key: string,
  codec: Schema.Codec<A, unknown>,
  value: A,
): Effect.Effect<void, StoreError, ArtifactStore> =>
  Effect.gen(function* () {
    const store = yield* ArtifactStore;
    const encoded = yield* Schema.encodeUnknownEffect(codec)(value).pipe(
      Effect.mapError((e) => new StoreError({ key, message: `output for '${key}' does not encode: ${e.message}` })),
    );
    yield* store.put(key, encoded);
  });

/** Runs the plan (resuming where it can) and returns the output of its last stage. */
export const runPipeline = <I, O, E, R>(
  plan: Plan<I, O, E, R>,
  input: I,
  opts: RunOptions,
): Effect.Effect<O, E | RunError, R | ArtifactStore> =>
  execute(plan, input, opts, plan.names.at(-1), false) as Effect.Effect<O, E | RunError, R | ArtifactStore>;

/**
 * Runs one stage on its stored inputs (running first any upstream stage whose artifact is missing) and returns its
 * output; its downstream artifacts are discarded, as they no longer follow from it. For the CLI's `stage <name>`.
 */
export const runStage = <I, O, E, R>(
  plan: Plan<I, O, E, R>,
  name: string,
  input: I,
  opts: Omit<RunOptions, "from">,
): Effect.Effect<unknown, E | RunError, R | ArtifactStore> => execute(plan, input, { ...opts, from: name }, name, true);

const quote = (names: Iterable<string>) => [...names].map((n) => `'${n}'`).join(", ");

const execute = <I, O, E, R>(
  plan: Plan<I, O, E, R>,
  input: I,
  opts: RunOptions,
  target: string | undefined,
  onlyUpstreamOfTarget: boolean,
): Effect.Effect<unknown, E | RunError, R | ArtifactStore> =>
  Effect.gen(function* () {
    const names = plan.names;
    for (const name of [opts.from, target]) {
      if (name !== undefined && !names.includes(name)) {
        return yield* new UnknownStage({
          stage: name,
          known: names,
          message: `unknown stage '${name}'; the stages are ${quote(names)}`,
        });
      }
    }
    if (target === undefined) return input; // an empty plan is the identity
    const store = yield* ArtifactStore;
    const hash = yield* configHash(opts.config);
    const prefix = `${opts.run}/${hash}`;
    const key = (name: string) => `${prefix}/${name}`;
    const nodes = onlyUpstreamOfTarget
      ? plan.nodes.filter((n) => plan.downstreamOf(n.stage.name).includes(target))
      : plan.nodes;

    const done = new Set((yield* store.list(prefix)).map((k) => k.slice(prefix.length + 1)));
    const forced = new Set(opts.from === undefined ? [] : plan.downstreamOf(opts.from));
    const toRun = new Set<string>();
    for (const n of nodes) {
      const name = n.stage.name;
      if (forced.has(name) || !done.has(name) || n.deps.some((d) => toRun.has(d))) toRun.add(name);
    }
    const stale = [...forced, ...toRun].filter((name) => done.has(name));
    if (stale.length > 0) {
      yield* Effect.logInfo(`discard ${quote(new Set(stale))}`);
      for (const name of new Set(stale)) yield* store.remove(key(name));
    }

    const byName = new Map(nodes.map((n) => [n.stage.name, n]));
    const values = new Map<string, unknown>([[INPUT, input]]);
    const load = (name: string) =>
      Effect.gen(function* () {
        if (values.has(name)) return;
        const value = yield* readArtifact(key(name), byName.get(name)!.stage.output);
        if (Option.isNone(value)) {
          return yield* new StoreError({ key: key(name), message: `artifact '${key(name)}' vanished during the run` });
        }
        values.set(name, value.value);
      });

    const running = nodes.filter((n) => toRun.has(n.stage.name));
    const frontier = new Set(running.flatMap((n) => n.deps).filter((d) => d !== INPUT && !toRun.has(d)));
    if (running.length === 0) yield* Effect.logInfo(`all stages done; nothing to run`);
    else if (frontier.size > 0) yield* Effect.logInfo(`resume after ${quote(frontier)}`);

    // Drop each output once its last reader has run, so big intermediates do not pile up.
    const lastReader = new Map<string, string>();
    for (const n of running) for (const d of n.deps) lastReader.set(d, n.stage.name);

    for (const n of running) {
      const name = n.stage.name;
      for (const d of n.deps) yield* load(d);
      const arg = n.receives === "value"
        ? values.get(n.deps[0])
        : Object.fromEntries(n.deps.map((d) => [d, values.get(d)]));
      const stage = n.stage as Stage<unknown, unknown, E, R>;
      const [took, out] = yield* Effect.timed(stage.run(arg)).pipe(
        Effect.withLogSpan(name),
        Effect.withSpan(`stage ${name}`),
      );
      yield* hookPoint(`${opts.run}/${name}`);
      yield* writeArtifact(key(name), stage.output, out);
      values.set(name, out);
      yield* Effect.logInfo(`stage '${name}' done in ${Math.round(Duration.toMillis(took))} ms`);
      for (const d of n.deps) if (lastReader.get(d) === name && d !== target) values.delete(d);
    }
    yield* load(target);
    return values.get(target);
  });
