// The baseline for bench/main.ts: one output per invocation, no tiling, no blocking. out = a · b, a [M, K], b [K, N].
struct Params {
  M: u32,
  N: u32,
  K: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) id: vec3u) {
  let n = id.x;
  let m = id.y;
  if (m >= p.M || n >= p.N) {
    return;
  }
  var sum = 0.0;
  for (var k = 0u; k < p.K; k++) {
    sum = fma(a[m * p.K + k], b[k * p.N + n], sum);
  }
  out[m * p.N + n] = sum;
}
