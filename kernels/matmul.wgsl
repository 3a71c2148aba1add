// matmul: out[z] = alpha * op(a[z]) * op(b[z]) + beta * out[z] + bias, for z over the batch (workgroup_id.z).
// op(a) is [M, K] (a stored [K, M] when TRANS_A), op(b) is [K, N] (b stored [N, K] when TRANS_B); bias is [N],
// added to every row. A 2-D operand broadcast over the batch has batch stride 0. Every sum runs over k in order, in
// f32, one invocation per output: no atomics, deterministic.
//
// Three entry points: `tiled` for the "tiled" strategy, `reg` / `reg4` for the "register" one.
//   tiled     workgroup-memory tiles with barriers (TILE x TILE outputs per workgroup, TK deep, each invocation
//             4x4 outputs): what real GPUs like. Any sizes.
//   reg       register blocking, no workgroup memory, no barriers: each invocation a 16x16 block of outputs,
//             looping over k with scalar loads straight from global memory. Any sizes.
//   reg4      the same with vec4 loads and stores: 4 k-steps per trip, 16 + 16 vec4 loads per 1024 FMAs. Needs K,
//             N and op(a)'s contiguous dimension (K, or M when TRANS_A) to be multiples of 4.
// llvmpipe (the CPU adapter) runs a workgroup's invocations as SIMD lanes, pays dearly for barriers, and turns every
// load or store of a storage or workgroup buffer into a loop over the lanes (whether the address is uniform or not),
// so FMAs per load instruction is what counts there: reg4 > reg >> tiled.
//
// The register kernels number their blocks of outputs row-major over a 1-D grid of 1-D workgroups (split over x and
// y past 65535 workgroups), so that no lane idles whatever the shape and one pipeline serves every size.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  strideA: u32, // batch strides in elements; 0 broadcasts a 2-D operand
  strideB: u32,
  strideC: u32,
  alpha: f32,
  beta: f32, // 0: out is not read (whatever it holds, NaN included, is overwritten)
  blocksN: u32, // register kernels: blocks of outputs across N, and in all (per batch)
  blocks: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(0) var<storage, read> a4: array<vec4f>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(1) var<storage, read> b4: array<vec4f>;
@group(0) @binding(2) var<storage, read> bias: array<f32>; // any tensor when BIAS is false: never read
@group(0) @binding(2) var<storage, read> bias4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4f>;
@group(1) @binding(0) var<uniform> p: Params;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override BIAS: bool = false;

// Register kernels: WG invocations per workgroup, one block of outputs each.
override WG: u32 = 64;

// Tiled kernel: TILE x TILE outputs per workgroup of (TILE / 4) x (TILE / 4) invocations, k in steps of TK.
override TILE: u32 = 64;
override TK: u32 = 16;

/** The register kernels' block of outputs for this invocation: (row block, column block), or none past the end. */
fn block(wid: vec3u, lid: vec3u, nwg: vec3u) -> vec2u {
  let g = (wid.x + wid.y * nwg.x) * WG + lid.x;
  return vec2u(g / p.blocksN, g % p.blocksN);
}

/** alpha * acc + beta * out[i] + bias for one output (in bounds). */
fn store(i: u32, acc: f32, bias_n: f32) {
  var v = p.alpha * acc;
  if (p.beta != 0.0) {
    v = fma(p.beta, out[i], v);
  }
  if (BIAS) {
    v += bias_n;
  }
  out[i] = v;
}

/** Four consecutive outputs of row m from column n, each guarded against the edges; `bn` their bias. */
fn store4(c0: u32, m: u32, n: u32, acc: vec4f, bn: vec4f) {
  if (m < p.M) {
    let i = c0 + m * p.N + n;
    if (n < p.N) {
      store(i, acc.x, bn.x);
    }
    if (n + 1u < p.N) {
      store(i + 1u, acc.y, bn.y);
    }
    if (n + 2u < p.N) {
      store(i + 2u, acc.z, bn.z);
    }
    if (n + 3u < p.N) {
      store(i + 3u, acc.w, bn.w);
    }
  }
}

/** bias[n .. n + 3], clamped to the last column (the stores past it are skipped); zero without a bias. */
fn bias4_at(n: u32) -> vec4f {
  if (!BIAS) {
    return vec4f();
  }
  let last = p.N - 1u;
  return vec4f(bias[min(n, last)], bias[min(n + 1u, last)], bias[min(n + 2u, last)], bias[min(n + 3u, last)]);
}

// ---------------------------------------------------------------------------------------------------------------
// Register kernels: 16 x 16 outputs per invocation, held as 16 rows of 16 (Row16). On llvmpipe the accumulators
// spill to the stack either way; what matters is that each loaded value feeds 16 FMAs. Measured there at 1024³
// (bench/matmul_variants.ts, CPU time): 8x8 blocks 14, 8x16 20, 16x16 27, 32x16 25 GFLOP/s with vec4 loads;
// scalar loads: 8.6, 12, 15.
//
// reg4: vec4 loads and stores.

/** 16 consecutive values of one row. */
struct Row16 {
  c0: vec4f,
  c1: vec4f,
  c2: vec4f,
  c3: vec4f,
}

/** op(b)[k .. k + 3, 16 columns]. */
struct Panel16 {
  k0: Row16,
  k1: Row16,
  k2: Row16,
  k3: Row16,
}

/** op(a)[8 rows, k .. k + 3]. */
struct Panel8 {
  r0: vec4f,
  r1: vec4f,
  r2: vec4f,
  r3: vec4f,
  r4: vec4f,
  r5: vec4f,
  r6: vec4f,
  r7: vec4f,
}

fn axpy16(acc: Row16, s: f32, x: Row16) -> Row16 {
  let v = vec4f(s);
  return Row16(fma(v, x.c0, acc.c0), fma(v, x.c1, acc.c1), fma(v, x.c2, acc.c2), fma(v, x.c3, acc.c3));
}

/** acc += op(a)[row, k .. k + 3] * op(b)[k .. k + 3, 16 columns], k in order. */
fn step16(acc: Row16, a: vec4f, b: Panel16) -> Row16 {
  return axpy16(axpy16(axpy16(axpy16(acc, a.x, b.k0), a.y, b.k1), a.z, b.k2), a.w, b.k3);
}

/** Four columns' k-vectors (vec4 over k) regrouped as four k's column-vectors: a transpose, free on SIMD lanes. */
fn tr(x0: vec4f, x1: vec4f, x2: vec4f, x3: vec4f) -> mat4x4f {
  return transpose(mat4x4f(x0, x1, x2, x3));
}

/** op(b)[4 k4 .. 4 k4 + 3, the invocation's 16 columns]; `q0` locates the first column (see reg4). */
fn panel_b(k4: u32, base: u32, q0: u32) -> Panel16 {
  let K4 = p.K / 4u;
  if (TRANS_B) {
    // b stored [N, K]: each column is contiguous along k; q0 is the first column's vec4 index, columns clamped.
    let last = base + (p.N - 1u) * K4 + k4;
    let s = q0 + k4;
    let t0 = tr(b4[min(s, last)], b4[min(s + K4, last)], b4[min(s + 2u * K4, last)], b4[min(s + 3u * K4, last)]);
    let s4 = s + 4u * K4;
    let t1 = tr(b4[min(s4, last)], b4[min(s4 + K4, last)], b4[min(s4 + 2u * K4, last)], b4[min(s4 + 3u * K4, last)]);
    let s8 = s + 8u * K4;
    let t2 = tr(b4[min(s8, last)], b4[min(s8 + K4, last)], b4[min(s8 + 2u * K4, last)], b4[min(s8 + 3u * K4, last)]);
    let s12 = s + 12u * K4;
    let t3 = tr(
      b4[min(s12, last)],
      b4[min(s12 + K4, last)],
      b4[min(s12 + 2u * K4, last)],
      b4[min(s12 + 3u * K4, last)],
    );
    return Panel16(
      Row16(t0[0], t1[0], t2[0], t3[0]),
      Row16(t0[1], t1[1], t2[1], t3[1]),
      Row16(t0[2], t1[2], t2[2], t3[2]),
      Row16(t0[3], t1[3], t2[3], t3[3]),
    );
  } else {
    // b stored [K, N]: rows contiguous along n; q0 is the vec4 index of the first column in row 0.
    let N4 = p.N / 4u;
    let last = N4 - 1u;
    let r = base + 4u * k4 * N4;
    let j0 = min(q0, last);
    let j1 = min(q0 + 1u, last);
    let j2 = min(q0 + 2u, last);
    let j3 = min(q0 + 3u, last);
    let r1 = r + N4;
    let r2 = r1 + N4;
    let r3 = r2 + N4;
    return Panel16(
      Row16(b4[r + j0], b4[r + j1], b4[r + j2], b4[r + j3]),
      Row16(b4[r1 + j0], b4[r1 + j1], b4[r1 + j2], b4[r1 + j3]),
      Row16(b4[r2 + j0], b4[r2 + j1], b4[r2 + j2], b4[r2 + j3]),
      Row16(b4[r3 + j0], b4[r3 + j1], b4[r3 + j2], b4[r3 + j3]),
    );
  }
}

/** op(a) panel at k = 4 k4 for rows m0 .. m0 + 7 (clamped to M - 1). */
fn panel_a(k4: u32, base: u32, m0: u32) -> Panel8 {
  let K4 = p.K / 4u;
  if (TRANS_A) {
    // a stored [K, M]: vec4s along m, two per k.
    let M4 = p.M / 4u;
    let q0 = base + min(m0 / 4u, M4 - 1u);
    let q1 = base + min(m0 / 4u + 1u, M4 - 1u);
    let k = 4u * k4 * M4;
    let lo = tr(a4[q0 + k], a4[q0 + k + M4], a4[q0 + k + 2u * M4], a4[q0 + k + 3u * M4]);
    let hi = tr(a4[q1 + k], a4[q1 + k + M4], a4[q1 + k + 2u * M4], a4[q1 + k + 3u * M4]);
    return Panel8(lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]);
  } else {
    // a stored [M, K]: one vec4 along k per row.
    let last = p.M - 1u;
    let r = base + k4;
    return Panel8(
      a4[r + min(m0, last) * K4],
      a4[r + min(m0 + 1u, last) * K4],
      a4[r + min(m0 + 2u, last) * K4],
      a4[r + min(m0 + 3u, last) * K4],
      a4[r + min(m0 + 4u, last) * K4],
      a4[r + min(m0 + 5u, last) * K4],
      a4[r + min(m0 + 6u, last) * K4],
      a4[r + min(m0 + 7u, last) * K4],
    );
  }
}

/** One vec4 of outputs (in bounds): alpha * acc + beta * out + bias; `i4` its vec4 index. */
fn store_v4(i4: u32, acc: vec4f, bn: vec4f) {
  var v = p.alpha * acc;
  if (p.beta != 0.0) {
    v = fma(vec4f(p.beta), out4[i4], v);
  }
  if (BIAS) {
    v += bn;
  }
  out4[i4] = v;
}

/** Row m's (< M) 16 outputs from column n0 (a multiple of 16 below N, a multiple of 4), guarded against the edge. */
fn store16(c4: u32, m: u32, n0: u32, acc: Row16, bn: Row16) {
  let i4 = c4 + (m * p.N + n0) / 4u;
  store_v4(i4, acc.c0, bn.c0);
  if (n0 + 4u < p.N) {
    store_v4(i4 + 1u, acc.c1, bn.c1);
  }
  if (n0 + 8u < p.N) {
    store_v4(i4 + 2u, acc.c2, bn.c2);
  }
  if (n0 + 12u < p.N) {
    store_v4(i4 + 3u, acc.c3, bn.c3);
  }
}

@compute @workgroup_size(WG)
fn reg4(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let blk = block(wid, lid, nwg);
  if (blk.x * p.blocksN >= p.blocks) {
    return;
  }
  let m0 = blk.x * 16u;
  let n0 = blk.y * 16u;
  let z = wid.z;
  let K4 = p.K / 4u;
  let baseA = z * p.strideA / 4u;
  let baseB = z * p.strideB / 4u;
  // First column's vec4 index: in b's batch row for a plain b, the column's own start for a transposed one.
  let qb = select(n0 / 4u, baseB + n0 * K4, TRANS_B);
  var c0 = Row16();
  var c1 = Row16();
  var c2 = Row16();
  var c3 = Row16();
  var c4 = Row16();
  var c5 = Row16();
  var c6 = Row16();
  var c7 = Row16();
  var c8 = Row16();
  var c9 = Row16();
  var c10 = Row16();
  var c11 = Row16();
  var c12 = Row16();
  var c13 = Row16();
  var c14 = Row16();
  var c15 = Row16();
  for (var k4 = 0u; k4 < K4; k4++) {
    let pb = panel_b(k4, baseB, qb);
    let lo = panel_a(k4, baseA, m0);
    c0 = step16(c0, lo.r0, pb);
    c1 = step16(c1, lo.r1, pb);
    c2 = step16(c2, lo.r2, pb);
    c3 = step16(c3, lo.r3, pb);
    c4 = step16(c4, lo.r4, pb);
    c5 = step16(c5, lo.r5, pb);
    c6 = step16(c6, lo.r6, pb);
    c7 = step16(c7, lo.r7, pb);
    let hi = panel_a(k4, baseA, m0 + 8u);
    c8 = step16(c8, hi.r0, pb);
    c9 = step16(c9, hi.r1, pb);
    c10 = step16(c10, hi.r2, pb);
    c11 = step16(c11, hi.r3, pb);
    c12 = step16(c12, hi.r4, pb);
    c13 = step16(c13, hi.r5, pb);
    c14 = step16(c14, hi.r6, pb);
    c15 = step16(c15, hi.r7, pb);
  }
  var bn = Row16();
  if (BIAS) {
    let last = p.N / 4u - 1u;
    let q = n0 / 4u;
    bn = Row16(bias4[q], bias4[min(q + 1u, last)], bias4[min(q + 2u, last)], bias4[min(q + 3u, last)]);
  }
  let base = z * p.strideC / 4u;
  // The epilogue as a loop over the rows (shifting them through c0), not unrolled like the sums: llvmpipe compiles
  // the kernel in a fraction of the time, for a cost paid once per invocation.
  for (var m = m0; m < min(m0 + 16u, p.M); m++) {
    store16(base, m, n0, c0, bn);
    c0 = c1;
    c1 = c2;
    c2 = c3;
    c3 = c4;
    c4 = c5;
    c5 = c6;
    c6 = c7;
    c7 = c8;
    c8 = c9;
    c9 = c10;
    c10 = c11;
    c11 = c12;
    c12 = c13;
    c13 = c14;
    c14 = c15;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// reg: scalar loads; any sizes and layouts.

/** Where op(a)[m, 0] is in a's batch; op(a)[m, k] is k * stepA() further. */
fn rowA(m: u32) -> u32 {
  return select(m * p.K, m, TRANS_A);
}

fn stepA() -> u32 {
  return select(1u, p.M, TRANS_A);
}

/** Where op(b)[0, n] is in b's batch; op(b)[k, n] is k * stepB() further. */
fn colB(n: u32) -> u32 {
  return select(n, n * p.K, TRANS_B);
}

fn stepB() -> u32 {
  return select(p.N, 1u, TRANS_B);
}

/** Row m's 16 outputs from column n0, each guarded against the edges. */
fn store16s(c0: u32, m: u32, n0: u32, acc: Row16, bn: Row16) {
  store4(c0, m, n0, acc.c0, bn.c0);
  store4(c0, m, n0 + 4u, acc.c1, bn.c1);
  store4(c0, m, n0 + 8u, acc.c2, bn.c2);
  store4(c0, m, n0 + 12u, acc.c3, bn.c3);
}

@compute @workgroup_size(WG)
fn reg(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let blk = block(wid, lid, nwg);
  if (blk.x * p.blocksN >= p.blocks) {
    return;
  }
  let m0 = blk.x * 16u;
  let n0 = blk.y * 16u;
  let z = wid.z;
  // Rows and columns past the edge read the last one (in bounds, never stored).
  let mL = p.M - 1u;
  let nL = p.N - 1u;
  let baseA = z * p.strideA;
  let baseB = z * p.strideB;
  let ra0 = baseA + rowA(m0);
  let ra1 = baseA + rowA(min(m0 + 1u, mL));
  let ra2 = baseA + rowA(min(m0 + 2u, mL));
  let ra3 = baseA + rowA(min(m0 + 3u, mL));
  let ra4 = baseA + rowA(min(m0 + 4u, mL));
  let ra5 = baseA + rowA(min(m0 + 5u, mL));
  let ra6 = baseA + rowA(min(m0 + 6u, mL));
  let ra7 = baseA + rowA(min(m0 + 7u, mL));
  let ra8 = baseA + rowA(min(m0 + 8u, mL));
  let ra9 = baseA + rowA(min(m0 + 9u, mL));
  let ra10 = baseA + rowA(min(m0 + 10u, mL));
  let ra11 = baseA + rowA(min(m0 + 11u, mL));
  let ra12 = baseA + rowA(min(m0 + 12u, mL));
  let ra13 = baseA + rowA(min(m0 + 13u, mL));
  let ra14 = baseA + rowA(min(m0 + 14u, mL));
  let ra15 = baseA + rowA(min(m0 + 15u, mL));
  let rb0 = baseB + colB(n0);
  let rb1 = baseB + colB(min(n0 + 1u, nL));
  let rb2 = baseB + colB(min(n0 + 2u, nL));
  let rb3 = baseB + colB(min(n0 + 3u, nL));
  let rb4 = baseB + colB(min(n0 + 4u, nL));
  let rb5 = baseB + colB(min(n0 + 5u, nL));
  let rb6 = baseB + colB(min(n0 + 6u, nL));
  let rb7 = baseB + colB(min(n0 + 7u, nL));
  let rb8 = baseB + colB(min(n0 + 8u, nL));
  let rb9 = baseB + colB(min(n0 + 9u, nL));
  let rb10 = baseB + colB(min(n0 + 10u, nL));
  let rb11 = baseB + colB(min(n0 + 11u, nL));
  let rb12 = baseB + colB(min(n0 + 12u, nL));
  let rb13 = baseB + colB(min(n0 + 13u, nL));
  let rb14 = baseB + colB(min(n0 + 14u, nL));
  let rb15 = baseB + colB(min(n0 + 15u, nL));
  let sa = stepA();
  let sb = stepB();
  var c0 = Row16();
  var c1 = Row16();
  var c2 = Row16();
  var c3 = Row16();
  var c4 = Row16();
  var c5 = Row16();
  var c6 = Row16();
  var c7 = Row16();
  var c8 = Row16();
  var c9 = Row16();
  var c10 = Row16();
  var c11 = Row16();
  var c12 = Row16();
  var c13 = Row16();
  var c14 = Row16();
  var c15 = Row16();
  for (var k = 0u; k < p.K; k++) {
    let ka = k * sa;
    let kb = k * sb;
    let x = Row16(
      vec4f(b[rb0 + kb], b[rb1 + kb], b[rb2 + kb], b[rb3 + kb]),
      vec4f(b[rb4 + kb], b[rb5 + kb], b[rb6 + kb], b[rb7 + kb]),
      vec4f(b[rb8 + kb], b[rb9 + kb], b[rb10 + kb], b[rb11 + kb]),
      vec4f(b[rb12 + kb], b[rb13 + kb], b[rb14 + kb], b[rb15 + kb]),
    );
    c0 = axpy16(c0, a[ra0 + ka], x);
    c1 = axpy16(c1, a[ra1 + ka], x);
    c2 = axpy16(c2, a[ra2 + ka], x);
    c3 = axpy16(c3, a[ra3 + ka], x);
    c4 = axpy16(c4, a[ra4 + ka], x);
    c5 = axpy16(c5, a[ra5 + ka], x);
    c6 = axpy16(c6, a[ra6 + ka], x);
    c7 = axpy16(c7, a[ra7 + ka], x);
    c8 = axpy16(c8, a[ra8 + ka], x);
    c9 = axpy16(c9, a[ra9 + ka], x);
    c10 = axpy16(c10, a[ra10 + ka], x);
    c11 = axpy16(c11, a[ra11 + ka], x);
    c12 = axpy16(c12, a[ra12 + ka], x);
    c13 = axpy16(c13, a[ra13 + ka], x);
    c14 = axpy16(c14, a[ra14 + ka], x);
    c15 = axpy16(c15, a[ra15 + ka], x);
  }
  let bn = Row16(bias4_at(n0), bias4_at(n0 + 4u), bias4_at(n0 + 8u), bias4_at(n0 + 12u));
  let base = z * p.strideC;
  // The epilogue as a loop, as in reg4.
  for (var m = m0; m < min(m0 + 16u, p.M); m++) {
    store16s(base, m, n0, c0, bn);
    c0 = c1;
    c1 = c2;
    c2 = c3;
    c3 = c4;
    c4 = c5;
    c5 = c6;
    c6 = c7;
    c7 = c8;
    c8 = c9;
    c9 = c10;
    c10 = c11;
    c11 = c12;
    c12 = c13;
    c13 = c14;
    c14 = c15;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// tiled: workgroup-memory tiles. Each k-step of TK loads a TILE x TK tile of op(a) and a TK x TILE tile of op(b)
// (zero past the edges, consecutive invocations along each operand's contiguous dimension), then every invocation
// accumulates its 4 x 4 outputs from them: rows 4 * lid.y .. + 3, columns 4 * lid.x .. + 3 of the tile.

var<workgroup> As: array<vec4f, TILE * TK / 4u>; // [TK][TILE / 4]: op(a)[4 rows, k]
var<workgroup> Bs: array<vec4f, TILE * TK / 4u>; // [TK][TILE / 4]: op(b)[k, 4 columns]

@compute @workgroup_size(TILE / 4u, TILE / 4u)
fn tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let T4 = TILE / 4u;
  let threads = T4 * T4;
  let t = lid.y * T4 + lid.x;
  let z = wid.z;
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let baseA = z * p.strideA;
  let baseB = z * p.strideB;
  var c0 = vec4f();
  var c1 = vec4f();
  var c2 = vec4f();
  var c3 = vec4f();
  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    for (var e = t; e < TILE * TK; e += threads) {
      var m = e / TK;
      var k = e % TK;
      if (TRANS_A) {
        m = e % TILE;
        k = e / TILE;
      }
      var v = 0.0;
      if (m0 + m < p.M && k0 + k < p.K) {
        v = a[baseA + rowA(m0 + m) + (k0 + k) * stepA()];
      }
      As[k * T4 + m / 4u][m % 4u] = v;
      var n = e % TILE;
      k = e / TILE;
      if (TRANS_B) {
        n = e / TK;
        k = e % TK;
      }
      var w = 0.0;
      if (n0 + n < p.N && k0 + k < p.K) {
        w = b[baseB + colB(n0 + n) + (k0 + k) * stepB()];
      }
      Bs[k * T4 + n / 4u][n % 4u] = w;
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let x = As[k * T4 + lid.y];
      let y = Bs[k * T4 + lid.x];
      c0 = fma(vec4f(x.x), y, c0);
      c1 = fma(vec4f(x.y), y, c1);
      c2 = fma(vec4f(x.z), y, c2);
      c3 = fma(vec4f(x.w), y, c3);
    }
    workgroupBarrier();
  }
  let base = z * p.strideC;
  let m = m0 + 4u * lid.y;
  let n = n0 + 4u * lid.x;
  let bn = bias4_at(n);
  store4(base, m, n, c0, bn);
  store4(base, m + 1u, n, c1, bn);
  store4(base, m + 2u, n, c2, bn);
  store4(base, m + 3u, n, c3, bn);
}
