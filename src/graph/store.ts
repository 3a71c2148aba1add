/**
 * Where finished stages' outputs live, keyed by path-like strings (`<run>/<config hash>/<stage>`). Values are what
 * a stage's codec encodes to: a `Uint8Array` is stored as raw bytes (`<key>.bin`), anything else as JSON
 * (`<key>.json`). The directory layer writes `<file>.tmp`, syncs it and renames it over `<file>`, so a crash leaves
 * either the old artifact or the new one, never half of one.
 */
import { Context, Effect, Layer, Option } from "effect";
import { ArtifactCorrupt, StoreError } from "./errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";

export interface ArtifactStoreShape {
  /** The file that holds `key`'s artifact, given the value read from it (for error messages). */
  readonly fileOf: (key: string, value: unknown) => string;
  readonly get: (key: string) => Effect.Effect<Option.Option<unknown>, StoreError | ArtifactCorrupt>;
  readonly put: (key: string, value: unknown) => Effect.Effect<void, StoreError>;
  /** Deletes the artifact if there is one. */
  readonly remove: (key: string) => Effect.Effect<void, StoreError>;
  /** Keys of the artifacts directly under `prefix` (`list("run/abc")` → `["run/abc/load", ...]`), sorted. */
  readonly list: (prefix: string) => Effect.Effect<ReadonlyArray<string>, StoreError>;
}

export class ArtifactStore extends Context.Service<ArtifactStore, ArtifactStoreShape>()("pcl/graph/ArtifactStore") {
  /** A fresh in-memory store per layer build; values go through the same serialisation as on disk. */
  static readonly memory: Layer.Layer<ArtifactStore> = Layer.sync(ArtifactStore, () => makeMemory());
  /** Artifacts as files under `root` (created on first write). */
  static readonly directory = (root: string): Layer.Layer<ArtifactStore> =>
    Layer.sync(ArtifactStore, () => makeDirectory(root));
}

const SEGMENT = /^[A-Za-z0-9_.-]+$/;

const checkKey = (key: string): Effect.Effect<void, StoreError> =>
  key.split("/").every((s) => SEGMENT.test(s) && s !== "." && s !== "..") ? Effect.void : Effect.fail(
    new StoreError({ key, message: `invalid artifact key '${key}': use '/'-separated [A-Za-z0-9_.-] names` }),
  );

type Serialized = { readonly ext: "bin"; readonly bytes: Uint8Array } | { readonly ext: "json"; readonly text: string };

/** The one place that decides how a value is written; both layers use it, so tests see disk behaviour. */
const serialize = (key: string, value: unknown): Effect.Effect<Serialized, StoreError> =>
  Effect.try({
    try: (): Serialized => {
      if (value instanceof Uint8Array) return { ext: "bin", bytes: value };
      const text = JSON.stringify(value, (_k, v) => {
        if (ArrayBuffer.isView(v)) {
          throw new Error(`a ${v.constructor.name} cannot be stored as JSON; give the stage a bytes codec`);
        }
        return v;
      });
      if (text === undefined) throw new Error(`${typeof value} cannot be stored as JSON`);
      return { ext: "json", text };
    },
    catch: (e) => new StoreError({ key, message: `cannot store '${key}': ${(e as Error).message}` }),
  });

const parseJson = (key: string, file: string, text: string): Effect.Effect<unknown, ArtifactCorrupt> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (e) =>
      new ArtifactCorrupt({ key, file, message: `artifact ${file} is not valid JSON: ${(e as Error).message}` }),
  });

const makeMemory = (): ArtifactStoreShape => {
  const entries = new Map<string, Serialized>();
  return {
    fileOf: (key) => `memory:${key}`,
    get: (key) =>
      Effect.gen(function* () {
        yield* checkKey(key);
        const s = entries.get(key);
        if (s === undefined) return Option.none();
        return Option.some(s.ext === "bin" ? s.bytes.slice() : yield* parseJson(key, `memory:${key}`, s.text));
      }),
    put: (key, value) =>
      Effect.gen(function* () {
        yield* checkKey(key);
        const s = yield* serialize(key, value);
        entries.set(key, s.ext === "bin" ? { ext: "bin", bytes: s.bytes.slice() } : s);
      }),
    remove: (key) => checkKey(key).pipe(Effect.andThen(Effect.sync(() => void entries.delete(key)))),
    list: (prefix) =>
      checkKey(prefix).pipe(
        Effect.andThen(Effect.sync(() =>
          [...entries.keys()].filter((k) => k.startsWith(`${prefix}/`) && !k.slice(prefix.length + 1).includes("/"))
            .sort()
        )),
      ),
  };
};

const makeDirectory = (root: string): ArtifactStoreShape => {
  const base = (key: string) => `${root}/${key}`;
  const io = <A>(key: string, what: string, f: () => Promise<A>) =>
    Effect.tryPromise({
      try: f,
      catch: (e) => new StoreError({ key, message: `${what} failed: ${(e as Error).message}` }),
    });
  /** Reads a file, or None when it does not exist. */
  const read = <A>(key: string, file: string, f: (file: string) => Promise<A>) =>
    io(key, `reading ${file}`, () =>
      f(file).then(Option.some, (e) => {
        if (e instanceof Deno.errors.NotFound) return Option.none<A>();
        throw e;
      }));
  const removeFile = (key: string, file: string) =>
    io(key, `removing ${file}`, () =>
      Deno.remove(file).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }));

  return {
    fileOf: (key, value) => `${base(key)}.${value instanceof Uint8Array ? "bin" : "json"}`,
    get: (key) =>
      Effect.gen(function* () {
        yield* checkKey(key);
        const bin = yield* read(key, `${base(key)}.bin`, (f) => Deno.readFile(f));
        if (Option.isSome(bin)) return bin;
        const file = `${base(key)}.json`;
        const json = yield* read(key, file, (f) => Deno.readTextFile(f));
        if (Option.isNone(json)) return Option.none();
        return Option.some(yield* parseJson(key, file, json.value));
      }),
    put: (key, value) =>
      Effect.gen(function* () {
        yield* checkKey(key);
        const s = yield* serialize(key, value);
        const file = `${base(key)}.${s.ext}`;
        // A value that changed kind (json <-> bin) would otherwise leave the old file to shadow the new one.
        yield* removeFile(key, `${base(key)}.${s.ext === "bin" ? "json" : "bin"}`);
        yield* io(key, `writing ${file}`, async () => {
          await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
          await writeFileAtomic(file, s.ext === "bin" ? s.bytes : s.text);
        });
      }),
    remove: (key) =>
      checkKey(key).pipe(
        Effect.andThen(removeFile(key, `${base(key)}.bin`)),
        Effect.andThen(removeFile(key, `${base(key)}.json`)),
      ),
    list: (prefix) =>
      checkKey(prefix).pipe(Effect.andThen(io(prefix, `listing ${base(prefix)}`, async () => {
        const keys = new Set<string>();
        try {
          for await (const e of Deno.readDir(base(prefix))) {
            const m = e.isFile ? /^(.*)\.(bin|json)$/.exec(e.name) : null;
            if (m) keys.add(`${prefix}/${m[1]}`);
          }
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
        return [...keys].sort();
      }))),
  };
};
