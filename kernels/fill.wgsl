// fill: out = value; copy: out = x; copy_at: out[at + i] = x[i] for the n words of x. One invocation per element, flat index over a 2-D grid of workgroups.
override WG: u32 = 256;

struct Params { n: u32, value: f32, at: u32 }

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

fn flat(wid: vec3u, lid: vec3u, nwg: vec3u) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[i] = p.value; }
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[i] = x[i]; }
}

@compute @workgroup_size(WG)
fn copy_at(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
           @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg);
  if (i < p.n) { out[p.at + i] = x[i]; }
}
