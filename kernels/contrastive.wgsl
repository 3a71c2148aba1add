// Helpers of the contrastive losses, whose logits are laid out as [N, C] with row i's positive in column i:
//   InfoNCE:  columns = [k_0 .. k_{N-1}, queue_0 .. queue_{r-1}]; the other rows' keys (j < N, j != i) are masked, so
//             row i sees exactly MoCo's [q·k_i, q·queue] (equal to putting the positive in column 0).
//   ProtoNCE: columns = [c_{pos_0} .. c_{pos_{N-1}}, c_{neg_0} .. c_{neg_{r-1}}]; the official code keeps the other
//             rows' positives as negatives (its issue #5); mode 2 masks those that are row i's own prototype.
// A masked logit is MASKED, a large finite negative (WGSL may assume no infinities): its softmax weight is exactly 0.
override WG: u32 = 256;

struct Params {
  rows: u32,  // N
  cols: u32,  // C
  mode: u32,  // 0: none among j < N, 1: all j < N except i, 2: j < N with sel[j] == sel[i], except i
  valid: u32, // columns at and past `valid` are masked (fewer negatives than room for them)
}

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read> sel: array<u32>;
@group(0) @binding(2) var<storage, read_write> accuracy: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

const MASKED = -1.0e30;

@compute @workgroup_size(WG)
fn mask(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(num_workgroups) nwg: vec3u) {
  let e = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (e >= p.rows * p.cols) { return; }
  let i = e / p.cols;
  let j = e % p.cols;
  var masked = j >= p.valid;
  if (j < p.rows && j != i) {
    masked = masked || p.mode == 1u || (p.mode == 2u && sel[j] == sel[i]);
  }
  if (masked) { logits[e] = MASKED; }
}

var<workgroup> hits: array<f32, WG>;

// NaN by its bits: WGSL lets compilers assume floats are never NaN, so `x != x` may fold to false.
fn is_nan(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// accuracy[0] = the fraction of rows whose first maximum is at column i (top-1 against target i), where the other
// batch columns j < N with sel[j] == sel[i] count as column i: unmasked ProtoNCE repeats row i's own prototype there
// (same logit), and picking a copy of it is a hit. (Masked modes never let those columns win.) A NaN logit in the
// row makes it a miss: a diverged step must not read as 100% accurate. One workgroup;
// invocation l counts rows l, l + WG, ...; the counts are added in a fixed tree order.
@compute @workgroup_size(WG)
fn top1(@builtin(local_invocation_id) lid: vec3u) {
  let l = lid.x;
  var count = 0.0;
  for (var i = l; i < p.rows; i += WG) {
    let base = i * p.cols;
    let mine = logits[base + i];
    var best = !is_nan(mine);
    for (var j = 0u; j < p.cols && best; j++) {
      if (j < p.rows && sel[j] == sel[i]) { continue; }
      let v = logits[base + j];
      if (is_nan(v) || v > mine || (v == mine && j < i)) { best = false; }
    }
    if (best) { count += 1.0; }
  }
  hits[l] = count;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (l < k) { hits[l] += hits[l + k]; }
    workgroupBarrier();
  }
  if (l == 0u) { accuracy[0] = hits[0] / f32(p.rows); }
}
