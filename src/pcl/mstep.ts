import { Effect, Schema } from "effect";
import { Draws, NormalRng, Stream } from "../data/rng.ts";
import { Gpu, type GpuContext } from "../gpu/gpu.ts";
import { alloc, type Dispatch, recordPass } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { type ContrastiveLoss, contrastiveLoss } from "../ops/contrastive.ts";
import { copy, type CopyAt, copyAt } from "../ops/fill.ts";
import { gatherRows } from "../ops/gather.ts";
import { emaUpdate, type SgdStep, sgdStep } from "../ops/optim.ts";
import { bindEncoder, type Encoder } from "../nn/models.ts";
import type { PrototypeSet } from "./concentration.ts";

/** The M-step's settings (docs/algorithm.md §2, §5, §6). */
export interface MStepConfig {
  /** τ of InfoNCE; the E-step also rescales φ to mean τ. */
  readonly temperature: number;
  /** r: keys in the InfoNCE queue; a multiple of the batch size. */
  readonly queueSize: number;
  /** Negative prototypes sampled per clustering and step (the official code uses r for both). */
  readonly negatives: number;
  readonly keyMomentum: number;
  /** Mask the columns of other rows that share row i's prototype (the official code keeps them: its issue #5). */
  readonly maskDuplicatePositives: boolean;
  /**
   * Our single-device stand-in for ShuffleBN: both encoders normalise over this many sub-batches, and the key batch
   * is shuffled across them (and unshuffled after the key encoder), so q_i and k_i never share batch statistics.
   */
  readonly bnGroups: number;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly seed: number;
}

/**
 * Where the M-step's two views of a batch come from: `outputs[0]` (query) and `outputs[1]` (key), each [B, C, S, S];
 * `dispatches` fill them and are recorded first in every step; `setStep` is called before each step with the batch's
 * dataset indices. An `Augmenter` (src/ops/augment.ts) is one; `fixedViews` is one whose views you write yourself.
 */
export interface ViewSource {
  readonly batch: number;
  readonly outputs: ReadonlyArray<Tensor<"f32">>;
  readonly dispatches: ReadonlyArray<Dispatch>;
  readonly setStep: (epoch: number, step: number, indices: ArrayLike<number>) => void;
}

/** Views held in two given tensors and left as they are: for tests and for augmentation done elsewhere. */
export const fixedViews = (query: Tensor<"f32">, key: Tensor<"f32">): ViewSource => ({
  batch: query.shape[0]!,
  outputs: [query, key],
  dispatches: [],
  setStep: () => {},
});

/** What the M-step uses of one clustering of the E-step: prototypes (K x d), φ (K) and assignments (N). */
export type PrototypeTensors = Pick<PrototypeSet, "prototypes" | "concentration" | "im2cluster">;

export class MStepError extends Schema.TaggedError<MStepError>()("MStepError", { message: Schema.String }) {}

/** Losses and accuracies of one step (ProtoNCE per clustering, empty during warm-up). */
export interface StepMetrics {
  readonly infoNce: number;
  readonly accInst: number;
  readonly protoNce: readonly number[];
  readonly accProto: readonly number[];
}

/** Per clustering: where its prototypes (over φ) live, which columns a step uses, and its loss. */
interface ProtoHead {
  readonly k: number;
  readonly table: Tensor<"f32">;
  readonly sel: Tensor<"u32">;
  readonly selHost: Uint32Array<ArrayBuffer>;
  readonly loss: ContrastiveLoss;
  readonly gather: Dispatch;
  im2cluster: Int32Array | undefined;
  warned: boolean;
}

const SLOT = 64; // metrics are 1-element views 256 bytes apart (storage binding offsets must be 256-byte aligned)

/**
 * Steps whose metrics are kept on the GPU and read back together. A readback holds the JS thread until the device has
 * finished everything submitted, then resolves no sooner than 10 ms later (Deno's map polling): read after every
 * step, it would leave the device idle while the next step is recorded and cap training at ~100 steps/s.
 */
export const METRICS_RING = 16;

/** Steps recorded since the last read of the ring, and that read once it has started. */
interface RingBatch {
  read: Promise<Float32Array> | undefined;
}

/**
 * The M-step for one batch size: augmented views in, two encoder passes, InfoNCE (+ ProtoNCE per clustering when
 * prototypes are set), backward, SGD, the momentum update and the enqueue, recorded into one command encoder and
 * one submit per step. The order is the official code's: the key encoder is updated before it computes the keys;
 * the keys are enqueued after the losses.
 */
export class MStep {
  private ptr = 0;
  private readonly perm: Uint32Array<ArrayBuffer>;
  private readonly inverse: Uint32Array<ArrayBuffer>;
  private readonly scratch: Uint32Array<ArrayBuffer>;
  private ringFilled = 0;
  private ringBatch: RingBatch = { read: undefined };

  private constructor(
    private readonly gpu: GpuContext,
    readonly config: MStepConfig,
    readonly query: Encoder,
    readonly key: Encoder,
    /** The views each step trains on. */
    readonly views: ViewSource,
    /** Row i of the InfoNCE table is k_i; rows N.. are the queue (a ring of r keys). */
    readonly keys: Tensor<"f32">,
    /** SGD momentum of the query encoder's parameters. */
    readonly momentumBuffer: Tensor<"f32">,
    private readonly metrics: Tensor<"f32">,
    /** METRICS_RING copies of `metrics`, one per step since the last read. */
    private readonly ring: Tensor<"f32">,
    private readonly permutation: { readonly perm: Tensor<"u32">; readonly inverse: Tensor<"u32"> } | undefined,
    private readonly instance: readonly Dispatch[],
    private readonly heads: readonly ProtoHead[],
    private readonly backward: readonly Dispatch[],
    private readonly sgd: SgdStep,
    private readonly enqueue: CopyAt,
  ) {
    const n = views.batch;
    this.perm = new Uint32Array(n);
    this.inverse = new Uint32Array(n);
    this.scratch = new Uint32Array(Math.max(0, ...heads.map((h) => h.k)));
  }

  get batch(): number {
    return this.views.batch;
  }

  /** The queue's write pointer (in keys), for checkpoints. */
  get queuePointer(): number {
    return this.ptr;
  }

  set queuePointer(p: number) {
    if (!Number.isInteger(p) || p < 0 || p >= this.config.queueSize || p % this.batch !== 0) {
      throw new RangeError(`queue pointer ${p} is not a multiple of ${this.batch} in [0, ${this.config.queueSize})`);
    }
    this.ptr = p;
  }

  /** The queue alone (r x d), a view of the InfoNCE table's rows N.. (for checkpoints). */
  get queue(): Tensor<"f32"> {
    return this.keys.rows(this.batch, this.config.queueSize);
  }

  static prepare = Effect.fn("MStep.prepare")(function* (
    query: Encoder,
    key: Encoder,
    views: ViewSource,
    clusterSizes: readonly number[],
    config: MStepConfig,
  ) {
    const gpu = yield* Gpu;
    const n = views.batch;
    const { queueSize: r, bnGroups } = config;
    if (r < n || r % n !== 0) {
      return yield* new MStepError({ message: `queue size ${r} must be a positive multiple of the batch size ${n}` });
    }
    if (!Number.isInteger(bnGroups) || bnGroups < 1 || n % bnGroups !== 0 || n / bnGroups < 2) {
      return yield* new MStepError({
        message: `bnGroups ${bnGroups} must divide the batch size ${n} into sub-batches of at least 2`,
      });
    }
    if (query.spec.dim !== key.spec.dim || query.params.values.size !== key.params.values.size) {
      return yield* new MStepError({ message: "the query and key encoders must have the same architecture" });
    }
    const d = query.spec.dim;
    const [viewQ, viewK] = views.outputs;
    if (viewQ === undefined || viewK === undefined) {
      return yield* new MStepError({ message: "the view source must give two views per image" });
    }

    // Keys: the key batch is shuffled across BN groups, encoded, and unshuffled (ShuffleBN's single-device form).
    const shuffle = bnGroups > 1;
    const permutation = shuffle
      ? { perm: yield* alloc([n], "u32", "keys.perm"), inverse: yield* alloc([n], "u32", "keys.inverse") }
      : undefined;
    const flatK = viewK.reshape([n, viewK.size / n]);
    const keyInput = shuffle ? yield* alloc(viewK.shape, "f32", "keys.shuffled") : viewK;
    const bnOpts = { bnGroups };
    const k = yield* bindEncoder(key, keyInput, { train: true, grad: false, ...bnOpts });
    const q = yield* bindEncoder(query, viewQ, { train: true, grad: true, ...bnOpts });
    const keys = yield* alloc([n + r, d], "f32", "keys");
    const zk = shuffle ? yield* alloc([n, d], "f32", "keys.z") : k.z;
    gpu.write(keys, initialQueue(n, r, d, config.seed));

    const metrics = yield* alloc([(2 + 2 * clusterSizes.length) * SLOT], "f32", "metrics");
    const ring = yield* alloc([METRICS_RING * metrics.size], "f32", "metrics ring");
    const slot = (i: number) => metrics.rows(i * SLOT, 1);
    const instSel = yield* alloc([n + r], "u32", "keys.sel");
    const ema = yield* emaUpdate(key.params.values, query.params.values, config.keyMomentum);
    const infoNce = yield* contrastiveLoss(q.z, keys, instSel, { loss: slot(0), accuracy: slot(1) }, q.dz!, {
      scale: 1 / config.temperature,
      weight: 1,
      mode: "all",
      accumulate: false,
    });
    const instance: Dispatch[] = [
      ...views.dispatches,
      ema,
      ...(permutation ? [yield* gatherRows(flatK, permutation.perm, keyInput.reshape([n, viewK.size / n]))] : []),
      ...k.forward,
      ...(permutation ? [yield* gatherRows(k.z, permutation.inverse, zk)] : []),
      yield* copy(zk, keys.rows(0, n)),
      ...q.forward,
      ...infoNce.forward,
      ...infoNce.backward, // writes dq; each clustering's ProtoNCE adds its share after it
    ];

    const heads: ProtoHead[] = [];
    for (const [m, kClusters] of clusterSizes.entries()) {
      const cols = n + config.negatives;
      const table = yield* alloc([kClusters, d], "f32", `prototypes.${m}`);
      const sel = yield* alloc([cols], "u32", `prototypes.${m}.sel`);
      const selected = yield* alloc([cols, d], "f32", `prototypes.${m}.selected`);
      const loss = yield* contrastiveLoss(
        q.z,
        selected,
        sel,
        { loss: slot(2 + 2 * m), accuracy: slot(3 + 2 * m) },
        q.dz!,
        {
          scale: 1,
          weight: 1 / clusterSizes.length,
          mode: config.maskDuplicatePositives ? "same" : "none",
          accumulate: true,
        },
      );
      heads.push({
        k: kClusters,
        table,
        sel,
        selHost: new Uint32Array(cols),
        loss,
        gather: yield* gatherRows(table, sel, selected),
        im2cluster: undefined,
        warned: false,
      });
    }
    const momentumBuffer = yield* alloc(query.params.values.shape, "f32", "sgd.momentum");
    const sgd = yield* sgdStep(query.params.values, query.params.grads, momentumBuffer, config);
    const enqueue = yield* copyAt(zk, keys, n * d);
    const backward = [...q.backward, sgd];
    // The key encoder starts as a copy of the query encoder (parameters; BN buffers start equal anyway).
    yield* Effect.promise(async () => gpu.write(key.params.values, await gpu.read(query.params.values)));
    return new MStep(
      gpu,
      config,
      query,
      key,
      views,
      keys,
      momentumBuffer,
      metrics,
      ring,
      permutation,
      instance,
      heads,
      backward,
      sgd,
      enqueue,
    );
  });

  /** The last step's shuffle of the key batch across the BN groups (none when `bnGroups` is 1): for tests. */
  keyPermutation(): Uint32Array<ArrayBuffer> | undefined {
    return this.permutation === undefined ? undefined : this.perm.slice();
  }

  /**
   * The columns the last step gave clustering `m`'s ProtoNCE: the batch rows' own prototypes, then the sampled
   * negatives (`sampleColumns`), of which the first `valid` are used: for tests.
   */
  sampledColumns(m: number): Uint32Array<ArrayBuffer> {
    const h = this.heads.filter((h) => h.im2cluster !== undefined)[m];
    if (h === undefined) throw new RangeError(`no clustering ${m} is set`);
    return h.selHost.slice();
  }

  /** Sets the E-step's clusterings for the coming epoch, or none (warm-up: InfoNCE only). */
  setPrototypes(clusterings: readonly PrototypeTensors[] | undefined): void {
    if (clusterings === undefined) {
      for (const h of this.heads) h.im2cluster = undefined;
      return;
    }
    if (clusterings.length !== this.heads.length) {
      throw new RangeError(`${clusterings.length} clusterings for ${this.heads.length} prototype heads`);
    }
    const d = this.query.spec.dim;
    clusterings.forEach((c, m) => {
      const h = this.heads[m];
      if (c.concentration.length !== h.k || c.prototypes.length !== h.k * d) {
        throw new RangeError(`clustering ${m}: expected ${h.k} prototypes of dimension ${d}`);
      }
      // ProtoNCE's logit q·c/φ per column: each prototype row divided by its φ once per epoch.
      const scaled = new Float32Array(h.k * d);
      for (let j = 0; j < h.k; j++) {
        for (let i = 0; i < d; i++) scaled[j * d + i] = c.prototypes[j * d + i] / c.concentration[j];
      }
      this.gpu.write(h.table, scaled);
      h.im2cluster = c.im2cluster;
    });
  }

  setLearningRate(lr: number): void {
    this.sgd.setHyperparameters({ lr });
  }

  /**
   * Records and submits one step on the dataset images `indices` (the sampler's batch `step` of `epoch`). Returns a
   * function that reads the step's metrics, and the notes worth logging once (fewer negative prototypes than asked
   * for). The metrics stay on the GPU, in a ring of METRICS_RING steps, until one of them is asked for: that reads
   * every step recorded since the last read in one readback, which holds the JS thread until the device is done.
   * Ask for a batch of steps at a time, and await them while later steps run.
   */
  step(
    epoch: number,
    step: number,
    indices: ArrayLike<number>,
  ): { metrics: () => Promise<StepMetrics>; notes: string[] } {
    const n = this.batch;
    if (this.ringFilled === METRICS_RING) this.readRing(); // queued before this step overwrites the ring
    this.views.setStep(epoch, step, indices);
    if (this.permutation !== undefined) {
      const draws = new Draws([this.config.seed, Stream.keyShuffle], [epoch, step, 0, 0]);
      shuffleInto(this.perm, draws);
      for (let i = 0; i < n; i++) this.inverse[this.perm[i]] = i;
      this.gpu.write(this.permutation.perm, this.perm);
      this.gpu.write(this.permutation.inverse, this.inverse);
    }
    const short: string[] = []; // clusterings whose free clusters are fewer than the negatives asked for
    const dispatches: Dispatch[] = [...this.instance];
    const active = this.heads.filter((h) => h.im2cluster !== undefined);
    active.forEach((h, m) => {
      const draws = new Draws([this.config.seed, Stream.negatives], [epoch, step, m, 0]);
      const valid = sampleColumns(h.selHost, h.im2cluster!, indices, h.k, this.config.negatives, draws, this.scratch);
      if (valid < n + this.config.negatives && !h.warned) {
        h.warned = true;
        short.push(`K = ${h.k} (${valid - n} free)`);
      }
      h.loss.setValid(valid);
      this.gpu.write(h.sel, h.selHost);
      dispatches.push(h.gather, ...h.loss.forward, ...h.loss.backward);
    });
    const notes = short.length === 0 ? [] : [
      `ProtoNCE: a batch of ${n} leaves fewer than the ${this.config.negatives} negative prototypes asked for ` +
      `free of the batch's own clusters in ${short.join(", ")}; those rows contrast with the batch's other ` +
      `prototypes and every free cluster, as the official code does when K is small`,
    ];
    this.enqueue.setOffset((n + this.ptr) * this.query.spec.dim);
    this.ptr = (this.ptr + n) % this.config.queueSize;
    dispatches.push(...this.backward, this.enqueue);
    const enc = recordPass(this.gpu, dispatches, `step ${epoch}.${step}`);
    const [batch, slot, size] = [this.ringBatch, this.ringFilled++, this.metrics.byteLength];
    enc.copyBufferToBuffer(this.metrics.buffer, this.metrics.offset, this.ring.buffer, slot * size, size);
    this.gpu.device.queue.submit([enc.finish()]);
    return {
      metrics: async () => {
        if (batch === this.ringBatch) this.readRing();
        const v = await batch.read!;
        const at = (i: number) => v[(slot * size) / 4 + i * SLOT];
        return {
          infoNce: at(0),
          accInst: at(1),
          protoNce: active.map((_, m) => at(2 + 2 * m)),
          accProto: active.map((_, m) => at(3 + 2 * m)),
        };
      },
      notes,
    };
  }

  /** Starts the read of the steps in the ring (the current batch) and begins a new batch. */
  private readRing(): void {
    const enc = this.gpu.device.createCommandEncoder({ label: "metrics ring" });
    const pending = this.gpu.readAfter(enc, this.ring.rows(0, this.ringFilled * this.metrics.size));
    this.gpu.device.queue.submit([enc.finish()]);
    this.ringBatch.read = pending();
    [this.ringBatch, this.ringFilled] = [{ read: undefined }, 0];
  }
}

/**
 * Writes clustering m's columns for a batch into `sel`: the positives im2cluster[index] first, then negatives drawn
 * without replacement, uniformly, from the clusters that are no positive of the batch (`draws` keyed by seed, epoch,
 * step and m). Returns the number of columns in use: N + min(r, clusters left). `scratch` holds K words.
 */
export const sampleColumns = (
  sel: Uint32Array,
  im2cluster: Int32Array,
  indices: ArrayLike<number>,
  k: number,
  r: number,
  draws: Draws,
  scratch: Uint32Array,
): number => {
  const n = indices.length;
  scratch.fill(0, 0, k);
  for (let i = 0; i < n; i++) {
    const c = im2cluster[indices[i]];
    sel[i] = c;
    scratch[c] = 1;
  }
  let free = 0;
  for (let c = 0; c < k; c++) if (scratch[c] === 0) scratch[free++] = c; // free < c: overwrites only visited words
  const used = Math.min(r, free);
  for (let t = 0; t < used; t++) { // partial Fisher-Yates: the first `used` of a uniform permutation of the free set
    const j = t + draws.int(t, free - t);
    const pick = scratch[j];
    scratch[j] = scratch[t];
    scratch[t] = pick;
    sel[n + t] = pick;
  }
  sel.fill(0, n + used);
  return n + used;
};

/** A uniform permutation of 0..n-1 (Fisher-Yates) from addressed draws. */
const shuffleInto = (perm: Uint32Array, draws: Draws) => {
  for (let i = 0; i < perm.length; i++) perm[i] = i;
  for (let j = perm.length - 1; j > 0; j--) {
    const k = draws.int(perm.length - 1 - j, j + 1);
    const t = perm[j];
    perm[j] = perm[k];
    perm[k] = t;
  }
};

/** The InfoNCE table's first contents: zero key rows, then r queue keys ~ N(0, 1), each L2-normalised, seeded. */
const initialQueue = (n: number, r: number, d: number, seed: number): Float32Array<ArrayBuffer> => {
  const rng = new NormalRng((seed ^ Stream.queue * 0x9e3779b9) >>> 0);
  const table = new Float32Array((n + r) * d);
  for (let j = n; j < n + r; j++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += (table[j * d + i] = rng.normal()) ** 2;
    const inv = 1 / Math.sqrt(s);
    for (let i = 0; i < d; i++) table[j * d + i] *= inv;
  }
  return table;
};
