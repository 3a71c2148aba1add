import { Effect, Schema } from "effect";
import { Gpu, type GpuContext } from "../gpu/gpu.ts";
import { formatSafetensors, parseSafetensors, type SafeTensor } from "../io/safetensors.ts";
import type { ParamStore } from "../nn/params.ts";
import type { MStep, PrototypeTensors } from "./mstep.ts";
import { writeFileAtomic } from "../io/atomic.ts";

/**
 * A checkpoint is two files in `DIR/checkpoints/`: `ckpt-EEEE-SSSSSS.safetensors` with every tensor (both encoders'
 * parameters and BN buffers under PyTorch names prefixed `encoder_q.` / `encoder_k.`, the SGD momentum buffers
 * `optimizer.momentum_buffer.<name>`, the `queue`, and the current `prototypes.<m>.*`), and `ckpt-EEEE-SSSSSS.json`,
 * the manifest: position, config, metrics so far and the SHA-256 of the tensors file. Each is written to a temporary
 * name and renamed, the manifest last, so a manifest only ever names a complete tensors file. The manifest carries the
 * SHA-256 of its own other fields (`digest`), so an edited position or config is refused like a corrupt tensor file.
 */
export const FORMAT = "pcl-webgpu-checkpoint/2";

/** The running sums of an epoch in progress: losses and accuracies summed over `steps` steps. */
export interface EpochSums {
  readonly steps: number;
  readonly infoNce: number;
  readonly accInst: number;
  readonly protoNce: readonly number[];
  readonly accProto: readonly number[];
}

export class CheckpointError extends Schema.TaggedError<CheckpointError>()("CheckpointError", {
  path: Schema.String,
  message: Schema.String,
}) {}

export interface Manifest {
  readonly format: string;
  /** The epoch in progress; `step` steps of it are done (all of them when `step === stepsPerEpoch`). */
  readonly epoch: number;
  readonly step: number;
  readonly stepsPerEpoch: number;
  readonly queuePointer: number;
  readonly configHash: string;
  readonly config: unknown;
  /** Randomness is counter-based, keyed by (seed, epoch, step, ...): the position above is all there is to restore. */
  readonly rng: string;
  readonly metrics: readonly unknown[];
  /** A checkpoint within an epoch: the epoch's sums so far, its M-step seconds and its whole wall time so far. */
  readonly progress?: EpochSums & { readonly seconds: number; readonly elapsed: number };
  readonly tensors: { readonly file: string; readonly bytes: number; readonly sha256: string };
  readonly adapter: string;
  readonly createdAt: string;
  readonly digest: string;
}

export interface Checkpoint {
  readonly manifest: Manifest;
  readonly manifestPath: string;
  readonly tensors: ReadonlyMap<string, SafeTensor>;
}

const sha256 = async (bytes: Uint8Array<ArrayBuffer>) =>
  Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)), (b) => b.toString(16).padStart(2, "0"))
    .join("");

/** The SHA-256 of a manifest's fields other than `digest`, in the order they were written. */
const manifestDigest = (m: Omit<Manifest, "digest">) => {
  const { digest: _, ...rest } = m as Manifest;
  return sha256(new TextEncoder().encode(JSON.stringify(rest)));
};

const stem = (epoch: number, step: number) => `ckpt-${String(epoch).padStart(4, "0")}-${String(step).padStart(6, "0")}`;

/** The named tensors of a parameter store (parameters, then buffers), read from the GPU. */
const storeTensors = async (gpu: GpuContext, store: ParamStore, prefix: string, out: Map<string, SafeTensor>) => {
  const state = await store.stateDict(gpu);
  for (const e of [...store.parameters, ...store.bufferNames]) {
    out.set(`${prefix}${e.name}`, { dtype: "F32", shape: e.shape, data: state.get(e.name)! });
  }
};

/** Everything the M-step needs to continue exactly, as named host tensors. */
export const captureTensors = async (
  gpu: GpuContext,
  m: MStep,
  prototypes: readonly PrototypeTensors[] | undefined,
) => {
  const out = new Map<string, SafeTensor>();
  await storeTensors(gpu, m.query.params, "encoder_q.", out);
  await storeTensors(gpu, m.key.params, "encoder_k.", out);
  const momentum = await gpu.read(m.momentumBuffer);
  for (const e of m.query.params.parameters) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    out.set(`optimizer.momentum_buffer.${e.name}`, {
      dtype: "F32",
      shape: e.shape,
      data: momentum.slice(e.offset, e.offset + n),
    });
  }
  const queue = m.queue;
  out.set("queue", { dtype: "F32", shape: queue.shape, data: await gpu.read(queue) });
  prototypes?.forEach((c, i) => {
    const k = c.concentration.length;
    out.set(`prototypes.${i}.centroids`, { dtype: "F32", shape: [k, c.prototypes.length / k], data: c.prototypes });
    out.set(`prototypes.${i}.concentration`, { dtype: "F32", shape: [k], data: c.concentration });
    out.set(`prototypes.${i}.im2cluster`, { dtype: "I32", shape: [c.im2cluster.length], data: c.im2cluster });
  });
  return out;
};

const f32 = (t: ReadonlyMap<string, SafeTensor>, name: string, path: string): Float32Array<ArrayBuffer> => {
  const v = t.get(name);
  if (v === undefined || v.dtype !== "F32") {
    throw new CheckpointError({ path, message: `${path}: tensor '${name}' is missing or not F32` });
  }
  return v.data;
};

/** A parameter store's tensors in a checkpoint, under `prefix` (`encoder_q.`, `encoder_k.`), checked (throws). */
const storeState = (c: Checkpoint, store: ParamStore, prefix: string) =>
  new Map(
    [...store.parameters, ...store.bufferNames].map((e) => [e.name, f32(c.tensors, prefix + e.name, c.manifestPath)]),
  );

/** Writes a checkpoint's encoder (`prefix` `encoder_q.` or `encoder_k.`) into a parameter store of the same shape. */
export const loadEncoderState = (c: Checkpoint, store: ParamStore, prefix: string) =>
  Effect.try({
    try: () => storeState(c, store, prefix),
    catch: (e) =>
      e instanceof CheckpointError
        ? e
        : new CheckpointError({ path: c.manifestPath, message: `${c.manifestPath}: ${e}` }),
  }).pipe(
    Effect.flatMap((state) => store.loadState(state)),
    Effect.mapError((e) =>
      e instanceof CheckpointError
        ? e
        : new CheckpointError({ path: c.manifestPath, message: `${c.manifestPath}: ${e.message}` })
    ),
  );

/** A checkpoint's tensors as the M-step's host state, every name and size checked (throws CheckpointError). */
const hostState = (m: MStep, c: Checkpoint) => {
  const t = c.tensors, path = c.manifestPath;
  const momentum = new Float32Array(m.momentumBuffer.size);
  for (const e of m.query.params.parameters) {
    momentum.set(f32(t, `optimizer.momentum_buffer.${e.name}`, path), e.offset);
  }
  const queue = f32(t, "queue", path);
  if (queue.length !== m.queue.size) {
    throw new CheckpointError({ path, message: `${path}: queue has ${queue.length} values, expected ${m.queue.size}` });
  }
  const pointer = c.manifest.queuePointer;
  if (!Number.isInteger(pointer) || pointer < 0 || pointer >= m.queue.shape[0]! || pointer % m.batch !== 0) {
    throw new CheckpointError({ path, message: `${path}: queue pointer ${pointer} does not fit this run's queue` });
  }
  const prototypes: PrototypeTensors[] = [];
  for (let i = 0; t.has(`prototypes.${i}.centroids`); i++) {
    const im2cluster = t.get(`prototypes.${i}.im2cluster`);
    if (im2cluster?.dtype !== "I32") {
      throw new CheckpointError({ path, message: `${path}: prototypes.${i}.im2cluster is missing or not I32` });
    }
    prototypes.push({
      prototypes: f32(t, `prototypes.${i}.centroids`, path),
      concentration: f32(t, `prototypes.${i}.concentration`, path),
      im2cluster: im2cluster.data,
    });
  }
  return {
    query: storeState(c, m.query.params, "encoder_q."),
    key: storeState(c, m.key.params, "encoder_k."),
    momentum,
    queue,
    prototypes: prototypes.length > 0 ? prototypes : undefined,
  };
};

/**
 * Writes a checkpoint's tensors back into the M-step's GPU state; returns the prototypes it held, if any. Everything
 * is checked before anything is written.
 */
export const restoreTensors = (m: MStep, c: Checkpoint) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const path = c.manifestPath;
    const host = yield* Effect.try({
      try: () => hostState(m, c),
      catch: (e) => e instanceof CheckpointError ? e : new CheckpointError({ path, message: `${path}: ${e}` }),
    });
    const asCheckpointError = (e: { readonly message: string }) =>
      new CheckpointError({ path, message: `${path}: ${e.message}` });
    yield* m.query.params.loadState(host.query).pipe(Effect.mapError(asCheckpointError));
    yield* m.key.params.loadState(host.key).pipe(Effect.mapError(asCheckpointError));
    gpu.write(m.momentumBuffer, host.momentum);
    gpu.write(m.queue, host.queue);
    m.queuePointer = c.manifest.queuePointer;
    return host.prototypes;
  });

/**
 * Writes a checkpoint and removes all but the newest `keep`, and the end of the warm-up (`warmupEnd`, if given): the
 * point where a PCL run and its InfoNCE-only baseline part ways (`TrainOptions.warmStart`). Returns the manifest's path.
 */
export const saveCheckpoint = (
  dir: string,
  tensors: ReadonlyMap<string, SafeTensor>,
  manifest: Omit<Manifest, "format" | "tensors" | "createdAt" | "digest">,
  keep: number,
  warmupEnd?: { readonly epoch: number; readonly step: number },
) =>
  Effect.tryPromise({
    try: async () => {
      await Deno.mkdir(dir, { recursive: true });
      const name = stem(manifest.epoch, manifest.step);
      const bytes = formatSafetensors(tensors, { format: FORMAT });
      await writeFileAtomic(`${dir}/${name}.safetensors`, bytes);
      const fields: Omit<Manifest, "digest"> = {
        format: FORMAT,
        ...manifest,
        tensors: { file: `${name}.safetensors`, bytes: bytes.length, sha256: await sha256(bytes) },
        createdAt: new Date().toISOString(),
      };
      const full: Manifest = { ...fields, digest: await manifestDigest(fields) };
      await writeFileAtomic(`${dir}/${name}.json`, JSON.stringify(full, null, 2) + "\n");
      // Never the one just written: after --from-checkpoint an older position can sort below abandoned newer ones.
      const kept = [name, warmupEnd && stem(warmupEnd.epoch, warmupEnd.step)].map((n) => `${dir}/${n}.json`);
      for (const old of (await listManifests(dir)).filter((p) => !kept.includes(p)).slice(keep - 1)) {
        await Deno.remove(old).catch(() => {});
        await Deno.remove(old.replace(/\.json$/, ".safetensors")).catch(() => {});
      }
      return `${dir}/${name}.json`;
    },
    catch: (e) => new CheckpointError({ path: dir, message: `writing a checkpoint in ${dir} failed: ${e}` }),
  });

/** Manifest paths in `dir`, newest first (by epoch, then step: the names sort that way). */
export const listManifests = async (dir: string): Promise<string[]> => {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && /^ckpt-\d{4}-\d{6}\.json$/.test(e.name)) names.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return names.sort().reverse().map((n) => `${dir}/${n}`);
};

/** The newest manifest of `epoch` in `dir` (the one at its highest step), if any. */
export const newestOfEpoch = async (dir: string, epoch: number) => {
  const prefix = `${dir}/${stem(epoch, 0).slice(0, -"000000".length)}`;
  return (await listManifests(dir)).find((p) => p.startsWith(prefix));
};

/** Reads a checkpoint and verifies its tensors file against the manifest's size and checksum. */
export const loadCheckpoint = (manifestPath: string) =>
  Effect.tryPromise({
    try: async (): Promise<Checkpoint> => {
      const bad = (message: string) =>
        new CheckpointError({ path: manifestPath, message: `${manifestPath}: ${message}` });
      let manifest: Manifest;
      try {
        manifest = JSON.parse(await Deno.readTextFile(manifestPath));
      } catch (e) {
        throw bad(`unreadable manifest (${(e as Error).message})`);
      }
      if (manifest.format !== FORMAT) {
        throw bad(
          `unknown format '${manifest.format}' (expected ${FORMAT})` +
            (manifest.format === "pcl-webgpu-checkpoint/1" ? ": written by an older version; pass --fresh" : ""),
        );
      }
      if (manifest.digest !== await manifestDigest(manifest)) {
        throw bad("the manifest was edited or is corrupt (its digest does not match its fields)");
      }
      const file = manifestPath.replace(/[^/]*$/, manifest.tensors.file);
      const bytes = await Deno.readFile(file).catch(() => {
        throw bad(`its tensors file ${file} is missing`);
      });
      if (bytes.length !== manifest.tensors.bytes || await sha256(bytes) !== manifest.tensors.sha256) {
        throw bad(`its tensors file ${file} is corrupt or truncated (size or SHA-256 differs from the manifest)`);
      }
      const parsed = parseSafetensors(bytes, file);
      return { manifest, manifestPath, tensors: parsed.tensors };
    },
    catch: (e) =>
      e instanceof CheckpointError ? e : new CheckpointError({ path: manifestPath, message: `${manifestPath}: ${e}` }),
  });
