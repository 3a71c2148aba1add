import assert from "node:assert/strict";
import { Context, Effect, Exit, Layer } from "effect";
import { Gpu, GpuContext } from "../../src/gpu/gpu.ts";
import { GpuDeviceLost, GpuOutOfMemory, GpuUnavailable, GpuValidationError, ShapeError } from "../../src/gpu/errors.ts";
import { alloc, prepare, read, recordPass, runDispatches } from "../../src/gpu/kernel.ts";
import { GpuTimer } from "../../src/gpu/timer.ts";
import { copy, fill } from "../../src/ops/fill.ts";
import { effectTest, gpuTest } from "../helpers.ts";

const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown => {
  assert.ok(Exit.isFailure(exit), "expected a failure");
  return Exit.isFailure(exit) ? exit.cause.reasons.map((r) => ("error" in r ? r.error : r))[0] : undefined;
};

const acquire = (gpu: GPU | undefined) => Effect.exit(Effect.scoped(Layer.build(Gpu.layerFrom(gpu))));

effectTest(
  "Gpu: no navigator.gpu gives GpuUnavailable",
  Effect.gen(function* () {
    const e = failureOf(yield* acquire(undefined));
    assert.ok(e instanceof GpuUnavailable);
    assert.match(e.message, /navigator\.gpu is undefined/);
  }),
);

effectTest(
  "Gpu: an adapter request that finds nothing gives GpuUnavailable with advice",
  Effect.gen(function* () {
    const fake = { requestAdapter: () => Promise.resolve(null) } as unknown as GPU;
    const names = ["DENO_WEBGPU_BACKEND", "VK_ICD_FILENAMES", "VK_DRIVER_FILES"];
    const saved = names.map((n) => Deno.env.get(n));
    try {
      for (const n of names) Deno.env.delete(n);
      const e = failureOf(yield* acquire(fake));
      assert.ok(e instanceof GpuUnavailable);
      assert.match(e.message, /no WebGPU adapter found/);
      assert.match(e.message, /mesa-vulkan-drivers/);
      // A variable that steers the choice is named: it is the likeliest cause.
      Deno.env.set("DENO_WEBGPU_BACKEND", "dx12");
      const steered = failureOf(yield* acquire(fake));
      assert.ok(steered instanceof GpuUnavailable);
      assert.match(steered.message, /no WebGPU adapter found with DENO_WEBGPU_BACKEND=dx12: unset it/);
    } finally {
      names.forEach((n, i) => saved[i] === undefined ? Deno.env.delete(n) : Deno.env.set(n, saved[i]!));
    }
  }),
);

effectTest(
  "Gpu: the device is destroyed when the layer is released",
  Effect.gen(function* () {
    const device = yield* Effect.scoped(Layer.build(Gpu.layer).pipe(Effect.map((ctx) => Context.get(ctx, Gpu).device)));
    const info = yield* Effect.promise(() => device.lost);
    assert.equal(info.reason, "destroyed");
  }),
);

gpuTest(
  "Gpu: broken WGSL gives GpuValidationError naming the kernel",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const x = gpu.tensor([4], "f32", "x");
    const exit = yield* Effect.exit(prepare({ name: "broken_kernel", source: "fn main( {" }, {
      tensors: [x],
      workgroups: [1],
    }));
    const e = failureOf(exit);
    assert.ok(e instanceof GpuValidationError);
    assert.equal(e.kernel, "broken_kernel");
    assert.match(e.message, /broken_kernel/);
  }),
);

gpuTest(
  "Gpu: a binding the kernel does not declare gives GpuValidationError naming the kernel",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const source = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n" +
      "@compute @workgroup_size(1) fn main() { y[0] = 1.0; }";
    const t = gpu.tensor([4], "f32", "t");
    const e = failureOf(
      yield* Effect.exit(prepare({ name: "one_binding", source }, { tensors: [t, t], workgroups: [1] })),
    );
    assert.ok(e instanceof GpuValidationError);
    assert.equal(e.kernel, "one_binding");
  }),
);

gpuTest(
  "Gpu: an allocation over the device limit gives GpuOutOfMemory naming size and limit",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const limit = gpu.limits.maxBufferSize;
    const n = Math.floor(limit / 4) + 1;
    const e = failureOf(yield* Effect.exit(alloc([n], "f32", "huge")));
    assert.ok(e instanceof GpuOutOfMemory);
    assert.equal(e.bytes, n * 4);
    assert.equal(e.limit, limit);
    assert.match(e.message, new RegExp(`'huge'.*${n * 4} bytes.*maxBufferSize of ${limit}`));
  }),
);

gpuTest(
  "Gpu: a tensor over the storage binding limit is a ShapeError naming the limit",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const fake = gpu.tensor([4], "f32", "small").reshape([4]);
    const big = Object.assign(Object.create(Object.getPrototypeOf(fake)), fake, {
      shape: [gpu.limits.maxStorageBufferBindingSize / 4 + 1],
    });
    const e = failureOf(yield* Effect.exit(fill(big, 0)));
    assert.ok(e instanceof ShapeError);
    assert.match(e.message, /maxStorageBufferBindingSize/);
  }),
);

gpuTest(
  "Gpu: a kernel and its override constants compile once per device",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const x = gpu.tensor([10], "f32", "x");
    const before = gpu.pipelineCount;
    yield* fill(x, 1);
    yield* fill(x, 2);
    assert.equal(gpu.pipelineCount, before + 1);
    yield* copy(x, gpu.tensor([10], "f32", "y"));
    assert.equal(gpu.pipelineCount, before + 2);
  }),
);

gpuTest(
  "Gpu: tensors of every dtype round-trip, u8 with a partial last word",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const bytes = Uint8Array.from({ length: 7 }, (_, i) => 250 + i);
    assert.deepEqual(yield* read(gpu.upload(bytes, "u8", [7], "b")), bytes);
    const ints = Int32Array.from([-3, 0, 2 ** 31 - 1]);
    assert.deepEqual(yield* read(gpu.upload(ints, "i32", [3], "i")), ints);
    const words = Uint32Array.from([0, 1, 2 ** 32 - 1]);
    assert.deepEqual(yield* read(gpu.upload(words, "u32", [3], "u")), words);
  }),
);

gpuTest(
  "Gpu: readAfter reads a value recorded in a step without waiting in the step",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const x = gpu.tensor([3], "f32", "x");
    const d = yield* fill(x, 0);
    const values: Promise<Float32Array>[] = [];
    for (const v of [1, 2, 3]) {
      d.setParams([["u32", 3], ["f32", v], ["u32", 0]]);
      const enc = recordPass(gpu, [d]);
      const pending = gpu.readAfter(enc, x);
      gpu.device.queue.submit([enc.finish()]);
      values.push(pending());
    }
    const got = yield* Effect.promise(() => Promise.all(values));
    assert.deepEqual(got.map((a) => Array.from(a)), [[1, 1, 1], [2, 2, 2], [3, 3, 3]]);
  }),
);

gpuTest(
  "Gpu: the timer measures timed passes where the adapter has timestamps",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const timer = GpuTimer.create(gpu);
    if (timer === undefined) return assert.equal(gpu.adapter.timestamps, false);
    const x = gpu.tensor([1 << 20], "f32", "x");
    const d = yield* fill(x, 1);
    const enc = gpu.device.createCommandEncoder();
    for (const label of ["a", "b"]) {
      const pass = timer.beginPass(enc, label);
      d.record(pass);
      pass.end();
    }
    timer.resolve(enc);
    gpu.device.queue.submit([enc.finish()]);
    const times = yield* Effect.promise(() => timer.read());
    assert.deepEqual(times.map((t) => t.label), ["a", "b"]);
    for (const t of times) assert.ok(Number.isFinite(t.ms) && t.ms >= 0 && t.ms < 10_000, `${t.label}: ${t.ms} ms`);
    yield* runDispatches([d]);
  }),
);

effectTest(
  "Gpu: a lost device fails the guarded work with GpuDeviceLost; destroy() at release does not",
  Effect.gen(function* () {
    const fakeDevice = (reason: string) =>
      ({ lost: Promise.resolve({ reason, message: "driver reset" }) }) as unknown as GPUDevice;
    const summary = {
      description: "fake",
      vendor: "",
      backend: "",
      isFallbackAdapter: false,
      timestamps: false,
      limits: "adapter" as const,
    };
    const lost = new GpuContext(fakeDevice("unknown"), summary, { matmul: "tiled", loopLimit: Infinity });
    const e = failureOf(yield* Effect.exit(lost.guard(Effect.never)));
    assert.ok(e instanceof GpuDeviceLost);
    assert.match(e.message, /driver reset/);
    const destroyed = new GpuContext(fakeDevice("destroyed"), summary, { matmul: "tiled", loopLimit: Infinity });
    assert.equal(yield* destroyed.guard(Effect.sleep(20).pipe(Effect.as(7))), 7);
  }),
);

gpuTest(
  "Gpu: rows of a tensor are a view of the same bytes; rows out of range are refused",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const data = Float32Array.from({ length: 5 * 3 }, (_, i) => i);
    const t = gpu.upload(data, "f32", [5, 3], "t");
    const middle = t.rows(1, 3);
    assert.deepEqual(middle.shape, [3, 3]);
    assert.equal(middle.buffer, t.buffer);
    assert.deepEqual(yield* read(middle), data.slice(3, 12));
    assert.throws(() => t.rows(4, 2), /rows 4\.\.6 of 't' \[5,3\]/);
  }),
);
