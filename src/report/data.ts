/**
 * What a report shows, read from a run directory (see src/pcl/train.ts for the layout):
 *
 * - the per-epoch records: `metrics.jsonl`, else the newest checkpoint manifest's copy of them;
 * - the newest checkpoint manifest: config, adapter, position;
 * - the latest E-step: the newest epoch's `concentration` artifact (assignments, squared distances to the centroid,
 *   φ), else the newest checkpoint's `prototypes.<m>.*` tensors (assignments and φ, no distances);
 * - the training images, reloaded from the config's `train` source, only when the galleries need them.
 *
 * Only what is missing for the whole page (no records at all) is an error; anything else that cannot be read becomes a
 * note on the page and the part that needed it is left out, so a report of a damaged or unusual run still renders.
 */
import { Effect, Option, Schema } from "effect";
import type { HostDataset } from "../data/dataset.ts";
import { readSource, Source } from "../data/source.ts";
import { ArtifactStore, BundleFromBytes, readArtifact } from "../graph/mod.ts";
import { readSafetensors } from "../io/safetensors.ts";
import { listManifests } from "../pcl/checkpoint.ts";
import { PrototypesSchema } from "../pcl/estep.ts";
import { EpochCore, type EpochMetrics, EStepScores, Evaluation } from "../pcl/metrics.ts";

export class ReportError extends Schema.TaggedError<ReportError>()("ReportError", {
  path: Schema.String,
  message: Schema.String,
}) {}

/** An epoch's record as the report reads it (the trainer's `EpochMetrics`). */
export type EpochRecord = EpochMetrics;

/** The fields of a checkpoint manifest the report uses (src/pcl/checkpoint.ts `Manifest`). */
const ManifestView = Schema.Struct({
  epoch: Schema.Number,
  step: Schema.Number,
  stepsPerEpoch: Schema.Number,
  configHash: Schema.String,
  config: Schema.Record(Schema.String, Schema.Unknown),
  metrics: Schema.Array(Schema.Unknown),
  adapter: Schema.String,
  createdAt: Schema.optionalKey(Schema.String),
});
export type ManifestView = typeof ManifestView.Type;

/** One clustering of the E-step. */
export interface ClusteringView {
  readonly k: number;
  /** K, the concentration of each prototype. */
  readonly phi: Float32Array<ArrayBuffer>;
  /** N, the cluster of every training image. */
  readonly im2cluster: Int32Array<ArrayBuffer>;
  /** N, squared distance of every image's feature to its centroid; only in the artifact. */
  readonly distances: Float32Array<ArrayBuffer> | undefined;
}

export interface EStepView {
  /** The concentration artifact, or the checkpoint when the artifacts are gone. */
  readonly source: "artifact" | "checkpoint";
  readonly file: string;
  /** The epoch this E-step opened (its prototypes served that epoch's ProtoNCE). */
  readonly epoch: number;
  readonly clusterings: ReadonlyArray<ClusteringView>;
}

export interface RunData {
  readonly dir: string;
  readonly metrics: ReadonlyArray<EpochRecord>;
  readonly manifest: ManifestView | undefined;
  readonly manifestPath: string | undefined;
  readonly estep: EStepView | undefined;
  /** The training images, when an E-step with distances was found and the source could be read. */
  readonly dataset: HostDataset | undefined;
  /** Things the page should say it could not show, and why. */
  readonly notes: ReadonlyArray<string>;
}

const fileError = (path: string, what: string) => (e: unknown) =>
  new ReportError({ path, message: `${path}: ${what}: ${e instanceof Error ? e.message : String(e)}` });

const readTextIfExists = (path: string) =>
  Effect.tryPromise({
    try: () =>
      Deno.readTextFile(path).catch((e) => {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      }),
    catch: fileError(path, "cannot read"),
  });

const exists = (path: string) => Effect.promise(() => Deno.stat(path).then((s) => s.isFile, () => false));

/** Decodes one epoch record; the optional parts that do not decode are dropped with a note. */
const decodeRecord = (raw: unknown, where: string, notes: string[]) =>
  Effect.gen(function* () {
    const core = yield* Schema.decodeUnknownEffect(EpochCore)(raw).pipe(
      Effect.mapError((e) => new ReportError({ path: where, message: `${where}: not an epoch record: ${e.message}` })),
    );
    const record: { -readonly [K in keyof EpochRecord]: EpochRecord[K] } = { ...core };
    const r = raw as { evaluation?: unknown; estep?: unknown };
    if (r.evaluation !== undefined && r.evaluation !== null) {
      const ev = Schema.decodeUnknownOption(Evaluation)(r.evaluation);
      if (Option.isSome(ev)) record.evaluation = ev.value;
      else notes.push(`${where}: its "evaluation" field has an unexpected shape and is not shown`);
    }
    if (r.estep !== undefined && r.estep !== null) {
      const es = Schema.decodeUnknownOption(EStepScores)(r.estep);
      if (Option.isSome(es)) record.estep = es.value;
      else notes.push(`${where}: its "estep" field has an unexpected shape and is not shown`);
    }
    return record as EpochRecord;
  });

/** The newest manifest (by name: by epoch, then step) and its path, if there is one. */
const newestManifest = (dir: string, notes: string[]) =>
  Effect.gen(function* () {
    const manifests = yield* Effect.tryPromise({
      try: () => listManifests(`${dir}/checkpoints`),
      catch: fileError(`${dir}/checkpoints`, "cannot list"),
    });
    const path = manifests[0];
    if (path === undefined) return undefined;
    const text = yield* readTextIfExists(path);
    const manifest = yield* Effect.try({ try: () => JSON.parse(text ?? "null") as unknown, catch: (e) => e }).pipe(
      Effect.flatMap(Schema.decodeUnknownEffect(ManifestView)),
      Effect.option,
    );
    if (Option.isNone(manifest)) {
      notes.push(`${path} cannot be read as a checkpoint manifest; the config and adapter are not shown`);
      return undefined;
    }
    return { path, manifest: manifest.value };
  });

/** Per-epoch records from metrics.jsonl, else from the manifest; sorted by epoch, one per epoch (the last wins). */
const readMetrics = (dir: string, manifest: ManifestView | undefined, notes: string[]) =>
  Effect.gen(function* () {
    const file = `${dir}/metrics.jsonl`;
    const text = yield* readTextIfExists(file);
    const records: EpochRecord[] = [];
    if (text !== undefined) {
      const lines = text.split("\n");
      for (let i = 0; i < lines.length; i++) {
        if (lines[i]!.trim() === "") continue;
        const where = `${file}:${i + 1}`;
        const raw = yield* Effect.try({
          try: () => JSON.parse(lines[i]!) as unknown,
          catch: fileError(where, "not JSON"),
        });
        records.push(yield* decodeRecord(raw, where, notes));
      }
    } else if (manifest !== undefined) {
      notes.push(`${file} is missing: the curves come from the newest checkpoint's manifest`);
      for (const [i, raw] of manifest.metrics.entries()) {
        records.push(yield* decodeRecord(raw, `manifest metrics[${i}]`, notes));
      }
    } else {
      return yield* new ReportError({
        path: dir,
        message: `${dir} holds no training run: neither metrics.jsonl nor a checkpoint manifest in checkpoints/`,
      });
    }
    const byEpoch = new Map(records.map((r) => [r.epoch, r]));
    return [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  });

const ConcentrationArtifact = BundleFromBytes(PrototypesSchema);

/** The newest epoch's concentration artifact for this config, if any. */
const latestArtifact = (dir: string, hash: string, notes: string[]) =>
  Effect.gen(function* () {
    const root = `${dir}/artifacts`;
    const epochs = yield* Effect.tryPromise({
      catch: fileError(root, "cannot list"),
      try: async () => {
        const found: number[] = [];
        try {
          for await (const e of Deno.readDir(root)) {
            const m = e.isDirectory ? /^epoch-(\d+)$/.exec(e.name) : null;
            if (m) found.push(Number(m[1]));
          }
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
        return found.sort((a, b) => b - a);
      },
    });
    for (const epoch of epochs) {
      const key = `epoch-${epoch}/${hash}/concentration`;
      const file = `${root}/${key}.bin`;
      if (!(yield* exists(file))) continue;
      const read = yield* readArtifact(key, ConcentrationArtifact).pipe(
        Effect.provide(ArtifactStore.directory(root)),
        Effect.result,
      );
      if (read._tag === "Failure") {
        notes.push(`${file} cannot be read (${read.failure.message}); trying an older one`);
        continue;
      }
      if (Option.isNone(read.success)) continue;
      const r = read.success.value;
      return {
        source: "artifact",
        file,
        epoch,
        clusterings: r.clusterings.map((c) => ({
          k: c.k,
          phi: c.concentration,
          im2cluster: c.im2cluster,
          distances: c.distances,
        })),
      } satisfies EStepView;
    }
    return undefined;
  });

/** The prototypes held by the newest checkpoint (no distances: the features are not saved). */
const checkpointPrototypes = (manifestPath: string, manifest: ManifestView, notes: string[]) =>
  Effect.gen(function* () {
    const file = manifestPath.replace(/\.json$/, ".safetensors");
    const read = yield* Effect.result(readSafetensors(file));
    if (read._tag === "Failure") {
      notes.push(`${file} cannot be read (${read.failure.message}); no prototypes are shown`);
      return undefined;
    }
    const t = read.success.tensors;
    const clusterings: ClusteringView[] = [];
    for (let m = 0;; m++) {
      const phi = t.get(`prototypes.${m}.concentration`), im2cluster = t.get(`prototypes.${m}.im2cluster`);
      if (phi?.dtype !== "F32" || im2cluster?.dtype !== "I32") break;
      clusterings.push({ k: phi.data.length, phi: phi.data, im2cluster: im2cluster.data, distances: undefined });
    }
    if (clusterings.length === 0) return undefined;
    return { source: "checkpoint", file, epoch: manifest.epoch, clusterings } satisfies EStepView;
  });

/** The training images, or a note saying why they could not be had. */
const trainingImages = (manifest: ManifestView, estep: EStepView, notes: string[]) =>
  Effect.gen(function* () {
    const source = Schema.decodeUnknownOption(Source)(manifest.config.train);
    if (Option.isNone(source)) {
      notes.push("the config's train source is not understood, so the prototype galleries are not shown");
      return undefined;
    }
    const read = yield* Effect.result(readSource(source.value));
    if (read._tag === "Failure") {
      notes.push(`the training images cannot be reloaded (${read.failure.message}); no prototype galleries`);
      return undefined;
    }
    const host = read.success;
    const n = estep.clusterings[0]?.im2cluster.length ?? 0;
    if (host.info.n !== n) {
      notes.push(
        `the train source now has ${host.info.n} images but the E-step clustered ${n}; no prototype galleries`,
      );
      return undefined;
    }
    return host;
  });

export interface LoadOptions {
  /**
   * Reload the training images for the galleries (default true). The whole train source is read again, which is
   * quick for the embedded and binary datasets but slow for a large image folder.
   */
  readonly images?: boolean;
}

/** Everything the page needs from `dir`. */
export const loadRun = (dir: string, options: LoadOptions = {}): Effect.Effect<RunData, ReportError> =>
  Effect.gen(function* () {
    const notes: string[] = [];
    const newest = yield* newestManifest(dir, notes);
    const metrics = yield* readMetrics(dir, newest?.manifest, notes);
    let estep: EStepView | undefined;
    let dataset: HostDataset | undefined;
    if (newest !== undefined) {
      estep = yield* latestArtifact(dir, newest.manifest.configHash, notes);
      if (estep === undefined) {
        const fromCheckpoint = yield* checkpointPrototypes(newest.path, newest.manifest, notes);
        const warmup = newest.manifest.config.warmupEpochs;
        notes.push(
          fromCheckpoint === undefined
            ? `no E-step artifacts in ${dir}/artifacts and no prototypes in the newest checkpoint: the run has not ` +
              `got past warm-up${typeof warmup === "number" ? ` (warmupEpochs: ${warmup})` : ""}, or it trains ` +
              `without prototypes; no cluster histograms or prototype galleries`
            : `no E-step artifacts in ${dir}/artifacts: the histograms come from the newest checkpoint's ` +
              `prototypes, and without the distances to the centroids there are no prototype galleries`,
        );
        estep = fromCheckpoint;
      } else if (options.images === false) {
        notes.push("prototype galleries were not asked for: the training images were not reloaded");
      } else {
        dataset = yield* trainingImages(newest.manifest, estep, notes);
      }
    }
    return {
      dir,
      metrics,
      manifest: newest?.manifest,
      manifestPath: newest?.path,
      estep,
      dataset,
      notes,
    } satisfies RunData;
  });
