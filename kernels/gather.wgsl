// Row gather: out[b, :] = x[index[b], :] for row-major x [N, d] and out [B, d]. It copies 32-bit words, so any 32-bit
// dtype works (f32, u32, i32). One invocation per output word (flat index over a 2-D grid, bounds-checked). An index
// outside [0, N) gives a row of zero words (a kernel cannot fail; checking indices is the caller's duty).
override WG: u32 = 256;

struct Params { rows: u32, cols: u32, n: u32 } // rows: N of x; cols: d; n: B·d output words

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn gather_rows(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(num_workgroups) nwg: vec3u) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (i >= p.n) { return; }
  let b = i / p.cols;
  let c = i - b * p.cols;
  let r = index[b];
  out[i] = select(0u, x[r * p.cols + c], r < p.rows);
}
