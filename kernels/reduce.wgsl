// Reductions of a row-major [R, C] f32 matrix. Deterministic: every sum is taken in a fixed order that depends only
// on the shape and on WG (chosen from the shape), never on scheduling; no atomics.
//
// Rows (axis 1, argmax): one workgroup per row, rows spread over a 2-D grid (row = wid.x + wid.y * nwg.x). Invocation
// l accumulates elements l, l + WG, l + 2·WG, ... in order, then a tree in workgroup memory halves WG partials to one.
// Columns (axis 0): one invocation per column, looping over the rows in order.
override WG: u32 = 256; // a power of two

struct Params { rows: u32, cols: u32, divisor: f32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> index: array<u32>;
@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;
var<workgroup> best: array<u32, WG>;

// out[r] = sum_c x[r, c] / divisor (divisor 1 for a sum, C for a mean)
@compute @workgroup_size(WG)
fn sum_rows(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; } // uniform across the workgroup
  let l = lid.x;
  let base = row * p.cols;
  var s = 0.0;
  for (var c = l; c < p.cols; c += WG) { s += x[base + c]; }
  partial[l] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { partial[l] += partial[l + k]; }
    workgroupBarrier();
  }
  if (l == 0u) { out[row] = partial[0] / p.divisor; }
}

// out[c] = sum_r x[r, c] / divisor (divisor 1 for a sum, R for a mean)
@compute @workgroup_size(WG)
fn sum_cols(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(num_workgroups) nwg: vec3u) {
  let c = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (c >= p.cols) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.rows; r++) { s += x[r * p.cols + c]; }
  out[c] = s / p.divisor;
}

const NONE = 0xffffffffu; // no candidate (an invocation past the end of a short row)

// Whether candidate (v, i) beats (bv, bi): a larger value, or an equal value at a smaller index; NONE never wins.
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}

// index[r] = the first c with x[r, c] = max_c x[r, c]
@compute @workgroup_size(WG)
fn argmax_rows(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let l = lid.x;
  let base = row * p.cols;
  var bv = 0.0;
  var bi = NONE;
  for (var c = l; c < p.cols; c += WG) {
    let v = x[base + c];
    if (beats(v, c, bv, bi)) { bv = v; bi = c; }
  }
  partial[l] = bv;
  best[l] = bi;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k && beats(partial[l + k], best[l + k], partial[l], best[l])) {
      partial[l] = partial[l + k];
      best[l] = best[l + k];
    }
    workgroupBarrier();
  }
  if (l == 0u) { index[row] = best[0]; }
}
