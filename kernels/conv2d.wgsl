// 2-D convolution, NCHW, f32, forward and both backwards, as implicit GEMMs: no im2col buffer is ever built
// (measured here at the convnet's second layer: im2col + matmul 5.6 GFLOP/s and a 55 MiB buffer, implicit 9.5).
//
// Each invocation computes a register block of 16 channels x 8 pixels (eight mat4x4f; no workgroup memory in the
// main loops), because llvmpipe runs a workgroup's invocations as SIMD lanes, where register blocking beats
// shared-memory tiling and every load is a gather. One step of a reduction loads 16 "row" values (as four vec4 of a
// repacked operand whose address is the same in every lane) and 8 "column" values (gathers), for 128 FMAs. In the
// forward and backward-input, a workgroup's WG lanes take WG consecutive pixels of each of their 8 pixel columns
// (pixel j of lane l is first + l + WG·j), and the channel block comes from the workgroup id.
//
//   forward          y[n,co,oh,ow]  = Σ_{ci,kh,kw} w[co,ci,kh,kw] x[n,ci,oh·sh-ph+kh,ow·sw-pw+kw] (+ bias[co])
//   backward_input   dx[n,ci,ih,iw] = Σ_{co,kh,kw} w[co,ci,kh,kw] dy[n,co,oh,ow] over taps with oh·sh-ph+kh = ih
//   backward_weight  dw[co,ci,kh,kw] = Σ_{n,oh,ow} dy[n,co,oh,ow] x[n,ci,oh·sh-ph+kh,ow·sw-pw+kw]
//   bias_grad        dbias[co]       = Σ_{n,oh,ow} dy[n,co,oh,ow]
//
// Every sum runs in a fixed order for a given shape (no atomics), so results are bit-reproducible.

// Lanes per workgroup: an override, set by src/ops/conv2d.ts (the one place its value is written); a power of two,
// for the reductions' binary trees.
override WG: u32;
// The register block of one invocation. These are `const`, not overrides, because the code below is written out for
// exactly this block (eight mat4x4f in `Block`, eight unrolled pixel columns f0..f7, four vec4 channel rows): another
// value would need other code, not another pipeline. src/ops/conv2d.ts reads both from this file (`wgslConstant`).
const PIX = 8u; // pixels per invocation: two vec4 columns
const CH = 16u; // channels per invocation: four vec4 rows

struct Params {
  N: u32, Cin: u32, H: u32, W: u32,
  Cout: u32, OH: u32, OW: u32, KH: u32,
  KW: u32, sh: u32, sw: u32, ph: u32,
  pw: u32,
  cblocks: u32, // backward_input: input-channel blocks per stride phase (the y grid is cblocks x phases)
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dw: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(8) var<storage, read_write> packed: array<f32>;
@group(0) @binding(9) var<storage, read> packed4: array<vec4f>; // what pack_* wrote, as the kernels read it
@group(0) @binding(10) var<storage, read> partials: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// A 16 x 8 block: gGcC holds rows (channels) 4G..4G+3 of columns (pixels) 4C..4C+3; column j of a mat4x4f is a
// pixel, its rows are channels.
struct Block {
  g0c0: mat4x4f, g0c1: mat4x4f,
  g1c0: mat4x4f, g1c1: mat4x4f,
  g2c0: mat4x4f, g2c1: mat4x4f,
  g3c0: mat4x4f, g3c1: mat4x4f,
}

fn outer(u: vec4f, v: vec4f) -> mat4x4f {
  return mat4x4f(u * v.x, u * v.y, u * v.z, u * v.w);
}

// b += rows ⊗ columns: the 128 multiply-adds of one step of the reduction (rows are channels, columns pixels or, in
// the weight gradient, input channels).
fn rank1(b: ptr<function, Block>, r0: vec4f, r1: vec4f, r2: vec4f, r3: vec4f, c0: vec4f, c1: vec4f) {
  (*b).g0c0 += outer(r0, c0);
  (*b).g0c1 += outer(r0, c1);
  (*b).g1c0 += outer(r1, c0);
  (*b).g1c1 += outer(r1, c1);
  (*b).g2c0 += outer(r2, c0);
  (*b).g2c1 += outer(r2, c1);
  (*b).g3c0 += outer(r3, c0);
  (*b).g3c1 += outer(r3, c1);
}

fn add(a: Block, b: Block) -> Block {
  return Block(
    a.g0c0 + b.g0c0, a.g0c1 + b.g0c1, a.g1c0 + b.g1c0, a.g1c1 + b.g1c1,
    a.g2c0 + b.g2c0, a.g2c1 + b.g2c1, a.g3c0 + b.g3c0, a.g3c1 + b.g3c1,
  );
}

// Loads at offset o + at, or 0 where the offset is -1 (a tap in the zero padding).
fn x_at(o: i32, at: u32) -> f32 {
  return select(0.0, x[u32(max(o, 0)) + at], o >= 0);
}
fn x4(o: vec4i, at: u32) -> vec4f {
  return vec4f(x_at(o.x, at), x_at(o.y, at), x_at(o.z, at), x_at(o.w, at));
}
// Four channels of one pixel: offsets o + c.x, ..., or zeros when o is -1.
fn x_channels(o: i32, c: vec4u) -> vec4f {
  return vec4f(x_at(o, c.x), x_at(o, c.y), x_at(o, c.z), x_at(o, c.w));
}
fn dy_channels(c: vec4u, at: u32) -> vec4f {
  return vec4f(dy[c.x + at], dy[c.y + at], dy[c.z + at], dy[c.w + at]);
}
fn dy_at(o: i32, at: u32) -> f32 {
  return select(0.0, dy[u32(max(o, 0)) + at], o >= 0);
}
fn dy4(o: vec4i, at: u32) -> vec4f {
  return vec4f(dy_at(o.x, at), dy_at(o.y, at), dy_at(o.z, at), dy_at(o.w, at));
}

// Offset in a plane of row r and column c, or -1 when (r, c) lies outside the rows x cols plane.
fn inside(base: i32, r: i32, c: i32, rows: u32, cols: u32) -> i32 {
  let ok = r >= 0 && r < i32(rows) && c >= 0 && c < i32(cols);
  return select(-1, base + r * i32(cols) + c, ok);
}

// The flat pixel-block index of a workgroup: the grid is [channel blocks on x, pixel blocks over y and z], so that
// the channel blocks of one pixel block run one after another and find its input still in cache.
fn block_of(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.y + wid.z * nwg.y;
}

// A pixel of an N x rows x cols grid as (n, row, col) (an output pixel (n, oh, ow), or one of a stride phase's input
// pixels). A lane's pixels q, q + WG, q + 2·WG, ... are found by carrying a step of WG pixels in that mixed radix
// (`pixel_step`), not by dividing: u32 division is scalar code on a CPU's vector lanes.
struct Pixel { n: u32, r: u32, c: u32 }

fn pixel(q: u32, rows: u32, cols: u32) -> Pixel {
  let plane = rows * cols;
  return Pixel(q / plane, (q % plane) / cols, q % cols);
}

fn pixel_step(rows: u32, cols: u32) -> Pixel {
  return Pixel(WG / (rows * cols), (WG / cols) % rows, WG % cols);
}

fn advance(a: Pixel, s: Pixel, rows: u32, cols: u32) -> Pixel {
  let c = a.c + s.c;
  let wrap = c >= cols;
  let r = a.r + s.r + select(0u, 1u, wrap);
  let next = r >= rows;
  return Pixel(a.n + s.n + select(0u, 1u, next), select(r, r - rows, next), select(c, c - cols, wrap));
}

// ---- weights, packed ------------------------------------------------------------------------------------------
//
// The 16 weights of one step of the forward (16 output channels at one (ci, kh, kw)) lie Cin·KH·KW apart in
// w[Cout, Cin, KH, KW]: 16 scalar gathers. Repacked as packed[(ci·KH·KW + tap)·Cout' + co] with Cout' = Cout rounded
// up to 16 (zeros past Cout), they are four aligned vec4 loads: 20-30% faster on llvmpipe for a pass over the
// weights that costs under 1% of the convolution. The backward-input kernel wants 16 input channels at one
// (co, kh, kw): packed[(co·KH·KW + tap)·Cin' + ci].

fn padded(channels: u32) -> u32 {
  return (channels + CH - 1u) / CH * CH;
}

@compute @workgroup_size(WG)
fn pack_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  let K = p.Cin * p.KH * p.KW;
  let rows = padded(p.Cout);
  if (i >= K * rows) {
    return;
  }
  let co = i % rows;
  packed[i] = select(0.0, w[min(co, p.Cout - 1u) * K + i / rows], co < p.Cout);
}

@compute @workgroup_size(WG)
fn pack_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  let KHW = p.KH * p.KW;
  let rows = padded(p.Cin);
  if (i >= p.Cout * KHW * rows) {
    return;
  }
  let ci = i % rows;
  let j = i / rows; // co·KH·KW + tap
  packed[i] = select(0.0, w[((j / KHW) * p.Cin + min(ci, p.Cin - 1u)) * KHW + j % KHW], ci < p.Cin);
}

// ---- forward --------------------------------------------------------------------------------------------------

// An output pixel as its image's offset in x and the top-left corner of its receptive field. A pixel past the last
// (in a partial block) reads the last image: computed, never stored.
fn field(a: Pixel) -> vec3i {
  let n = min(a.n, p.N - 1u);
  return vec3i(i32(n * p.Cin * p.H * p.W), i32(a.r * p.sh) - i32(p.ph), i32(a.c * p.sw) - i32(p.pw));
}

fn output_pixel(q: u32) -> Pixel {
  return pixel(q, p.OH, p.OW);
}

fn next_output_pixel(a: Pixel, s: Pixel) -> Pixel {
  return advance(a, s, p.OH, p.OW);
}

fn tap(f: vec3i, kh: u32, kw: u32) -> i32 {
  return inside(f.x, f.y + i32(kh), f.z + i32(kw), p.H, p.W);
}

fn forward_block(first: Pixel, co0: u32) -> Block {
  let s = pixel_step(p.OH, p.OW);
  let a1 = next_output_pixel(first, s);
  let a2 = next_output_pixel(a1, s);
  let a3 = next_output_pixel(a2, s);
  let a4 = next_output_pixel(a3, s);
  let a5 = next_output_pixel(a4, s);
  let a6 = next_output_pixel(a5, s);
  let f0 = field(first);
  let f1 = field(a1);
  let f2 = field(a2);
  let f3 = field(a3);
  let f4 = field(a4);
  let f5 = field(a5);
  let f6 = field(a6);
  let f7 = field(next_output_pixel(a6, s));
  let HW = p.H * p.W;
  let KHW = p.KH * p.KW;
  let rows = padded(p.Cout) / 4u;
  var b: Block;
  // Taps outside, input channels inside: the padding test is paid once per tap, not once per multiply-add.
  for (var kh = 0u; kh < p.KH; kh++) {
    for (var kw = 0u; kw < p.KW; kw++) {
      let o0 = vec4i(tap(f0, kh, kw), tap(f1, kh, kw), tap(f2, kh, kw), tap(f3, kh, kw));
      let o1 = vec4i(tap(f4, kh, kw), tap(f5, kh, kw), tap(f6, kh, kw), tap(f7, kh, kw));
      let wk = kh * p.KW + kw;
      for (var ci = 0u; ci < p.Cin; ci++) {
        let at = ci * HW;
        let wo = (ci * KHW + wk) * rows + co0 / 4u;
        rank1(&b, packed4[wo], packed4[wo + 1u], packed4[wo + 2u], packed4[wo + 3u], x4(o0, at), x4(o1, at));
      }
    }
  }
  return b;
}

// Stores four pixels (columns first, first + WG, ...) of 16 channels from co0 on. Epilogues loop a constant number of
// times, so that the compiler unrolls them and indexes the block with constants: a loop bound read from the uniforms
// left the block indexed at run time, which spilled it to memory and made the whole kernel 2x slower on llvmpipe.
fn store_y(first: Pixel, co0: u32, m0: mat4x4f, m1: mat4x4f, m2: mat4x4f, m3: mat4x4f) {
  let ohw = p.OH * p.OW;
  let s = pixel_step(p.OH, p.OW);
  var a = first;
  for (var j = 0u; j < 4u; j++) {
    let at = (a.n * p.Cout + co0) * ohw + a.r * p.OW + a.c;
    let v = array<vec4f, 4>(m0[j], m1[j], m2[j], m3[j]);
    for (var i = 0u; i < CH; i++) {
      if (a.n < p.N && co0 + i < p.Cout) {
        y[at + i * ohw] = v[i / 4u][i % 4u];
      }
    }
    a = next_output_pixel(a, s);
  }
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_id) lid: vec3u) {
  let first = block_of(wid, nwg) * WG * PIX + lid.x;
  let co0 = wid.x * CH;
  if (first - lid.x >= p.N * p.OH * p.OW) {
    return;
  }
  let a = output_pixel(first);
  let b = forward_block(a, co0);
  store_y(a, co0, b.g0c0, b.g1c0, b.g2c0, b.g3c0);
  store_y(output_pixel(first + 4u * WG), co0, b.g0c1, b.g1c1, b.g2c1, b.g3c1);
}

// The bias of channels first..first+3, as a matrix whose every column (pixel) gets it.
fn bias4(first: u32) -> mat4x4f {
  let i = min(vec4u(first) + vec4u(0u, 1u, 2u, 3u), vec4u(p.Cout - 1u));
  let v = vec4f(bias[i.x], bias[i.y], bias[i.z], bias[i.w]);
  return mat4x4f(v, v, v, v);
}

@compute @workgroup_size(WG)
fn forward_bias(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let first = block_of(wid, nwg) * WG * PIX + lid.x;
  let co0 = wid.x * CH;
  if (first - lid.x >= p.N * p.OH * p.OW) {
    return;
  }
  let a = output_pixel(first);
  let b = forward_block(a, co0);
  let s0 = bias4(co0);
  let s1 = bias4(co0 + 4u);
  let s2 = bias4(co0 + 8u);
  let s3 = bias4(co0 + 12u);
  store_y(a, co0, b.g0c0 + s0, b.g1c0 + s1, b.g2c0 + s2, b.g3c0 + s3);
  store_y(output_pixel(first + 4u * WG), co0, b.g0c1 + s0, b.g1c1 + s1, b.g2c1 + s2, b.g3c1 + s3);
}

// ---- backward with respect to the input -----------------------------------------------------------------------
//
// With stride s, input row ih receives only from the taps kh ≡ ih + ph (mod s). Splitting the input pixels into
// the s_h x s_w stride phases (ih mod sh, iw mod sw) gives every pixel of a phase the same taps, so no lane wastes
// work on taps that do not reach it (a 4x saving at stride 2 over masking). Pixel t of phase (qh, qw) is flat over
// (n, a, b) with ih = qh + a·sh, iw = qw + b·sw; tap kh = kh0 + th·sh reads output row oh = a + ch - th.

struct Phase {
  qh: u32, qw: u32, // first input row and column of the phase
  AH: u32, AW: u32, // its rows and columns
  kh0: u32, kw0: u32, // first tap reaching it
  ch: u32, cw: u32, // output row / column read by its first tap at a = 0 / b = 0
  TH: u32, TW: u32, // taps reaching it per axis
}

fn phase_of(k: u32) -> Phase {
  let qh = k / p.sw;
  let qw = k % p.sw;
  let kh0 = (qh + p.ph) % p.sh;
  let kw0 = (qw + p.pw) % p.sw;
  return Phase(
    qh, qw,
    select(0u, (p.H - qh + p.sh - 1u) / p.sh, qh < p.H), select(0u, (p.W - qw + p.sw - 1u) / p.sw, qw < p.W),
    kh0, kw0, (qh + p.ph) / p.sh, (qw + p.pw) / p.sw,
    (p.KH + p.sh - 1u - kh0) / p.sh, (p.KW + p.sw - 1u - kw0) / p.sw,
  );
}

// Input pixel a of a phase as its image's offset in dy and the output row and column its first tap reads. A pixel
// past the last (in a partial block) reads the last image: computed, never stored.
fn source(ph: Phase, a: Pixel) -> vec3i {
  let n = min(a.n, p.N - 1u);
  return vec3i(i32(n * p.Cout * p.OH * p.OW), i32(a.r + ph.ch), i32(a.c + ph.cw));
}

fn source_tap(s: vec3i, th: u32, tw: u32) -> i32 {
  return inside(s.x, s.y - i32(th), s.z - i32(tw), p.OH, p.OW);
}

fn backward_input_block(ph: Phase, first: Pixel, ci0: u32) -> Block {
  let step = pixel_step(ph.AH, ph.AW);
  let a1 = advance(first, step, ph.AH, ph.AW);
  let a2 = advance(a1, step, ph.AH, ph.AW);
  let a3 = advance(a2, step, ph.AH, ph.AW);
  let a4 = advance(a3, step, ph.AH, ph.AW);
  let a5 = advance(a4, step, ph.AH, ph.AW);
  let a6 = advance(a5, step, ph.AH, ph.AW);
  let s0 = source(ph, first);
  let s1 = source(ph, a1);
  let s2 = source(ph, a2);
  let s3 = source(ph, a3);
  let s4 = source(ph, a4);
  let s5 = source(ph, a5);
  let s6 = source(ph, a6);
  let s7 = source(ph, advance(a6, step, ph.AH, ph.AW));
  let OHW = p.OH * p.OW;
  let KHW = p.KH * p.KW;
  let rows = padded(p.Cin) / 4u;
  var b: Block;
  for (var th = 0u; th < ph.TH; th++) {
    for (var tw = 0u; tw < ph.TW; tw++) {
      let o0 = vec4i(source_tap(s0, th, tw), source_tap(s1, th, tw), source_tap(s2, th, tw), source_tap(s3, th, tw));
      let o1 = vec4i(source_tap(s4, th, tw), source_tap(s5, th, tw), source_tap(s6, th, tw), source_tap(s7, th, tw));
      let wk = (ph.kh0 + th * p.sh) * p.KW + ph.kw0 + tw * p.sw;
      for (var co = 0u; co < p.Cout; co++) {
        let at = co * OHW;
        let wo = (co * KHW + wk) * rows + ci0 / 4u;
        rank1(&b, packed4[wo], packed4[wo + 1u], packed4[wo + 2u], packed4[wo + 3u], dy4(o0, at), dy4(o1, at));
      }
    }
  }
  return b;
}

@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_id) lid: vec3u) {
  let ph = phase_of(wid.x / p.cblocks);
  let ci0 = (wid.x % p.cblocks) * CH;
  let first = block_of(wid, nwg) * WG * PIX + lid.x;
  let plane = ph.AH * ph.AW;
  if (first - lid.x >= p.N * plane) {
    return;
  }
  let a = pixel(first, ph.AH, ph.AW);
  let b = backward_input_block(ph, a, ci0);
  store_dx(ph, a, ci0, b.g0c0, b.g1c0, b.g2c0, b.g3c0);
  store_dx(ph, pixel(first + 4u * WG, ph.AH, ph.AW), ci0, b.g0c1, b.g1c1, b.g2c1, b.g3c1);
}

fn store_dx(ph: Phase, first: Pixel, ci0: u32, m0: mat4x4f, m1: mat4x4f, m2: mat4x4f, m3: mat4x4f) {
  let HW = p.H * p.W;
  let step = pixel_step(ph.AH, ph.AW);
  var a = first;
  for (var j = 0u; j < 4u; j++) {
    let at = (a.n * p.Cin + ci0) * HW + (ph.qh + a.r * p.sh) * p.W + ph.qw + a.c * p.sw;
    let v = array<vec4f, 4>(m0[j], m1[j], m2[j], m3[j]);
    for (var i = 0u; i < CH; i++) {
      if (a.n < p.N && ci0 + i < p.Cin) {
        dx[at + i * HW] = v[i / 4u][i % 4u];
      }
    }
    a = advance(a, step, ph.AH, ph.AW);
  }
}

// ---- backward with respect to the weights ---------------------------------------------------------------------
//
// dw is a small [Cout, Cin·KH·KW] matrix reduced over all N·OH·OW pixels.
//
// backward_weight (Cin >= 4): the output gradient is first repacked pixel-major, packed[q·Cout' + co] (Cout' = Cout
// rounded up to 16). A lane owns 8 input channels at one tap (kh, kw) and 16 output channels; the pixels run in a
// loop that is the same for every lane, so that the 16 rows are four vec4 loads at the same address in every lane
// (as the weights are in the forward), and one padding test per pixel serves all 8 channels. Lanes are (channel
// group, tap), so the channels alone may leave few workgroups: the pixels are then split into chunks (grid z), each
// chunk writing its partial dw, which sum_partials adds in chunk order. Deterministic, no atomics.
//
// backward_weight_taps (Cin < 4, where 8 channels per lane would mostly idle): a workgroup owns 16 output channels x
// 8 consecutive (ci, kh, kw) columns and one chunk of the pixels (grid z, as above); its lanes split the chunk (lane l
// takes pixels l, l + WG, ...), then a fixed binary tree in workgroup memory adds the WG partial blocks. It reads dy
// as it is: at Cin = 1 the repacking would cost more than it saves. Measured 2-2.5x slower than backward_weight at
// Cin >= 8, over 2x faster at Cin = 1.

// One invocation per (16 output channels, pixel): the divisions are paid once per 16 values, and consecutive lanes
// read consecutive pixels of a channel.
@compute @workgroup_size(WG)
fn pack_output_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  let rows = padded(p.Cout);
  let OHW = p.OH * p.OW;
  let P = p.N * OHW;
  if (i >= P * (rows / CH)) {
    return;
  }
  let q = i % P;
  let co0 = (i / P) * CH;
  let src = (q / OHW) * p.Cout * OHW + q % OHW;
  for (var j = 0u; j < CH; j++) {
    let co = co0 + j;
    packed[q * rows + co] = select(0.0, dy[src + min(co, p.Cout - 1u) * OHW], co < p.Cout);
  }
}

@compute @workgroup_size(WG)
fn backward_weight(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                   @builtin(num_workgroups) nwg: vec3u) {
  let KHW = p.KH * p.KW;
  let lane = wid.x * WG + lid.x;
  let tap = lane % KHW;
  let ci0 = (lane / KHW) * 8u;
  if (ci0 >= p.Cin) {
    return;
  }
  let co0 = wid.y * CH;
  let HW = p.H * p.W;
  let OHW = p.OH * p.OW;
  let P = p.N * OHW;
  let chunk = (P + nwg.z - 1u) / nwg.z;
  let q0 = min(wid.z * chunk, P);
  let q1 = min(q0 + chunk, P);
  let rows = padded(p.Cout) / 4u;
  let kh = i32(tap / p.KW) - i32(p.ph);
  let kw = i32(tap % p.KW) - i32(p.pw);
  // Channels past Cin read the last one again; their columns are never stored.
  let c0 = (min(vec4u(ci0) + vec4u(0u, 1u, 2u, 3u), vec4u(p.Cin - 1u)) - vec4u(ci0)) * HW;
  let c1 = (min(vec4u(ci0) + vec4u(4u, 5u, 6u, 7u), vec4u(p.Cin - 1u)) - vec4u(ci0)) * HW;
  // The pixel advances by one, carried as (n, oh, ow) so that the loop divides nothing.
  var n = q0 / OHW;
  var oh = (q0 % OHW) / p.OW;
  var ow = q0 % p.OW;
  var b: Block;
  for (var q = q0; q < q1; q++) {
    let o = inside(i32((n * p.Cin + ci0) * HW), i32(oh * p.sh) + kh, i32(ow * p.sw) + kw, p.H, p.W);
    let at = q * rows + co0 / 4u;
    rank1(&b, packed4[at], packed4[at + 1u], packed4[at + 2u], packed4[at + 3u], x_channels(o, c0), x_channels(o, c1));
    ow += 1u;
    if (ow == p.OW) {
      ow = 0u;
      oh += 1u;
      if (oh == p.OH) {
        oh = 0u;
        n += 1u;
      }
    }
  }
  let chunk_at = wid.z * p.Cout * p.Cin * KHW;
  store_dw(chunk_at, ci0 * KHW + tap, KHW, co0, b.g0c0, b.g1c0, b.g2c0, b.g3c0);
  store_dw(chunk_at, (ci0 + 4u) * KHW + tap, KHW, co0, b.g0c1, b.g1c1, b.g2c1, b.g3c1);
}

// Stores four columns k, k + step, k + 2 step, k + 3 step (flat over Cin·KH·KW) of 16 output channels from co0 on.
fn store_dw(at: u32, k: u32, step: u32, co0: u32, m0: mat4x4f, m1: mat4x4f, m2: mat4x4f, m3: mat4x4f) {
  let K = p.Cin * p.KH * p.KW;
  for (var j = 0u; j < 4u; j++) {
    let v = array<vec4f, 4>(m0[j], m1[j], m2[j], m3[j]);
    for (var i = 0u; i < CH; i++) {
      if (k + j * step < K && co0 + i < p.Cout) {
        dw[at + (co0 + i) * K + k + j * step] = v[i / 4u][i % 4u];
      }
    }
  }
}

// dw = the sum of the chunks' partial dw, in chunk order. cblocks holds the number of chunks.
@compute @workgroup_size(WG)
fn sum_partials(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  let size = p.Cout * p.Cin * p.KH * p.KW;
  if (i >= size) {
    return;
  }
  var s = partials[i];
  for (var c = 1u; c < p.cblocks; c++) {
    s += partials[c * size + i];
  }
  dw[i] = s;
}

var<workgroup> partial: array<Block, WG / 2u>;
var<workgroup> partial_sum: array<f32, WG / 2u>;

// Column k = (ci, kh, kw) as its channel's offset in an input image and the tap's shift from the output pixel's
// top-left corner (oh·sh, ow·sw).
fn weight_column(k: u32) -> vec3i {
  let KHW = p.KH * p.KW;
  let r = k % KHW;
  return vec3i(i32((k / KHW) * p.H * p.W), i32(r / p.KW) - i32(p.ph), i32(r % p.KW) - i32(p.pw));
}

fn column_tap(c: vec3i, image: i32, top: i32, left: i32) -> i32 {
  return inside(image + c.x, top + c.y, left + c.z, p.H, p.W);
}

fn backward_weight_taps_block(k0: u32, co0: u32, lane: u32, q0: u32, q1: u32) -> Block {
  let K = p.Cin * p.KH * p.KW;
  let c0 = weight_column(min(k0, K - 1u));
  let c1 = weight_column(min(k0 + 1u, K - 1u));
  let c2 = weight_column(min(k0 + 2u, K - 1u));
  let c3 = weight_column(min(k0 + 3u, K - 1u));
  let c4 = weight_column(min(k0 + 4u, K - 1u));
  let c5 = weight_column(min(k0 + 5u, K - 1u));
  let c6 = weight_column(min(k0 + 6u, K - 1u));
  let c7 = weight_column(min(k0 + 7u, K - 1u));
  let OHW = p.OH * p.OW;
  // The 16 output channels' offsets in an image of dy, the channels past Cout clamped (computed, never stored).
  let g0 = min(vec4u(co0) + vec4u(0u, 1u, 2u, 3u), vec4u(p.Cout - 1u)) * OHW;
  let g1 = min(vec4u(co0) + vec4u(4u, 5u, 6u, 7u), vec4u(p.Cout - 1u)) * OHW;
  let g2 = min(vec4u(co0) + vec4u(8u, 9u, 10u, 11u), vec4u(p.Cout - 1u)) * OHW;
  let g3 = min(vec4u(co0) + vec4u(12u, 13u, 14u, 15u), vec4u(p.Cout - 1u)) * OHW;
  let step = pixel_step(p.OH, p.OW);
  var a = output_pixel(q0 + lane);
  var b: Block;
  for (var q = q0 + lane; q < q1; q += WG) {
    let image = i32(a.n * p.Cin * p.H * p.W);
    let top = i32(a.r * p.sh);
    let left = i32(a.c * p.sw);
    let o0 = vec4i(column_tap(c0, image, top, left), column_tap(c1, image, top, left),
                   column_tap(c2, image, top, left), column_tap(c3, image, top, left));
    let o1 = vec4i(column_tap(c4, image, top, left), column_tap(c5, image, top, left),
                   column_tap(c6, image, top, left), column_tap(c7, image, top, left));
    let at = a.n * p.Cout * OHW + a.r * p.OW + a.c;
    let r0 = dy_channels(g0, at);
    let r1 = dy_channels(g1, at);
    let r2 = dy_channels(g2, at);
    let r3 = dy_channels(g3, at);
    rank1(&b, r0, r1, r2, r3, x4(o0, 0u), x4(o1, 0u));
    a = next_output_pixel(a, step);
  }
  return b;
}

@compute @workgroup_size(WG)
fn backward_weight_taps(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                        @builtin(num_workgroups) nwg: vec3u) {
  let k0 = wid.x * PIX;
  let co0 = wid.y * CH;
  // Chunk wid.z of the pixels (a multiple of WG long, so every lane of a chunk starts at its own first pixel).
  let P = p.N * p.OH * p.OW;
  let chunk = (P + nwg.z * WG - 1u) / (nwg.z * WG) * WG;
  let q0 = min(wid.z * chunk, P);
  var b = backward_weight_taps_block(k0, co0, lid.x, q0, min(q0 + chunk, P));
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x >= s && lid.x < 2u * s) {
      partial[lid.x - s] = b;
    }
    workgroupBarrier();
    if (lid.x < s) {
      b = add(b, partial[lid.x]);
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let chunk_at = wid.z * p.Cout * p.Cin * p.KH * p.KW;
    store_dw(chunk_at, k0, 1u, co0, b.g0c0, b.g1c0, b.g2c0, b.g3c0);
    store_dw(chunk_at, k0 + 4u, 1u, co0, b.g0c1, b.g1c1, b.g2c1, b.g3c1);
  }
}

@compute @workgroup_size(WG)
fn bias_grad(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let co = wid.x;
  let OHW = p.OH * p.OW;
  var s = 0.0;
  for (var q = lid.x; q < p.N * OHW; q += WG) {
    s += dy[((q / OHW) * p.Cout + co) * OHW + q % OHW];
  }
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid.x >= h && lid.x < 2u * h) {
      partial_sum[lid.x - h] = s;
    }
    workgroupBarrier();
    if (lid.x < h) {
      s += partial_sum[lid.x];
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    dbias[co] = s;
  }
}
