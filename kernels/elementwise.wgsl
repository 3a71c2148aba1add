// Elementwise f32 ops, one invocation per element over a 2-D grid of workgroups (flat index, bounds-checked).
// Bindings: x and y are inputs, out a separate output, io an in-place operand (WebGPU forbids binding one buffer
// twice in a dispatch when one binding is writable, so in-place variants bind the tensor once, as io).
override WG: u32 = 256;

struct Params { n: u32, a: f32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> io: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

fn flat(wid: vec3u, lid: vec3u, nwg: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// out = x + y
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
       @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[i] = x[i] + y[i]; }
}

// io = io + y
@compute @workgroup_size(WG)
fn add_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { io[i] = io[i] + y[i]; }
}

// out = a * x
@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
         @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[i] = p.a * x[i]; }
}

// io = a * io
@compute @workgroup_size(WG)
fn scale_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                 @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { io[i] = p.a * io[i]; }
}

// io = io + a * x (axpy; io is the y of the BLAS name). The compiler may fuse it into an FMA: one rounding or two.
@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { io[i] = io[i] + p.a * x[i]; }
}

// out = max(x, 0), written as a select: x > 0 is false for NaN, so NaN gives 0 where the compiler keeps IEEE order.
@compute @workgroup_size(WG)
fn relu(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[i] = select(0.0, x[i], x[i] > 0.0); }
}

// io = max(io, 0)
@compute @workgroup_size(WG)
fn relu_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { let v = io[i]; io[i] = select(0.0, v, v > 0.0); }
}

// out = y where x > 0 else 0 (x: the relu input, y: the upstream gradient, out: the input gradient)
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                 @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[i] = select(0.0, y[i], x[i] > 0.0); }
}

// io = io where x > 0 else 0 (the upstream gradient overwritten by the input gradient)
@compute @workgroup_size(WG)
fn relu_backward_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                         @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { io[i] = select(0.0, io[i], x[i] > 0.0); }
}
