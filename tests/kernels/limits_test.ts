import assert from "node:assert/strict";
import { Context, Effect, Exit, Layer, References, type Scope } from "effect";
import { Gpu, type GpuOptions } from "../../src/gpu/gpu.ts";
import { GpuLimitExceeded, GpuOutOfMemory, GpuUnavailable, ShapeError } from "../../src/gpu/errors.ts";
import { alloc, prepare } from "../../src/gpu/kernel.ts";
import { DEFAULT_LIMITS, kernelResources, RAISED_LIMITS } from "../../src/gpu/limits.ts";
import { fill } from "../../src/ops/fill.ts";
import batchnorm from "../../kernels/batchnorm.wgsl" with { type: "text" };
import conv2d from "../../kernels/conv2d.wgsl" with { type: "text" };
import matmul from "../../kernels/matmul.wgsl" with { type: "text" };
import { effectTest } from "../helpers.ts";

const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown => {
  assert.ok(Exit.isFailure(exit), "expected a failure");
  return Exit.isFailure(exit) ? exit.cause.reasons.map((r) => ("error" in r ? r.error : r))[0] : undefined;
};

/** Runs `body` with PCL_GPU_LIMITS set to `value` (unset for undefined), restoring it after. */
const withLimitsEnv = <A, E, R>(value: string | undefined, body: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const saved = Deno.env.get("PCL_GPU_LIMITS");
      value === undefined ? Deno.env.delete("PCL_GPU_LIMITS") : Deno.env.set("PCL_GPU_LIMITS", value);
      return saved;
    }),
    () => body,
    (saved) =>
      Effect.sync(() =>
        saved === undefined ? Deno.env.delete("PCL_GPU_LIMITS") : Deno.env.set("PCL_GPU_LIMITS", saved)
      ),
  );

/** A test on a device of its own requested with `options` (PCL_GPU_LIMITS unset while it is requested). */
const deviceTest = <E>(name: string, options: GpuOptions, body: Effect.Effect<void, E, Gpu | Scope.Scope>) =>
  effectTest(
    name,
    Effect.gen(function* () {
      const context = yield* withLimitsEnv(undefined, Layer.build(Gpu.layerFrom(navigator.gpu, options)));
      yield* body.pipe(Effect.provideService(Gpu, Context.get(context, Gpu)));
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")),
  );

const limitsOf = (options: GpuOptions, env?: string) =>
  withLimitsEnv(
    env,
    Effect.scoped(
      Layer.build(Gpu.layerFrom(navigator.gpu, options)).pipe(
        Effect.map((ctx) => {
          const gpu = Context.get(ctx, Gpu);
          return { mode: gpu.adapter.limits, limits: gpu.limits };
        }),
      ),
    ),
  ).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"));

deviceTest(
  "limits: portable requests exactly WebGPU's default limits",
  { limits: "portable" },
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    assert.equal(gpu.adapter.limits, "portable");
    assert.equal(gpu.limits.maxStorageBufferBindingSize, 134217728);
    assert.equal(gpu.limits.maxBufferSize, 268435456);
    for (const [name, value] of Object.entries(DEFAULT_LIMITS)) {
      assert.equal(gpu.limits[name as keyof typeof DEFAULT_LIMITS], value, name);
    }
  }),
);

effectTest(
  "limits: adapter (the default) raises the limits training needs to the adapter's maxima",
  Effect.gen(function* () {
    const adapter = yield* Effect.promise(() => navigator.gpu.requestAdapter({ powerPreference: "high-performance" }));
    assert.ok(adapter !== null);
    const { mode, limits } = yield* limitsOf({});
    assert.equal(mode, "adapter");
    for (const name of RAISED_LIMITS) assert.equal(limits[name], adapter.limits[name], name);
  }),
);

effectTest(
  "limits: PCL_GPU_LIMITS overrides the option; an unknown value is GpuUnavailable naming it",
  Effect.gen(function* () {
    assert.equal((yield* limitsOf({ limits: "adapter" }, "portable")).mode, "portable");
    assert.equal((yield* limitsOf({ limits: "portable" }, "adapter")).mode, "adapter");
    assert.equal((yield* limitsOf({ limits: "portable" }, "")).mode, "portable");
    const e = failureOf(yield* Effect.exit(limitsOf({}, "max")));
    assert.ok(e instanceof GpuUnavailable);
    assert.match(e.message, /PCL_GPU_LIMITS=max: expected one of adapter, portable/);
  }),
);

const storageBuffers = (n: number) =>
  Array.from({ length: n }, (_, i) => `@group(0) @binding(${i}) var<storage, read_write> b${i}: array<f32>;`).join(
    "\n",
  ) +
  `\n@compute @workgroup_size(1) fn main() {\n${
    Array.from({ length: n }, (_, i) => `  b${i}[0] = 1.0;`).join("\n")
  }\n}`;

deviceTest(
  "limits: under portable, a kernel binding 9 storage buffers is GpuLimitExceeded naming it and the limit",
  { limits: "portable" },
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const t = gpu.tensor([4], "f32", "t");
    const bind = (n: number) => Array.from({ length: n }, () => gpu.tensor([4], "f32", "b"));
    yield* prepare({ name: "eight_buffers", source: storageBuffers(8) }, { tensors: bind(8), workgroups: [1] });
    const e = failureOf(
      yield* Effect.exit(prepare({ name: "nine_buffers", source: storageBuffers(9) }, {
        tensors: [t, ...bind(8)],
        workgroups: [1],
      })),
    );
    assert.ok(e instanceof GpuLimitExceeded);
    assert.equal(e.kernel, "nine_buffers");
    assert.equal(e.limit, "maxStorageBuffersPerShaderStage");
    assert.equal(e.required, 9);
    assert.equal(e.allowed, 8);
    assert.match(
      e.message,
      /kernel 'nine_buffers' \(main\) binds 9 storage buffers, .*maxStorageBuffersPerShaderStage of 8/,
    );
  }),
);

const workgroupMemory = `
override N: u32 = 4096;
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
var<workgroup> tile: array<f32, N>;
var<workgroup> extra: f32; // unused: not counted
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) {
  tile[i] = f32(i);
  workgroupBarrier();
  y[i] = tile[63u - i];
}`;

deviceTest(
  "limits: under portable, workgroup memory over 16 KiB is GpuLimitExceeded naming the kernel and the limit",
  { limits: "portable" },
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const y = gpu.tensor([64], "f32", "y");
    // 16 KiB exactly fits (wgpu itself checks none of this: without our check the pipeline would compile).
    yield* prepare({ name: "tile", source: workgroupMemory }, { tensors: [y], workgroups: [1] });
    const e = failureOf(
      yield* Effect.exit(
        prepare({ name: "tile", source: workgroupMemory, constants: { N: 4097 } }, { tensors: [y], workgroups: [1] }),
      ),
    );
    assert.ok(e instanceof GpuLimitExceeded);
    assert.equal(e.kernel, "tile");
    assert.equal(e.limit, "maxComputeWorkgroupStorageSize");
    assert.equal(e.required, 4097 * 4);
    assert.equal(e.allowed, 16384);
    assert.match(e.message, /'tile' \(main\) needs 16388 bytes of workgroup memory/);
  }),
);

deviceTest(
  "limits: under portable, 512 invocations per workgroup is GpuLimitExceeded naming the limit",
  { limits: "portable" },
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const source = "override WG: u32 = 64;\n@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n" +
      "@compute @workgroup_size(WG / 2u, 2) fn main(@builtin(local_invocation_index) i: u32) { y[i] = 1.0; }";
    const y = gpu.tensor([512], "f32", "y");
    const e = failureOf(
      yield* Effect.exit(prepare({ name: "wide", source, constants: { WG: 512 } }, { tensors: [y], workgroups: [1] })),
    );
    assert.ok(e instanceof GpuLimitExceeded);
    assert.equal(e.limit, "maxComputeInvocationsPerWorkgroup");
    assert.equal(e.required, 512);
    assert.match(e.message, /'wide' \(main\) runs workgroups of \[256,2,1\]/);
  }),
);

deviceTest(
  "limits: under portable, tensors over 256 MiB or bound over 128 MiB are typed errors naming the tensor and limit",
  { limits: "portable" },
  Effect.gen(function* () {
    const over = 268435456 / 4 + 1;
    const e = failureOf(yield* Effect.exit(alloc([over], "f32", "bank")));
    assert.ok(e instanceof GpuOutOfMemory);
    assert.equal(e.limit, 268435456);
    assert.match(e.message, /'bank'.*maxBufferSize of 268435456/);
    // 128 MiB + 4 bytes exists (under maxBufferSize) but cannot be bound whole.
    const big = yield* alloc([134217728 / 4 + 1], "f32", "features");
    const s = failureOf(yield* Effect.exit(fill(big, 0)));
    assert.ok(s instanceof ShapeError);
    assert.match(
      s.message,
      /features\[33554433\] f32 is 134217732 bytes, over the device's maxStorageBufferBindingSize/,
    );
    big.buffer.destroy();
  }),
);

Deno.test("limits: kernelResources reads what an entry point reaches, override constants applied", () => {
  // The training forward's passes: no pass binds more than 8 storage buffers (the running stats have a pass of their
  // own); a member access (`moments.y`) is not the global `y`.
  assert.equal(kernelResources(batchnorm, "train_forward_partial").storageBuffers, 2);
  assert.equal(kernelResources(batchnorm, "train_forward_apply").storageBuffers, 7);
  assert.equal(kernelResources(batchnorm, "train_backward_apply").storageBuffers, 7);
  assert.equal(kernelResources(batchnorm, "train_forward_channel").storageBuffers, 3);
  // WG / 2 = 32 Blocks of 8 mat4x4f (64 bytes each): 16 KiB, exactly WebGPU's default; bias_grad's array is its own.
  const taps = kernelResources(conv2d, "backward_weight_taps", { WG: 64 });
  assert.deepEqual(taps, { storageBuffers: 3, workgroupBytes: 16384, workgroupSize: [64, 1, 1] });
  assert.equal(kernelResources(conv2d, "bias_grad", { WG: 64 }).workgroupBytes, 128);
  assert.equal(kernelResources(conv2d, "forward").workgroupSize, undefined); // WG has no default: not evaluated
  // The tiled matmul: two [TK][TILE] vec4 tiles, workgroups of TILE/4 x TILE/4.
  const tiled = kernelResources(matmul, "tiled", { TILE: 64, TK: 16 });
  assert.equal(tiled.workgroupBytes, 2 * 64 * 16 * 4);
  assert.deepEqual(tiled.workgroupSize, [16, 16, 1]);
  // Struct layout: vec3f aligns to 16, so S is 32 bytes; a function called through another is followed.
  const source = `
    struct S { a: f32, b: vec3f, c: f32 }
    var<workgroup> w: array<S, 2>;
    /* var<workgroup> ignored: array<f32, 1000>; */
    @group(0) @binding(0) var<storage, read_write> y: array<f32>;
    fn inner() { w[0].a = 1.0; }
    fn outer() { inner(); }
    @workgroup_size(8, 4) @compute fn main() { outer(); y[0] = 0.0; }`;
  assert.deepEqual(kernelResources(source, "main"), {
    storageBuffers: 1,
    workgroupBytes: 64,
    workgroupSize: [8, 4, 1],
  });
});
