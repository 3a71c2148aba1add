import { Effect, Schema } from "effect";
import { Gpu, type GpuContext } from "../gpu/gpu.ts";
import { NormalRng } from "../data/rng.ts";
import { alloc } from "../gpu/kernel.ts";
import { numel, Tensor } from "../gpu/tensor.ts";

/** Storage-binding offsets must be multiples of 256 bytes: every tensor in a flat store starts on a 64-float line. */
const ALIGN = 64;
const aligned = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** How a parameter or buffer starts: constant, or drawn from a seeded distribution (PyTorch's default inits). */
export type Init =
  | { readonly kind: "constant"; readonly value: number }
  | { readonly kind: "normal"; readonly std: number }
  | { readonly kind: "uniform"; readonly bound: number };

/** A named tensor of a flat store: its shape and where it starts, in floats. */
export interface StoreEntry {
  readonly name: string;
  readonly shape: readonly number[];
  readonly offset: number;
}

interface Entry extends StoreEntry {
  readonly init: Init;
}

/** A state (a checkpoint, another model's tensors) that does not fit a store: a missing name or a wrong size. */
export class StateDictError extends Schema.TaggedError<StateDictError>()("StateDictError", {
  message: Schema.String,
}) {}

/** A tensor of a flat store: a named view, valid once the store is allocated. */
export class Slot {
  #view: Tensor<"f32"> | undefined;
  #grad: Tensor<"f32"> | undefined;
  constructor(readonly name: string, readonly shape: readonly number[]) {}

  get value(): Tensor<"f32"> {
    if (this.#view === undefined) throw new Error(`'${this.name}' is used before its store was allocated`);
    return this.#view;
  }

  /** The gradient view (parameters only); undefined for buffers. */
  get grad(): Tensor<"f32"> {
    if (this.#grad === undefined) throw new Error(`'${this.name}' has no gradient (a buffer, or not allocated)`);
    return this.#grad;
  }

  /** @internal */
  attach(view: Tensor<"f32">, grad: Tensor<"f32"> | undefined) {
    this.#view = view;
    this.#grad = grad;
  }
}

/**
 * Collects a model's named parameters and buffers (PyTorch names such as `layer1.0.conv1.weight`), then lays them out
 * in flat stores: one for parameter values, one of the same layout for their gradients, one for buffers (BN running
 * statistics). The optimizer, the momentum (EMA) update and checkpoints then each act on one tensor per store.
 */
export class ParamBuilder {
  private constructor(private readonly layout: Layout, private readonly prefix: string) {}

  static create(): ParamBuilder {
    return new ParamBuilder({ params: [], buffers: [], slots: new Map(), paramSize: 0, bufferSize: 0 }, "");
  }

  /** A builder whose names are `prefix.name`; it adds to the same stores. */
  scope(name: string | number): ParamBuilder {
    return new ParamBuilder(this.layout, this.qualify(String(name)));
  }

  param(name: string, shape: readonly number[], init: Init): Slot {
    const entry = { name: this.qualify(name), shape, init, offset: this.layout.paramSize };
    this.layout.paramSize += aligned(numel(shape));
    this.layout.params.push(entry);
    return this.slot(entry);
  }

  buffer(name: string, shape: readonly number[], init: Init): Slot {
    const entry = { name: this.qualify(name), shape, init, offset: this.layout.bufferSize };
    this.layout.bufferSize += aligned(numel(shape));
    this.layout.buffers.push(entry);
    return this.slot(entry);
  }

  /** Allocates the stores, draws the initial values with `seed` and uploads them. */
  allocate(seed: number, label = "model") {
    const layout = this.layout;
    return Effect.gen(function* () {
      const gpu = yield* Gpu;
      const values = yield* alloc([Math.max(layout.paramSize, ALIGN)], "f32", `${label}.params`);
      const grads = yield* alloc([Math.max(layout.paramSize, ALIGN)], "f32", `${label}.grads`);
      const buffers = yield* alloc([Math.max(layout.bufferSize, ALIGN)], "f32", `${label}.buffers`);
      const rng = new NormalRng(seed);
      gpu.write(values, fillHost(layout.params, layout.paramSize, rng));
      gpu.write(buffers, fillHost(layout.buffers, layout.bufferSize, rng));
      for (const e of layout.params) layout.slots.get(e.name)!.attach(view(values, e), view(grads, e));
      for (const e of layout.buffers) layout.slots.get(e.name)!.attach(view(buffers, e), undefined);
      return new ParamStore(values, grads, buffers, layout.params, layout.buffers);
    });
  }

  private qualify(name: string) {
    return this.prefix === "" ? name : `${this.prefix}.${name}`;
  }

  private slot(entry: Entry) {
    if (this.layout.slots.has(entry.name)) throw new Error(`duplicate parameter or buffer name '${entry.name}'`);
    const s = new Slot(entry.name, entry.shape);
    this.layout.slots.set(entry.name, s);
    return s;
  }
}

interface Layout {
  readonly params: Entry[];
  readonly buffers: Entry[];
  readonly slots: Map<string, Slot>;
  paramSize: number;
  bufferSize: number;
}

const view = (store: Tensor<"f32">, e: Entry) => new Tensor(store.buffer, e.shape, "f32", e.offset * 4);

const fillHost = (entries: readonly Entry[], size: number, rng: NormalRng) => {
  const host = new Float32Array(Math.max(size, ALIGN));
  for (const e of entries) {
    const n = numel(e.shape);
    for (let i = 0; i < n; i++) {
      host[e.offset + i] = e.init.kind === "constant"
        ? e.init.value
        : e.init.kind === "normal"
        ? e.init.std * rng.normal()
        : e.init.bound * (2 * rng.uniform() - 1);
    }
  }
  return host;
};

/** A model's allocated stores and the layout that names every tensor in them. */
export class ParamStore {
  constructor(
    readonly values: Tensor<"f32">,
    readonly grads: Tensor<"f32">,
    readonly buffers: Tensor<"f32">,
    private readonly paramEntries: readonly Entry[],
    private readonly bufferEntries: readonly Entry[],
  ) {}

  /** Parameters in declaration order (PyTorch's `state_dict` order), with their offsets in floats in the stores. */
  get parameters(): ReadonlyArray<StoreEntry> {
    return this.paramEntries;
  }

  get bufferNames(): ReadonlyArray<StoreEntry> {
    return this.bufferEntries;
  }

  get parameterCount(): number {
    return this.paramEntries.reduce((n, e) => n + numel(e.shape), 0);
  }

  /** Every parameter and buffer by name, read from the GPU (for checkpoints and tests). */
  async stateDict(gpu: GpuContext): Promise<Map<string, Float32Array<ArrayBuffer>>> {
    const [values, buffers] = await Promise.all([gpu.read(this.values), gpu.read(this.buffers)]);
    const out = new Map<string, Float32Array<ArrayBuffer>>();
    for (const e of this.paramEntries) out.set(e.name, values.slice(e.offset, e.offset + numel(e.shape)));
    for (const e of this.bufferEntries) out.set(e.name, buffers.slice(e.offset, e.offset + numel(e.shape)));
    return out;
  }

  /**
   * Writes tensors by name (a checkpoint, or another model's state) into the stores. A missing name or a wrong size
   * fails with a StateDictError before anything is written; names the model does not have are ignored.
   */
  loadState(state: ReadonlyMap<string, Float32Array<ArrayBuffer>>): Effect.Effect<void, StateDictError, Gpu> {
    return Effect.gen({ self: this }, function* () {
      const bad = this.checkState(state);
      if (bad !== undefined) return yield* bad;
      this.writeState(yield* Gpu, state);
    });
  }

  private get entries() {
    return [
      ...this.paramEntries.map((e) => [e, this.values] as const),
      ...this.bufferEntries.map((e) => [e, this.buffers] as const),
    ];
  }

  private checkState(state: ReadonlyMap<string, Float32Array<ArrayBuffer>>): StateDictError | undefined {
    const missing = this.entries.filter(([e]) => state.get(e.name) === undefined).map(([e]) => e.name);
    if (missing.length > 0) return new StateDictError({ message: `state is missing ${missing.join(", ")}` });
    for (const [e] of this.entries) {
      const data = state.get(e.name)!;
      if (data.length !== numel(e.shape)) {
        return new StateDictError({
          message: `'${e.name}' has ${data.length} values, expected [${e.shape}] = ${numel(e.shape)}`,
        });
      }
    }
    return undefined;
  }

  private writeState(gpu: GpuContext, state: ReadonlyMap<string, Float32Array<ArrayBuffer>>): void {
    for (const [e, store] of this.entries) gpu.write(view(store, e), state.get(e.name)!);
  }
}
