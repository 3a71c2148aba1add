// Row-wise L2 normalisation of a row-major [N, d] f32 matrix, and its gradient. One workgroup per row (rows over a 2-D
// grid: row = wid.x + wid.y * nwg.x); invocation l handles columns l, l + WG, ...; the row's sums (‖x‖², y·dy) go
// through a fixed-order tree in workgroup memory, so results are deterministic. As torch.nn.functional.normalize:
// y = x / max(‖x‖, eps).
override WG: u32 = 256; // a power of two

struct Params { rows: u32, cols: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>; // backward only
@group(0) @binding(2) var<storage, read> dy: array<f32>; // backward only
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // forward: y; backward: dx
@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> partial: array<vec2f, WG>;

// Sums (a, b) over the workgroup; every invocation gets the total. Call in uniform control flow.
fn total(l: u32, v: vec2f) -> vec2f {
  partial[l] = v;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { partial[l] += partial[l + k]; }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&partial[0]);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
           @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; } // uniform across the workgroup
  let l = lid.x;
  let base = row * p.cols;
  var ss = 0.0;
  for (var c = l; c < p.cols; c += WG) { let v = x[base + c]; ss += v * v; }
  let norm = sqrt(total(l, vec2f(ss, 0.0)).x);
  let denom = max(norm, p.eps);
  for (var c = l; c < p.cols; c += WG) { out[base + c] = x[base + c] / denom; }
}

// dx = (dy - y (y·dy)) / ‖x‖ where ‖x‖ > eps; dx = dy / eps where the clamp is active (the denominator is then a
// constant), which is what autograd gives for torch's normalize.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let l = lid.x;
  let base = row * p.cols;
  var acc = vec2f(0.0);
  for (var c = l; c < p.cols; c += WG) {
    let v = x[base + c];
    acc += vec2f(v * v, y[base + c] * dy[base + c]);
  }
  let sums = total(l, acc);
  let norm = sqrt(sums.x);
  let clamped = norm < p.eps; // at norm = eps torch's clamp_min passes the gradient: so do we
  let denom = max(norm, p.eps);
  let ydy = select(sums.y, 0.0, clamped);
  for (var c = l; c < p.cols; c += WG) {
    out[base + c] = (dy[base + c] - y[base + c] * ydy) / denom;
  }
}
