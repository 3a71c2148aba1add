// Augmentation of a batch of byte images into normalised float views, one workgroup per sample. The per-sample
// parameters (drawn on the host, see src/data/augmentations.ts) arrive as 24-word records:
//   0 row (image to read in `src`)   1 number of colour ops   2 colour op codes, 4 bits per slot   3 blur radius
//   4,5 source centre   6..9 warp matrix A (source offset = A * output offset, flip folded in)   10,11 filter support
//   12..15 clip box x0 y0 x1 y1   16..21 factor per colour slot   22 blur sigma   23 1 = zeros outside the image
// Order inside a sample: warp (crop, rotation, flip) -> colour ops in their slot order -> blur -> normalise. Flip is
// applied by the warp although the official pipelines flip last: it commutes with every later op (per-pixel colour
// ops, a mean over the image, a symmetric blur with replicated edges).
// A colour pass runs over this invocation's pixels only, so passes need no barrier; a contrast op needs the mean of
// the image so far: per-invocation partial sums, then invocation 0 adds them in a fixed order (deterministic, and
// two barriers instead of a tree's log2(WG) on llvmpipe). The mean goes through its own variable: invocations that
// leave the barrier early and write the next partial sums cannot overwrite it before the others have read it.

override WG: u32 = 64;
const REC: u32 = 24u;
const MAX_RADIUS: u32 = 16u;
const BRIGHTNESS: u32 = 1u;
const CONTRAST: u32 = 2u;
const SATURATION: u32 = 3u;
const HUE: u32 = 4u;
const GRAYSCALE: u32 = 5u;
const LUMA = vec3f(0.299, 0.587, 0.114);

struct Params {
  batch: u32, channels: u32, height: u32, width: u32,
  side: u32, image_bytes: u32, rec_base: u32, _pad: u32,
  mean0: f32, mean1: f32, mean2: f32, std0: f32, std1: f32, std2: f32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> rec: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> tmp: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> rw: array<u32, REC>;
var<workgroup> red: array<f32, WG>;
var<workgroup> wmean: f32;

// A source byte as a float in 0..255 (the warp divides its weighted sum by 255 once, not every tap).
fn byte_at(i: u32) -> f32 {
  return f32((src[i >> 2u] >> ((i & 3u) * 8u)) & 255u);
}

fn fword(r: array<u32, REC>, i: u32) -> f32 {
  return bitcast<f32>(r[i]);
}

fn op_at(ops: u32, slot: u32) -> u32 {
  return (ops >> (4u * slot)) & 15u;
}

// First slot at or after `first` holding a contrast op, or `count`.
fn next_contrast(ops: u32, count: u32, first: u32) -> u32 {
  var k = first;
  loop {
    if (k >= count || op_at(ops, k) == CONTRAST) { break; }
    k++;
  }
  return k;
}

fn grey(v: vec3f, c: u32) -> f32 {
  return select(v.x, dot(LUMA, v), c == 3u);
}

// torchvision's _rgb2hsv -> shift -> _hsv2rgb.
fn hue_shift(v: vec3f, shift: f32) -> vec3f {
  let maxc = max(v.x, max(v.y, v.z));
  let minc = min(v.x, min(v.y, v.z));
  let eq = maxc == minc;
  let cr = maxc - minc;
  let s = cr / select(maxc, 1.0, eq);
  let d = select(cr, 1.0, eq);
  let rc = (maxc - v.x) / d;
  let gc = (maxc - v.y) / d;
  let bc = (maxc - v.z) / d;
  var hh: f32;
  if (maxc == v.x) { hh = bc - gc; } else if (maxc == v.y) { hh = 2.0 + rc - bc; } else { hh = 4.0 + gc - rc; }
  var h = fract(hh / 6.0 + 1.0);
  h = fract(h + shift + 1.0);
  let i6 = floor(h * 6.0);
  let f = h * 6.0 - i6;
  let i = u32(i6) % 6u;
  let pp = clamp(maxc * (1.0 - s), 0.0, 1.0);
  let q = clamp(maxc * (1.0 - s * f), 0.0, 1.0);
  let t = clamp(maxc * (1.0 - s * (1.0 - f)), 0.0, 1.0);
  switch i {
    case 0u: { return vec3f(maxc, t, pp); }
    case 1u: { return vec3f(q, maxc, pp); }
    case 2u: { return vec3f(pp, maxc, t); }
    case 3u: { return vec3f(pp, q, maxc); }
    case 4u: { return vec3f(t, pp, maxc); }
    default: { return vec3f(maxc, pp, q); }
  }
}

fn colour_op(op: u32, f: f32, v: vec3f, c: u32, mean: f32) -> vec3f {
  switch op {
    case BRIGHTNESS: { return clamp(f * v, vec3f(0.0), vec3f(1.0)); }
    case CONTRAST: { return clamp(f * v + (1.0 - f) * mean, vec3f(0.0), vec3f(1.0)); }
    case SATURATION: { return clamp(f * v + (1.0 - f) * grey(v, c), vec3f(0.0), vec3f(1.0)); }
    case HUE: { return hue_shift(v, f); }
    case GRAYSCALE: { return vec3f(grey(v, c)); }
    default: { return v; }
  }
}

// Triangle-filter sample of the source at `u` (pixels), support `sup` per axis, taps clipped to [lo, hi) unless
// `zero` (then taps outside the image read 0 but keep their weight).
fn warp_sample(base: u32, u: vec2f, sup: vec2f, lo: vec2i, hi: vec2i, zero: bool, c: u32) -> vec3f {
  let w = i32(p.width);
  let h = i32(p.height);
  let plane = p.height * p.width;
  var k0 = vec2i(ceil(u - sup - 0.5));
  var k1 = vec2i(floor(u + sup - 0.5));
  if (!zero) {
    k0 = max(k0, lo);
    k1 = min(k1, hi - 1);
  }
  var acc = vec3f(0.0);
  var total = 0.0;
  for (var ky = k0.y; ky <= k1.y; ky++) {
    let wy = max(0.0, 1.0 - abs((f32(ky) + 0.5 - u.y) / sup.y));
    for (var kx = k0.x; kx <= k1.x; kx++) {
      let wgt = wy * max(0.0, 1.0 - abs((f32(kx) + 0.5 - u.x) / sup.x));
      total += wgt;
      if (wgt > 0.0 && kx >= 0 && ky >= 0 && kx < w && ky < h) {
        let at = base + u32(ky) * p.width + u32(kx);
        var s = vec3f(byte_at(at), 0.0, 0.0);
        if (c == 3u) { s = vec3f(s.x, byte_at(at + plane), byte_at(at + 2u * plane)); }
        acc += wgt * s;
      }
    }
  }
  return select(vec3f(0.0), acc / (total * 255.0), total > 0.0);
}

fn normalise(v: vec3f) -> vec3f {
  return (v - vec3f(p.mean0, p.mean1, p.mean2)) / vec3f(p.std0, p.std1, p.std2);
}

fn load(base: u32, i: u32, n: u32, c: u32) -> vec3f {
  if (c == 3u) { return vec3f(out[base + i], out[base + n + i], out[base + 2u * n + i]); }
  return vec3f(out[base + i], 0.0, 0.0);
}

fn store(base: u32, i: u32, n: u32, c: u32, v: vec3f) {
  out[base + i] = v.x;
  if (c == 3u) {
    out[base + n + i] = v.y;
    out[base + 2u * n + i] = v.z;
  }
}

@compute @workgroup_size(WG)
fn augment(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
           @builtin(num_workgroups) nwg: vec3u) {
  let b = wid.x + wid.y * nwg.x;
  if (b >= p.batch) { return; }
  if (lid.x < REC) { rw[lid.x] = rec[p.rec_base + b * REC + lid.x]; }
  let r = workgroupUniformLoad(&rw);

  let c = p.channels;
  let side = p.side;
  let n = side * side;
  let base = b * c * n;
  let src_base = r[0] * p.image_bytes;
  let count = r[1];
  let ops = r[2];
  let radius = r[3];
  let centre = vec2f(fword(r, 4u), fword(r, 5u));
  let a = mat2x2f(fword(r, 6u), fword(r, 8u), fword(r, 7u), fword(r, 9u)); // columns: (a11, a21), (a12, a22)
  let sup = vec2f(fword(r, 10u), fword(r, 11u));
  let lo = vec2i(i32(fword(r, 12u)), i32(fword(r, 13u)));
  let hi = vec2i(i32(fword(r, 14u)), i32(fword(r, 15u)));
  let zero = r[23] != 0u;
  let blur = radius > 0u;
  let half = f32(side) * 0.5;

  // colour passes: the first also warps; each one after the first starts with a contrast op
  var start = 0u;
  var end = next_contrast(ops, count, 0u);
  var mean = 0.0;
  var pass_no = 0u;
  loop {
    let last = end >= count;
    let final_pass = last && !blur;
    var part = 0.0;
    for (var i = lid.x; i < n; i += WG) {
      var v: vec3f;
      if (pass_no == 0u) {
        let d = vec2f(f32(i % side) + 0.5 - half, f32(i / side) + 0.5 - half);
        v = warp_sample(src_base, centre + a * d, sup, lo, hi, zero, c);
      } else {
        v = load(base, i, n, c);
      }
      for (var k = start; k < end; k++) {
        v = colour_op(op_at(ops, k), fword(r, 16u + k), v, c, mean);
      }
      if (!last) { part += grey(v, c); }
      store(base, i, n, c, select(v, normalise(v), final_pass));
    }
    if (last) { break; }
    red[lid.x] = part;
    workgroupBarrier();
    if (lid.x == 0u) {
      var sum = 0.0;
      for (var j = 0u; j < WG; j++) { sum += red[j]; }
      wmean = sum / f32(n);
    }
    mean = workgroupUniformLoad(&wmean);
    start = end;
    end = next_contrast(ops, count, start + 1u);
    pass_no++;
  }

  if (blur) {
    // the taps once per invocation (not per pixel): exp is dear on a software rasteriser's SIMD lanes
    let sigma = fword(r, 22u);
    let inv = -0.5 / (sigma * sigma);
    var taps: array<f32, 2 * MAX_RADIUS + 1>;
    var wsum = 0.0;
    for (var k = 0u; k <= 2u * radius; k++) {
      let o = f32(k) - f32(radius);
      taps[k] = exp(o * o * inv);
      wsum += taps[k];
    }
    for (var k = 0u; k <= 2u * radius; k++) { taps[k] = taps[k] / wsum; }
    let ir = i32(radius);
    let last = i32(side) - 1;
    storageBarrier();
    for (var i = lid.x; i < n; i += WG) {
      let x = i32(i % side);
      let row = i - i % side;
      for (var ch = 0u; ch < c; ch++) {
        let plane = base + ch * n + row;
        var acc = 0.0;
        for (var k = -ir; k <= ir; k++) {
          acc += taps[k + ir] * out[plane + u32(clamp(x + k, 0, last))];
        }
        tmp[base + ch * n + i] = acc;
      }
    }
    storageBarrier();
    for (var i = lid.x; i < n; i += WG) {
      let y = i32(i / side);
      let col = i % side;
      var v = vec3f(0.0);
      for (var ch = 0u; ch < c; ch++) {
        let plane = base + ch * n + col;
        var acc = 0.0;
        for (var k = -ir; k <= ir; k++) {
          acc += taps[k + ir] * tmp[plane + u32(clamp(y + k, 0, last)) * side];
        }
        v[ch] = acc;
      }
      store(base, i, n, c, normalise(v));
    }
  }
}

// Gathers the images of a batch from one chunk of the dataset: out image b = chunk row (indices[b] - chunk_start)
// when that row is in this chunk; bytes of other chunks' images are left as they are (one dispatch per chunk).
struct GatherParams { batch: u32, image_bytes: u32, chunk_start: u32, chunk_rows: u32 }

@group(0) @binding(0) var<storage, read> chunk: array<u32>;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(2) var<storage, read_write> gathered: array<u32>;
@group(1) @binding(0) var<uniform> g: GatherParams;

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
          @builtin(num_workgroups) nwg: vec3u) {
  let word = (wid.x + wid.y * nwg.x) * WG + lid.x;
  let total = g.batch * g.image_bytes;
  if (word * 4u >= total) { return; }
  if ((g.image_bytes & 3u) == 0u) { // whole words per image (MNIST, CIFAR): one word in, one word out
    let row = indices[word * 4u / g.image_bytes];
    if (row >= g.chunk_start && row - g.chunk_start < g.chunk_rows) {
      gathered[word] = chunk[((row - g.chunk_start) * g.image_bytes + (word * 4u) % g.image_bytes) >> 2u];
    }
    return;
  }
  var value = gathered[word];
  for (var k = 0u; k < 4u; k++) {
    let at = word * 4u + k;
    if (at >= total) { break; }
    let row = indices[at / g.image_bytes];
    if (row < g.chunk_start || row - g.chunk_start >= g.chunk_rows) { continue; }
    let at_src = (row - g.chunk_start) * g.image_bytes + at % g.image_bytes;
    let byte = (chunk[at_src >> 2u] >> ((at_src & 3u) * 8u)) & 255u;
    value = (value & ~(255u << (k * 8u))) | (byte << (k * 8u));
  }
  gathered[word] = value;
}
