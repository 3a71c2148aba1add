// Pooling over NCHW f32 planes: max pooling (forward with its argmax, and backward) and global average pooling
// (forward and backward). One invocation per output element, flat index over a 2-D grid of workgroups.
//
// Max pooling follows PyTorch: padding acts as -inf (a window only ever sees real elements), ties go to the first
// element in row-major window order, a NaN wins (and a later NaN wins over an earlier one), and the index stored is
// ih·W + iw within the (n, c) plane. The backward is a gather, one invocation per input element summing, in a fixed
// order, the gradients of the windows whose argmax it is: overlapping windows need no atomics.

override WG: u32 = 256;

struct Params {
  planes: u32, // N·C
  H: u32, W: u32, OH: u32, OW: u32,
  KH: u32, KW: u32, sh: u32, sw: u32, ph: u32, pw: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> indices: array<u32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> argmax: array<u32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

fn flat(wid: vec3u, lid: vec3u, nwg: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// Bit test rather than `v != v`: WGSL lets a compiler assume no NaN at run time, so comparisons may be folded.
fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

struct Best { value: f32, at: u32 }

// The maximum of output element o's window and its index in the plane.
fn window_max(o: u32) -> Best {
  let plane = o / (p.OH * p.OW);
  let r = o % (p.OH * p.OW);
  let top = i32((r / p.OW) * p.sh) - i32(p.ph);
  let left = i32((r % p.OW) * p.sw) - i32(p.pw);
  let h0 = u32(max(top, 0));
  let h1 = u32(min(top + i32(p.KH), i32(p.H)));
  let w0 = u32(max(left, 0));
  let w1 = u32(min(left + i32(p.KW), i32(p.W)));
  let base = plane * p.H * p.W;
  var best = Best(bitcast<f32>(0xff800000u), h0 * p.W + w0); // -inf, at the window's first element
  for (var ih = h0; ih < h1; ih++) {
    for (var iw = w0; iw < w1; iw++) {
      let v = x[base + ih * p.W + iw];
      if (v > best.value || is_nan(v)) {
        best = Best(v, ih * p.W + iw);
      }
    }
  }
  return best;
}

@compute @workgroup_size(WG)
fn max_pool(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(num_workgroups) nwg: vec3u) {
  let o = flat(wid, lid, nwg);
  if (o >= p.planes * p.OH * p.OW) {
    return;
  }
  let best = window_max(o);
  y[o] = best.value;
  indices[o] = best.at;
}

@compute @workgroup_size(WG)
fn max_pool_values(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                   @builtin(num_workgroups) nwg: vec3u) {
  let o = flat(wid, lid, nwg);
  if (o >= p.planes * p.OH * p.OW) {
    return;
  }
  y[o] = window_max(o).value;
}

// First and one-past-last output row (or column) whose window covers input row i:
// o·s − pad ≤ i ≤ o·s − pad + k − 1.
fn covering(i: u32, k: u32, s: u32, pad: u32, outs: u32) -> vec2u {
  let hi = min((i + pad) / s + 1u, outs);
  let lo = select(0u, (i + pad + s - k) / s, i + pad + 1u > k); // ceil((i + pad − k + 1) / s)
  return vec2u(lo, max(lo, hi));
}

@compute @workgroup_size(WG)
fn max_pool_backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                     @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  let HW = p.H * p.W;
  if (i >= p.planes * HW) {
    return;
  }
  let plane = i / HW;
  let at = i % HW;
  let rows = covering(at / p.W, p.KH, p.sh, p.ph, p.OH);
  let cols = covering(at % p.W, p.KW, p.sw, p.pw, p.OW);
  let base = plane * p.OH * p.OW;
  var g = 0.0;
  for (var oh = rows.x; oh < rows.y; oh++) {
    for (var ow = cols.x; ow < cols.y; ow++) {
      let o = base + oh * p.OW + ow;
      if (argmax[o] == at) {
        g += dy[o];
      }
    }
  }
  dx[i] = g;
}

// Global average pooling: y[plane] = mean of its H·W elements, summed in order.
@compute @workgroup_size(WG)
fn global_avg_pool(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                   @builtin(num_workgroups) nwg: vec3u) {
  let plane = flat(wid, lid, nwg);
  if (plane >= p.planes) {
    return;
  }
  let HW = p.H * p.W;
  var s = 0.0;
  for (var k = 0u; k < HW; k++) {
    s += x[plane * HW + k];
  }
  y[plane] = s / f32(HW);
}

@compute @workgroup_size(WG)
fn global_avg_pool_backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                            @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  let HW = p.H * p.W;
  if (i >= p.planes * HW) {
    return;
  }
  dx[i] = dy[i / HW] / f32(HW);
}
