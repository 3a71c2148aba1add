// Row-wise softmax cross-entropy of logits [N, C] (row-major f32) against u32 targets [N].
//   forward:  loss[i] = logsumexp(x_i) − x_i[t_i], computed as m + log Σ_j exp(x_ij − m) with m = max_j x_ij
//             (numerically stable for any finite logits)
//   mean:     mean[0] = (Σ_i loss[i]) / N, one workgroup, fixed order
//   backward: dlogits[i, j] = (softmax(x_i)_j − [j = t_i]) / N, the gradient of the mean loss
// One workgroup per row (rows over a 2-D grid: row = wid.x + wid.y * nwg.x); invocation l takes columns l, l + WG, ...
// and the row's max and sum go through fixed-order trees in workgroup memory: deterministic, no atomics.
// A target outside [0, C) cannot be reported from here: its row's loss and gradient are NaN (so is the mean).
override WG: u32 = 256; // a power of two

struct Params { rows: u32, cols: u32, nan: u32 } // nan: the bits of a quiet NaN (WGSL has no NaN literal)

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

const LOWEST = -3.40282347e38; // the most negative finite f32: the max of no elements

// The max over the workgroup of each invocation's v, given to every invocation. Uniform control flow only.
fn workgroup_max(l: u32, v: f32) -> f32 {
  workgroupBarrier(); // earlier readers of partial are done
  partial[l] = v;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { partial[l] = max(partial[l], partial[l + k]); }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&partial[0]);
}

// The sum over the workgroup of each invocation's v (fixed tree order), given to every invocation.
fn workgroup_sum(l: u32, v: f32) -> f32 {
  workgroupBarrier();
  partial[l] = v;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { partial[l] += partial[l + k]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&partial[0]);
}

// The row's max m and Σ_j exp(x_j − m).
fn row_stats(l: u32, base: u32) -> vec2f {
  var m = LOWEST;
  for (var c = l; c < p.cols; c += WG) { m = max(m, logits[base + c]); }
  m = workgroup_max(l, m);
  var s = 0.0;
  for (var c = l; c < p.cols; c += WG) { s += exp(logits[base + c] - m); }
  return vec2f(m, workgroup_sum(l, s));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
           @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; } // uniform across the workgroup
  let l = lid.x;
  let base = row * p.cols;
  let ms = row_stats(l, base);
  if (l == 0u) {
    let t = targets[row];
    let x_t = logits[base + min(t, p.cols - 1u)];
    loss[row] = select(bitcast<f32>(p.nan), ms.x + log(ms.y) - x_t, t < p.cols);
  }
}

@compute @workgroup_size(WG)
fn mean_loss(@builtin(local_invocation_id) lid: vec3u) {
  let l = lid.x;
  var s = 0.0;
  for (var i = l; i < p.rows; i += WG) { s += loss[i]; }
  let total = workgroup_sum(l, s);
  if (l == 0u) { mean[0] = total / f32(p.rows); }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let l = lid.x;
  let base = row * p.cols;
  let ms = row_stats(l, base);
  let t = targets[row];
  let n = f32(p.rows);
  let bad = t >= p.cols;
  for (var c = l; c < p.cols; c += WG) {
    let prob = exp(logits[base + c] - ms.x) / ms.y;
    let g = (prob - select(0.0, 1.0, c == t)) / n;
    dlogits[base + c] = select(g, bitcast<f32>(p.nan), bad);
  }
}
