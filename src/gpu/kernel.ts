import { Effect } from "effect";
import {
  GpuDeviceLost,
  GpuLimitExceeded,
  GpuOutOfMemory,
  GpuValidationError,
  type ShapeError,
  shapeError,
} from "./errors.ts";
import { Gpu, type GpuContext } from "./gpu.ts";
import { byteLengthOf, type DType, type HostArray, type Tensor } from "./tensor.ts";

/** One recorded kernel launch: pipeline, bind groups and workgroup counts, ready to go into any compute pass. */
export interface Dispatch {
  readonly kernel: string;
  readonly record: (pass: GPUComputePassEncoder) => void;
  /** Rewrites the uniform parameters (e.g. a learning rate or a step counter); ordered before the next submit. */
  readonly setParams: (params: Params) => void;
}

/**
 * A kernel's storage bindings by name: `bindByName(names)(named)` lists `named`'s tensors in binding order (binding i
 * is `names[i]`), with a hole where a binding is not given, as `Launch.tensors` takes them.
 */
export const bindByName =
  <const N extends string>(names: readonly N[]) =>
  (named: { readonly [K in N]?: Tensor | undefined }): Array<Tensor | undefined> => names.map((n) => named[n]);

/**
 * The value of a module-scope `const NAME = <integer>u;` in WGSL source. For sizes the shader's code itself fixes
 * (an unrolled register block), which the host needs to size its grids: read from the shader, never written twice.
 * A missing constant is a programming error and throws when the op's module loads.
 */
export const wgslConstant = (source: string, name: string): number => {
  const m = new RegExp(`^const ${name}\\s*=\\s*(\\d+)u?\\s*;`, "m").exec(source);
  if (m === null) throw new Error(`no 'const ${name} = <integer>;' at the top level of the WGSL source`);
  return Number(m[1]);
};

/** Uniform parameters, packed as WGSL sees them: each entry one 32-bit word (u32, i32 or f32). */
export type Params = ReadonlyArray<readonly [kind: "u32" | "i32" | "f32", value: number]>;

export interface KernelSpec {
  /** Named for error messages and the pipeline cache (usually the file name). */
  readonly name: string;
  readonly source: string;
  readonly entryPoint?: string;
  /** WGSL `override` constants: a different set compiles a different pipeline, once per device. */
  readonly constants?: Record<string, number>;
}

export interface Launch {
  /** Storage buffers at `@group(0) @binding(i)`, in binding order; a hole for a binding this entry point skips. */
  readonly tensors: ReadonlyArray<Tensor | undefined>;
  /** Uniforms at `@group(1) @binding(0)`, when the kernel has any. */
  readonly params?: Params;
  readonly workgroups: readonly [number, number?, number?];
}

const packParams = (params: Params): ArrayBuffer => {
  const words = Math.max(4, Math.ceil(params.length / 4) * 4); // uniform structs are 16-byte multiples
  const buf = new ArrayBuffer(words * 4);
  const view = new DataView(buf);
  params.forEach(([kind, v], i) => {
    if (kind === "f32") view.setFloat32(i * 4, v, true);
    else if (kind === "i32") view.setInt32(i * 4, v, true);
    else view.setUint32(i * 4, v, true);
  });
  return buf;
};

/**
 * Splits a 1-D workgroup count over x and y when it exceeds the per-dimension limit (65535 by default). Kernels
 * recover the flat index as `wid.x + wid.y * nwg.x` and bounds-check it.
 */
export const grid1d = (gpu: GpuContext, groups: number): readonly [number, number] => {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [Math.max(1, groups), 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
};

/** The first tensor over the size a storage binding allows, as a shape error naming the limit. */
export const checkBindings = (
  gpu: GpuContext,
  kernel: string,
  tensors: ReadonlyArray<Tensor | undefined>,
): ShapeError | undefined => {
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const t = tensors.find((t) => t !== undefined && t.byteLength > limit);
  return t &&
    shapeError(kernel, `${t} is ${t.byteLength} bytes, over the device's maxStorageBufferBindingSize of ${limit}`);
};

/** Effect form of `GpuContext.tensor`: over-limit sizes and driver out-of-memory are a typed `GpuOutOfMemory`. */
export const alloc = <D extends DType>(shape: readonly number[], dtype: D, label: string) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    gpu.device.pushErrorScope("out-of-memory");
    const t = yield* Effect.exit(
      Effect.try({ try: () => gpu.tensor(shape, dtype, label), catch: (e) => e as GpuOutOfMemory }),
    );
    const oom = yield* Effect.promise(() => gpu.device.popErrorScope());
    if (oom !== null) {
      const bytes = byteLengthOf(shape, dtype);
      return yield* new GpuOutOfMemory({
        label,
        bytes,
        limit: gpu.limits.maxBufferSize,
        message: `the device could not allocate '${label}' (${bytes} bytes): ${oom.message}`,
      });
    }
    return yield* t;
  });

/**
 * Prepares one launch of a kernel: compiles (or takes from the cache) its pipeline, writes its parameters into a
 * uniform buffer of its own and builds its bind groups, all once, so that recording it later allocates nothing.
 */
export const prepare = Effect.fn("kernel.prepare")(function* (spec: KernelSpec, launch: Launch) {
  const gpu = yield* Gpu;
  const { device } = gpu;
  const tooLarge = checkBindings(gpu, spec.name, launch.tensors);
  if (tooLarge !== undefined) return yield* tooLarge;
  const pipeline = yield* Effect.tryPromise({
    try: () => gpu.pipeline(spec.name, spec.source, spec.entryPoint, spec.constants),
    catch: (e) =>
      e instanceof GpuValidationError || e instanceof GpuLimitExceeded
        ? e
        : new GpuValidationError({ kernel: spec.name, message: String(e) }),
  });
  const [x, y = 1, z = 1] = launch.workgroups;
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (x > max || y > max || z > max) {
    return yield* shapeError(spec.name, `workgroup grid [${x}, ${y}, ${z}] exceeds the per-dimension limit ${max}`);
  }
  return yield* validated(
    spec.name,
    Effect.sync((): Dispatch => {
      const group0 = device.createBindGroup({
        label: spec.name,
        layout: pipeline.getBindGroupLayout(0),
        entries: launch.tensors.flatMap((t, binding) => t === undefined ? [] : [{ binding, resource: t.binding() }]),
      });
      let uniforms: GPUBuffer | undefined;
      let group1: GPUBindGroup | undefined;
      if (launch.params !== undefined) {
        const data = packParams(launch.params);
        uniforms = device.createBuffer({
          label: `${spec.name} params`,
          size: data.byteLength,
          usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        });
        device.queue.writeBuffer(uniforms, 0, data);
        group1 = device.createBindGroup({
          label: `${spec.name} params`,
          layout: pipeline.getBindGroupLayout(1),
          entries: [{ binding: 0, resource: { buffer: uniforms } }],
        });
      }
      return {
        kernel: spec.name,
        record: (pass) => {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, group0);
          if (group1 !== undefined) pass.setBindGroup(1, group1);
          if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
        },
        setParams: (params) => {
          if (uniforms === undefined) throw new Error(`kernel '${spec.name}' was prepared without parameters`);
          device.queue.writeBuffer(uniforms, 0, packParams(params));
        },
      };
    }),
  );
});

/**
 * Several dispatches recorded as one, in order, in one pass (WebGPU makes each dispatch's writes visible to the next).
 * `setParams` goes to every part: for parts that share one uniform struct.
 */
export const sequence = (kernel: string, parts: readonly Dispatch[]): Dispatch => ({
  kernel,
  record: (pass) => {
    for (const d of parts) d.record(pass);
  },
  setParams: (params) => {
    for (const d of parts) d.setParams(params);
  },
});

/** Runs `body` inside WebGPU validation and out-of-memory error scopes, naming `kernel` in the typed error. */
export const validated = <A, E, R>(
  kernel: string,
  body: Effect.Effect<A, E, R>,
): Effect.Effect<A, E | GpuValidationError | GpuOutOfMemory, Gpu | R> =>
  Effect.gen(function* () {
    const { device } = yield* Gpu;
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const exit = yield* Effect.exit(body);
    const invalid = yield* Effect.promise(() => device.popErrorScope());
    const oom = yield* Effect.promise(() => device.popErrorScope());
    if (invalid !== null) {
      return yield* new GpuValidationError({ kernel, message: `${kernel}: ${invalid.message.trim()}` });
    }
    if (oom !== null) {
      return yield* new GpuOutOfMemory({ label: kernel, bytes: 0, limit: 0, message: `${kernel}: ${oom.message}` });
    }
    return yield* exit;
  });

/** Records dispatches into one compute pass of one command encoder. The hot-path primitive of every step. */
export const recordPass = (gpu: GpuContext, dispatches: Iterable<Dispatch>, label = "step"): GPUCommandEncoder => {
  const enc = gpu.device.createCommandEncoder({ label });
  const pass = enc.beginComputePass({ label });
  for (const d of dispatches) d.record(pass);
  pass.end();
  return enc;
};

/** Submits dispatches as one command buffer, without waiting for them. */
export const submit = (gpu: GpuContext, dispatches: Iterable<Dispatch>, label = "step"): void => {
  gpu.device.queue.submit([recordPass(gpu, dispatches, label).finish()]);
};

/** Runs dispatches as one submit and waits for the GPU, with validation errors typed and naming the kernels. */
export const runDispatches = (dispatches: ReadonlyArray<Dispatch>, label = "run") =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const names = [...new Set(dispatches.map((d) => d.kernel))].join(", ") || label;
    yield* validated(names, Effect.sync(() => submit(gpu, dispatches, label)));
    yield* gpu.guard(Effect.promise(() => gpu.device.queue.onSubmittedWorkDone()));
  });

/** What `submitAndRead` records into one command buffer. */
export interface Submission {
  readonly dispatches?: ReadonlyArray<Dispatch>;
  /** Buffer copies recorded before the compute pass, and after it. */
  readonly before?: ReadonlyArray<readonly [from: Tensor, to: Tensor]>;
  readonly after?: ReadonlyArray<readonly [from: Tensor, to: Tensor]>;
  /** Tensors read back once the submit has run; nothing is awaited when there are none. */
  readonly reads?: ReadonlyArray<Tensor>;
}

/**
 * One command buffer: copies, one compute pass, copies, then the readbacks of `reads` (awaited). For host-driven
 * loops such as k-means, where the host needs a few values back from each submit. Validation errors typed and naming
 * the kernels; a device lost during the readbacks fails.
 */
export const submitAndRead = ({ dispatches = [], before = [], after = [], reads = [] }: Submission, label = "submit") =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const kernels = [...new Set(dispatches.map((d) => d.kernel))].join(", ") || label;
    const copy = (enc: GPUCommandEncoder, [from, to]: readonly [Tensor, Tensor]) =>
      enc.copyBufferToBuffer(from.buffer, from.offset, to.buffer, to.offset, from.byteLength);
    const pending = yield* validated(
      kernels,
      Effect.sync(() => {
        const enc = gpu.device.createCommandEncoder({ label });
        for (const c of before) copy(enc, c);
        if (dispatches.length > 0) {
          const pass = enc.beginComputePass({ label });
          for (const d of dispatches) d.record(pass);
          pass.end();
        }
        for (const c of after) copy(enc, c);
        const out = reads.map((t) => gpu.readAfter(enc, t));
        gpu.device.queue.submit([enc.finish()]);
        return out;
      }),
    );
    return yield* gpu.guard(Effect.tryPromise({
      try: () => Promise.all(pending.map((p) => p())),
      catch: (e) => e instanceof GpuDeviceLost ? e : new GpuDeviceLost({ reason: "unknown", message: String(e) }),
    }));
  });

/** Effect form of `GpuContext.read`: a device lost during the readback is a typed failure. */
export const read = <D extends DType>(t: Tensor<D>): Effect.Effect<HostArray<D>, GpuDeviceLost, Gpu> =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    return yield* gpu.guard(Effect.tryPromise({
      try: () => gpu.read(t),
      catch: (e) => e instanceof GpuDeviceLost ? e : new GpuDeviceLost({ reason: "unknown", message: String(e) }),
    }));
  });
