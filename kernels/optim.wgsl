// Parameter updates over flat f32 buffers (a whole model's parameters in one dispatch), one invocation per element
// (`*4` entry points: per 4 elements, for lengths divisible by 4).
//
// sgd: PyTorch's SGD with momentum and weight decay (dampening 0, no Nesterov), in its order of operations:
//   g = grad + weight_decay·param;  buf = momentum·buf + g;  param = param − lr·buf
// PyTorch starts buf at g on the first step; from buf = 0, momentum·0 + g = g is the same.
// ema: the momentum encoder, θk ← θk·m + θq·(1 − m), both factors given (1 − m is rounded once, on the host, in
// float64 then to f32, as PyTorch's Python float scalar).
override WG: u32 = 256;

struct SgdParams { n: u32, lr: f32, momentum: f32, weight_decay: f32 }
struct EmaParams { n: u32, m: f32, one_minus_m: f32 }

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> buf: array<f32>;
@group(0) @binding(0) var<storage, read_write> param4: array<vec4f>;
@group(0) @binding(1) var<storage, read> grad4: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> buf4: array<vec4f>;
@group(1) @binding(0) var<uniform> sgd_p: SgdParams;

// The query encoder is only read, but bound read_write: WebGPU rejects a buffer bound read-only and read-write in one
// dispatch, and the two encoders may be views of one buffer.
@group(0) @binding(3) var<storage, read_write> key: array<f32>;
@group(0) @binding(4) var<storage, read_write> query: array<f32>;
@group(0) @binding(3) var<storage, read_write> key4: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> query4: array<vec4f>;
@group(1) @binding(0) var<uniform> ema_p: EmaParams;

fn flat(wid: vec3u, lid: vec3u, nwg: vec3u) -> u32 { return (wid.x + wid.y * nwg.x) * WG + lid.x; }

@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
       @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i >= sgd_p.n) { return; }
  let g = grad[i] + sgd_p.weight_decay * param[i];
  let b = sgd_p.momentum * buf[i] + g;
  buf[i] = b;
  param[i] = param[i] - sgd_p.lr * b;
}

@compute @workgroup_size(WG)
fn sgd4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i >= sgd_p.n) { return; }
  let p = param4[i];
  let g = grad4[i] + sgd_p.weight_decay * p;
  let b = sgd_p.momentum * buf4[i] + g;
  buf4[i] = b;
  param4[i] = p - sgd_p.lr * b;
}

@compute @workgroup_size(WG)
fn ema(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
       @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i >= ema_p.n) { return; }
  key[i] = key[i] * ema_p.m + query[i] * ema_p.one_minus_m;
}

@compute @workgroup_size(WG)
fn ema4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i >= ema_p.n) { return; }
  key4[i] = key4[i] * ema_p.m + query4[i] * ema_p.one_minus_m;
}
