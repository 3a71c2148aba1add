import { Context, Effect, Layer } from "effect";
import { GpuDeviceLost, GpuOutOfMemory, GpuUnavailable, GpuValidationError } from "./errors.ts";
import { checkKernelLimits, GPU_LIMITS_MODES, type GpuLimitsMode, kernelResources, RAISED_LIMITS } from "./limits.ts";
import { byteLengthOf, type DType, type HostArray, hostArray, numel, Tensor } from "./tensor.ts";

/** What we know of the adapter, as logged at start-up and recorded in run manifests. */
export interface AdapterSummary {
  readonly description: string;
  readonly vendor: string;
  readonly backend: string;
  readonly isFallbackAdapter: boolean;
  readonly timestamps: boolean;
  /** How the device's limits were requested: the adapter's maxima, or WebGPU's defaults (`portable`). */
  readonly limits: GpuLimitsMode;
}

/**
 * Per-adapter kernel choices. llvmpipe runs a workgroup's invocations as SIMD lanes and pays dearly for barriers,
 * so register blocking wins there; real GPUs favour workgroup-memory tiling.
 */
export interface Tuning {
  readonly matmul: "tiled" | "register";
  /**
   * Loop iterations one invocation may run in all, counting every loop: Mesa's llvmpipe silently stops loops after
   * 65535 (measured), so kernels split longer reductions into passes. Infinity elsewhere.
   */
  readonly loopLimit: number;
}

export interface GpuOptions {
  readonly powerPreference?: GPUPowerPreference;
  readonly tuning?: Partial<Tuning>;
  /** `adapter` (the default) or `portable`; the environment's `PCL_GPU_LIMITS` overrides it. */
  readonly limits?: GpuLimitsMode;
}

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * The device and everything tied to its lifetime: the pipeline cache, the staging buffers for readback.
 * Methods here are plain functions so that the hot path (recording a step) never goes through Effect.
 */
export class GpuContext {
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly staging = new Map<number, GPUBuffer[]>();
  readonly lost: Promise<GPUDeviceLostInfo>;

  constructor(readonly device: GPUDevice, readonly adapter: AdapterSummary, readonly tuning: Tuning) {
    this.lost = device.lost;
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** A zero-filled tensor. Fails with GpuOutOfMemory, naming the size and the limit, when it cannot exist. */
  tensor<D extends DType>(shape: readonly number[], dtype: D, label: string): Tensor<D> {
    const bytes = Math.max(4, byteLengthOf(shape, dtype));
    const limit = this.limits.maxBufferSize;
    if (bytes > limit) {
      throw new GpuOutOfMemory({
        label,
        bytes,
        limit,
        message: `cannot allocate '${label}' [${shape.join("x")}] ${dtype}: ${bytes} bytes exceeds the device's ` +
          `maxBufferSize of ${limit} bytes`,
      });
    }
    const buffer = this.device.createBuffer({ label, size: bytes, usage: STORAGE });
    return new Tensor(buffer, shape, dtype);
  }

  /** A tensor holding `data`; the shape defaults to 1-D. */
  upload<D extends DType>(data: HostArray<D>, dtype: D, shape: readonly number[] = [data.length], label = "upload") {
    if (numel(shape) !== data.length) {
      throw new RangeError(`upload '${label}': ${data.length} values do not fill shape [${shape}]`);
    }
    const t = this.tensor(shape, dtype, label);
    this.write(t, data);
    return t;
  }

  write<D extends DType>(t: Tensor<D>, data: HostArray<D>, elementOffset = 0): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const whole = bytes.byteLength - (bytes.byteLength % 4);
    const at = t.offset + elementOffset * data.BYTES_PER_ELEMENT;
    if (whole > 0) this.device.queue.writeBuffer(t.buffer, at, bytes, 0, whole);
    if (whole < bytes.byteLength) { // u8 tails: pad to a whole word
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(whole));
      this.device.queue.writeBuffer(t.buffer, at + whole, tail);
    }
  }

  /** Copies a tensor back to the host. Awaits the GPU; use `Readback` for values that must not stall a step. */
  async read<D extends DType>(t: Tensor<D>): Promise<HostArray<D>> {
    const enc = this.device.createCommandEncoder({ label: `read ${t.label}` });
    const pending = this.readAfter(enc, t);
    this.device.queue.submit([enc.finish()]);
    return await pending();
  }

  /**
   * Records a copy of `t` into `enc` for reading later. Call the returned function after submitting `enc`: it starts
   * the map and gives a promise to await whenever convenient (a step or more later), so the step never stalls.
   */
  readAfter<D extends DType>(enc: GPUCommandEncoder, t: Tensor<D>): () => Promise<HostArray<D>> {
    const staging = this.takeStaging(t.byteLength);
    enc.copyBufferToBuffer(t.buffer, t.offset, staging, 0, t.byteLength);
    return () => {
      const p = this.mapStaging(staging, t.byteLength, t.dtype, t.size);
      p.catch(() => {}); // a read nobody awaits any more (a failed step, a released device) is not an error
      return p;
    };
  }

  /** A staging buffer of at least `bytes`, reused across reads so that steady-state readback does not allocate. */
  takeStaging(bytes: number): GPUBuffer {
    const size = 2 ** Math.ceil(Math.log2(Math.max(bytes, 256)));
    const pool = this.staging.get(size);
    const free = pool?.pop();
    if (free !== undefined) return free;
    return this.device.createBuffer({
      label: `staging ${size}`,
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  async mapStaging<D extends DType>(staging: GPUBuffer, bytes: number, dtype: D, length: number) {
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, bytes);
    } catch (e) {
      staging.destroy();
      throw new GpuDeviceLost({ reason: "unknown", message: `reading back ${bytes} bytes failed: ${e}` });
    }
    let copy: ArrayBuffer;
    try {
      copy = staging.getMappedRange(0, bytes).slice(0);
      staging.unmap();
    } catch (e) {
      throw new GpuDeviceLost({ reason: "unknown", message: `reading back ${bytes} bytes failed: ${e}` });
    }
    const pool = this.staging.get(staging.size) ?? [];
    pool.push(staging);
    this.staging.set(staging.size, pool);
    return hostArray(dtype, copy, length);
  }

  /** The compiled pipeline of a kernel: once per (kernel, entry point, override constants) and device. */
  pipeline(
    kernel: string,
    source: string,
    entryPoint = "main",
    constants: Record<string, number> = {},
  ): Promise<GPUComputePipeline> {
    const key = `${kernel}:${entryPoint}:${JSON.stringify(Object.entries(constants).sort())}`;
    let p = this.pipelines.get(key);
    if (p === undefined) {
      p = this.compile(kernel, source, entryPoint, constants);
      this.pipelines.set(key, p);
      p.catch(() => this.pipelines.delete(key));
    }
    return p;
  }

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  private async compile(kernel: string, code: string, entryPoint: string, constants: Record<string, number>) {
    const { device } = this;
    // Not every driver checks these (wgpu does not check workgroup memory): a kernel over a limit fails here, named.
    const over = checkKernelLimits(device.limits, kernel, entryPoint, kernelResources(code, entryPoint, constants));
    if (over !== undefined) throw over;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: kernel, code });
    const pipeline = device.createComputePipeline({
      label: `${kernel}.${entryPoint}`,
      layout: "auto",
      compute: { module, entryPoint, constants },
    });
    const error = await device.popErrorScope();
    if (error !== null) {
      throw new GpuValidationError({ kernel, message: `kernel '${kernel}' (${entryPoint}): ${error.message.trim()}` });
    }
    return pipeline;
  }

  /** Fails with GpuDeviceLost when the device is lost while `self` runs; `destroy()` at release is not a loss. */
  guard<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | GpuDeviceLost, R> {
    const lost = Effect.promise(() => this.lost).pipe(
      Effect.flatMap((info) =>
        info.reason === "destroyed" ? Effect.never : Effect.fail(
          new GpuDeviceLost({
            reason: info.reason,
            message: `GPU device lost (${info.reason}): ${info.message || "no details from the driver"}`,
          }),
        )
      ),
    );
    return Effect.raceFirst(self, lost);
  }
}

const envVar = (name: string): string | undefined => {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
};

export const defaultTuning = (adapter: AdapterSummary): Tuning => {
  const software = adapter.isFallbackAdapter || /llvmpipe|swiftshader|lavapipe/i.test(adapter.description);
  const forced = envVar("PCL_MATMUL");
  const matmul = forced === "tiled" || forced === "register" ? forced : software ? "register" : "tiled";
  return { matmul, loopLimit: /llvmpipe/i.test(adapter.description) ? 65535 : Infinity };
};

/** The limits mode: `PCL_GPU_LIMITS` when set, else the option, else `adapter`. A value outside the two fails. */
export const limitsMode = (option: GpuLimitsMode | undefined): Effect.Effect<GpuLimitsMode, GpuUnavailable> => {
  const forced = envVar("PCL_GPU_LIMITS");
  if (forced === undefined || forced === "") return Effect.succeed(option ?? "adapter");
  return (GPU_LIMITS_MODES as readonly string[]).includes(forced)
    ? Effect.succeed(forced as GpuLimitsMode)
    : Effect.fail(
      new GpuUnavailable({ message: `PCL_GPU_LIMITS=${forced}: expected one of ${GPU_LIMITS_MODES.join(", ")}` }),
    );
};

const acquire = (gpu: GPU | undefined, options: GpuOptions) =>
  Effect.gen(function* () {
    const limits = yield* limitsMode(options.limits);
    if (gpu === undefined) {
      return yield* new GpuUnavailable({
        message: "WebGPU is not available (navigator.gpu is undefined): this Deno build or platform has no WebGPU",
      });
    }
    const adapter = yield* Effect.tryPromise({
      try: () => gpu.requestAdapter({ powerPreference: options.powerPreference ?? "high-performance" }),
      catch: (e) => new GpuUnavailable({ message: `requesting a WebGPU adapter failed: ${e}` }),
    });
    if (adapter === null) {
      // The variables that steer the choice of adapter: when set, they are the likeliest cause.
      const steering = ["DENO_WEBGPU_BACKEND", "VK_ICD_FILENAMES", "VK_DRIVER_FILES"].flatMap((name) => {
        const v = envVar(name);
        return v === undefined ? [] : [`${name}=${v}`];
      });
      return yield* new GpuUnavailable({
        message: "no WebGPU adapter found" + (steering.length === 0
          ? ": install a GPU driver with Vulkan support, or Mesa (llvmpipe) for a software adapter " +
            "(Debian: mesa-vulkan-drivers)"
          : ` with ${steering.join(", ")}: unset ${steering.length > 1 ? "them" : "it"} to let WebGPU choose, ` +
            "or name a backend and driver this machine has (DENO_WEBGPU_BACKEND=vulkan or gl)"),
      });
    }
    // Portable: WebGPU's defaults, which every conformant adapter has (requesting none gives exactly those).
    const requiredLimits: Record<string, number> = {};
    if (limits === "adapter") { for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name]; }
    const timestamps = adapter.features.has("timestamp-query");
    const device = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          adapter.requestDevice({
            label: "pcl",
            requiredLimits,
            requiredFeatures: timestamps ? ["timestamp-query"] : [],
          }),
        catch: (e) => new GpuUnavailable({ message: `requesting a device from '${adapter.info.description}': ${e}` }),
      }),
      (device) => Effect.sync(() => device.destroy()),
    );
    const summary: AdapterSummary = {
      description: adapter.info.description || adapter.info.device || "unknown adapter",
      vendor: adapter.info.vendor,
      backend: envVar("DENO_WEBGPU_BACKEND") ?? "auto",
      isFallbackAdapter: adapter.info.isFallbackAdapter ?? false,
      timestamps,
      limits,
    };
    const tuning = { ...defaultTuning(summary), ...options.tuning };
    const context = new GpuContext(device, summary, tuning);
    yield* Effect.logInfo(
      `GPU adapter: ${summary.description} (vendor ${summary.vendor}, backend ${summary.backend}, ` +
        `fallback adapter: ${summary.isFallbackAdapter}, timestamps: ${timestamps}, matmul: ${tuning.matmul}, ` +
        `limits: ${limits})`,
    );
    return context;
  });

/**
 * The GPU device as a service. Provide `Gpu.layer` once at an entry point; stages only require `Gpu`, so the
 * whole program shares one device, destroyed when the layer is released.
 */
export class Gpu extends Context.Service<Gpu, GpuContext>()("pcl/Gpu") {
  /** Injectable `navigator.gpu`, so that "no adapter" can be tested. */
  static readonly layerFrom = (gpu: GPU | undefined, options: GpuOptions = {}) =>
    Layer.effect(Gpu, acquire(gpu, options));

  static readonly layer = Layer.suspend(() => Gpu.layerFrom(navigator.gpu));
}
