/**
 * The study behind the register kernels of kernels/matmul.wgsl: register-blocked matmul variants at 1024³ (plain
 * layouts), each generated as a stand-alone, fully unrolled WGSL kernel, on the default adapter.
 *
 *   deno run --allow-read --allow-env bench/matmul_variants.ts [regex over variant names]
 *
 * Without an argument a dozen representative variants run; the regex picks from all of them, e.g. '^64x1 .* vec4'.
 * A name reads `workgroup block loads`: workgroup WX x WY invocations, each computing a TM x TN block of outputs,
 * with scalar loads (columns `blocked`: each invocation's TN contiguous, or `interleaved`: WX apart) or `vec4` loads
 * (4 k-steps per trip). Reported: best wall time and best process CPU time per core over 3 runs after a warm-up, and
 * a check of 200 outputs against a float64 reference.
 *
 * On llvmpipe (Mesa 22.3, LLVM 15, 2 cores), CPU-time GFLOP/s: scalar 8x8 8.6, 16x16 15; vec4 4x4 8.1, 8x8 14,
 * 8x16 20, 16x16 27, 24x16 29, 32x16 25, 8x32 12; the workgroup shape hardly matters. llvmpipe turns every load from
 * a storage buffer into a loop over the SIMD lanes, so loads per FMA decide; 16x16 with vec4 loads became `reg4`.
 */
import process from "node:process";

interface Variant {
  readonly name: string;
  readonly TM: number;
  readonly TN: number;
  readonly WX: number;
  readonly WY: number;
  readonly loads: "blocked" | "interleaved" | "vec4";
}

/** Scalar loads: per k, TM values of a and TN of b, TM * TN FMAs. */
const scalarKernel = (v: Variant): string => {
  const { TM, TN, WX, WY } = v;
  const col = (j: number) => v.loads === "blocked" ? `c0 + ${j}u` : `c0 + ${j * WX}u`;
  const L = [
    `struct P { M: u32, N: u32, K: u32 }`,
    `@group(0) @binding(0) var<storage, read> a: array<f32>;`,
    `@group(0) @binding(1) var<storage, read> b: array<f32>;`,
    `@group(0) @binding(2) var<storage, read_write> c: array<f32>;`,
    `@group(1) @binding(0) var<uniform> p: P;`,
    `@compute @workgroup_size(${WX}, ${WY})`,
    `fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {`,
    `  let M = p.M; let N = p.N; let K = p.K;`,
    `  let r0 = (wid.y * ${WY}u + lid.y) * ${TM}u;`,
    v.loads === "blocked" ? `  let c0 = (wid.x * ${WX}u + lid.x) * ${TN}u;` : `  let c0 = wid.x * ${WX * TN}u + lid.x;`,
  ];
  for (let i = 0; i < TM; i++) L.push(`  let ra${i} = min(r0 + ${i}u, M - 1u) * K;`);
  for (let j = 0; j < TN; j++) L.push(`  let cb${j} = min(${col(j)}, N - 1u);`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) L.push(`  var s${i}_${j} = 0.0;`);
  L.push(`  for (var k = 0u; k < K; k++) {`);
  for (let j = 0; j < TN; j++) L.push(`    let b${j} = b[k * N + cb${j}];`);
  for (let i = 0; i < TM; i++) {
    L.push(`    let a${i} = a[ra${i} + k];`);
    for (let j = 0; j < TN; j++) L.push(`    s${i}_${j} = fma(a${i}, b${j}, s${i}_${j});`);
  }
  L.push(`  }`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) {
      L.push(`  if (r0 + ${i}u < M && ${col(j)} < N) { c[(r0 + ${i}u) * N + ${col(j)}] = s${i}_${j}; }`);
    }
  }
  L.push(`}`);
  return L.join("\n");
};

/** vec4 loads (K and N multiples of 4): per 4 k-steps, TM vec4s of a and TN vec4s of b, 4 * TM * TN FMAs. */
const vec4Kernel = (v: Variant): string => {
  const { TM, TN, WX, WY } = v;
  const L = [
    `struct P { M: u32, N: u32, K: u32 }`,
    `@group(0) @binding(0) var<storage, read> a: array<vec4f>;`,
    `@group(0) @binding(1) var<storage, read> b: array<vec4f>;`,
    `@group(0) @binding(2) var<storage, read_write> c: array<f32>;`,
    `@group(1) @binding(0) var<uniform> p: P;`,
    `@compute @workgroup_size(${WX}, ${WY})`,
    `fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {`,
    `  let M = p.M; let N = p.N; let K = p.K; let K4 = K / 4u; let N4 = N / 4u;`,
    `  let r0 = (wid.y * ${WY}u + lid.y) * ${TM}u;`,
    `  let c0 = (wid.x * ${WX}u + lid.x) * ${TN}u;`,
    `  let q0 = min(c0, N - 1u) / 4u;`,
  ];
  for (let i = 0; i < TM; i++) L.push(`  let ra${i} = min(r0 + ${i}u, M - 1u) * K4;`);
  for (let i = 0; i < TM; i++) L.push(`  var s${i}: array<vec4f, ${TN / 4}>;`);
  L.push(`  for (var k4 = 0u; k4 < K4; k4++) {`);
  for (let i = 0; i < TM; i++) L.push(`    let a${i} = a[ra${i} + k4];`);
  for (let kk = 0; kk < 4; kk++) {
    for (let j = 0; j < TN / 4; j++) {
      L.push(`    { let bv = b[(k4 * 4u + ${kk}u) * N4 + min(q0 + ${j}u, N4 - 1u)];`);
      for (let i = 0; i < TM; i++) L.push(`      s${i}[${j}] = fma(vec4f(a${i}[${kk}]), bv, s${i}[${j}]);`);
      L.push(`    }`);
    }
  }
  L.push(`  }`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) {
      L.push(
        `  if (r0 + ${i}u < M && c0 + ${j}u < N) { c[(r0 + ${i}u) * N + c0 + ${j}u] = s${i}[${j >> 2}][${j & 3}]; }`,
      );
    }
  }
  L.push(`}`);
  return L.join("\n");
};

const variants: Variant[] = [];
for (const [WX, WY] of [[64, 1], [32, 1], [128, 1], [8, 8], [16, 4]]) {
  for (const [TM, TN] of [[1, 8], [4, 4], [4, 8], [8, 4], [8, 8], [4, 16], [16, 4], [8, 16], [16, 8], [16, 16]]) {
    for (const loads of ["blocked", "interleaved"] as const) {
      variants.push({ name: `${WX}x${WY} ${TM}x${TN} ${loads}`, TM, TN, WX, WY, loads });
    }
  }
  for (
    const [TM, TN] of [[4, 4], [8, 8], [4, 16], [16, 4], [8, 16], [16, 8], [16, 16], [24, 16], [32, 16], [8, 32]]
  ) {
    variants.push({ name: `${WX}x${WY} ${TM}x${TN} vec4`, TM, TN, WX, WY, loads: "vec4" });
  }
}
const DEFAULT = /^64x1 ((8x8|16x16) blocked|(4x4|8x8|8x16|16x8|16x16|24x16|32x16|8x32) vec4)$|^8x8 16x16 vec4$/;

const adapter = await navigator.gpu.requestAdapter();
if (adapter === null) throw new Error("no WebGPU adapter");
const device = await adapter.requestDevice({
  requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize },
});
console.log(`adapter: ${adapter.info.description}`);

const M = 1024, N = 1024, K = 1024;
const value = (i: number) => Math.sin(i * 0.37);
const buffer = (n: number, init: boolean) => {
  const buf = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
  if (init) device.queue.writeBuffer(buf, 0, Float32Array.from({ length: n }, (_, i) => value(i)));
  return buf;
};
const A = buffer(M * K, true), B = buffer(K * N, true), C = buffer(M * N, false);
const U = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(U, 0, new Uint32Array([M, N, K, 0]));

/** How many of 200 sampled outputs are off the float64 reference by more than 1e-2. */
const check = async () => {
  const staging = device.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(C, 0, staging, 0, M * N * 4);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const got = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  let bad = 0;
  for (let t = 0; t < 200; t++) {
    const i = (t * 7919) % M, j = (t * 104729 + (t === 0 ? N - 1 : 0)) % N;
    let ref = 0;
    for (let k = 0; k < K; k++) ref += value(i * K + k) * value(k * N + j);
    if (Math.abs(got[i * N + j] - ref) > 1e-2) bad++;
  }
  device.queue.writeBuffer(C, 0, new Float32Array(M * N));
  return bad;
};

const measure = async (v: Variant) => {
  const code = v.loads === "vec4" ? vec4Kernel(v) : scalarKernel(v);
  const module = device.createShaderModule({ code });
  const pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
  const g0 = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [A, B, C].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const g1 = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(1),
    entries: [{ binding: 0, resource: { buffer: U } }],
  });
  const once = async () => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, g0);
    pass.setBindGroup(1, g1);
    pass.dispatchWorkgroups(Math.ceil(N / (v.WX * v.TN)), Math.ceil(M / (v.WY * v.TM)));
    pass.end();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    const wall = performance.now() - t0;
    const c = process.cpuUsage(c0);
    return [wall, (c.user + c.system) / 1000 / (navigator.hardwareConcurrency || 1)];
  };
  await once();
  let wall = Infinity, cpu = Infinity;
  for (let r = 0; r < 3; r++) {
    const [w, c] = await once();
    wall = Math.min(wall, w);
    cpu = Math.min(cpu, c);
  }
  const bad = await check();
  const rate = (ms: number) => (2 * M * N * K / ms / 1e6).toFixed(2).padStart(6);
  console.log(
    `${v.name.padEnd(26)} wall ${wall.toFixed(0).padStart(5)} ms ${rate(wall)} GFLOP/s   CPU/core ` +
      `${cpu.toFixed(0).padStart(5)} ms ${rate(cpu)} GFLOP/s   ${bad ? `WRONG: ${bad} of 200 outputs` : "ok"}`,
  );
};

const filter = Deno.args[0] === undefined ? DEFAULT : new RegExp(Deno.args[0]);
for (const v of variants) if (filter.test(v.name)) await measure(v);
