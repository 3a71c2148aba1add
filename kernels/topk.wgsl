// Top-k selection per row: the k best candidates of each row. "Best" is a total order: the larger value, and on equal
// values the smaller index, so the selected set and its order never depend on scheduling.
//
// One invocation per row keeps a binary heap of its k best so far (root = the worst of them) in private memory,
// starting from k empty entries (LOWEST, NONE) that any real candidate beats. A candidate that does not beat the root
// costs one load and one comparison; the heap is touched by about k ln(L / k) of L candidates in random order. The
// scan is a loop of its own that runs until some candidate may enter: llvmpipe runs invocations as SIMD lanes with
// predicated branches, so an `if` around the heap update inside the scan would pay for the (masked) update on every
// candidate. No workgroup memory, no barriers.
//
// A launch scans one run of a row; src/ops/topk.ts chains the runs of a long row, each launch resuming from the heap
// the previous one left in the outputs (`resume`), the last one sorting it (`finish`). Runs are short because
// llvmpipe silently ends every loop of an invocation once it has made 65535 loop trips in all (its
// LP_MAX_TGSI_LOOP_ITERATIONS guard against hangs): a row of 60,000 in one launch came out wrong.
//
// Candidate l of row r sits at values[offset + r * stride_row + l * stride_len]. With stride_row = 1 and
// stride_len = rows (a similarity matrix bank · queriesᵀ of shape [L, rows]) neighbouring invocations read
// neighbouring words. Its index is base + l, or indices[same position] when `given` is 1 (merging candidate lists).
// Output row r: out_values / out_indices [out_offset + r * out_stride + j] for j < k: the heap as it stands, or with
// `finish` sorted best first. Empty entries remain where a row had fewer than k candidates. A value that is not
// >= LOWEST (NaN, −inf) never enters.
override WG: u32 = 64;

const KMAX: u32 = 256u;
const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -3.40282347e38;

struct Params {
  rows: u32,
  len: u32,
  stride_len: u32,
  stride_row: u32,
  offset: u32,
  base: u32,
  k: u32,
  out_stride: u32,
  out_offset: u32,
  given: u32,
  resume: u32,
  finish: u32,
}

@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var<storage, read> indices: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_values: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_indices: array<u32>;
@group(1) @binding(0) var<uniform> p: Params;

// (v, i) comes before (w, j): a larger value, or the same value and a smaller index.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
  return v > w || (v == w && i < j);
}

// Puts (v, i) at the root of the heap of `size` entries and sifts it down (parents are worse than their children).
fn sift_down(hv: ptr<function, array<f32, KMAX>>, hi: ptr<function, array<u32, KMAX>>, size: u32, v: f32, i: u32) {
  var at = 0u;
  loop {
    let left = 2u * at + 1u;
    if (left >= size) { break; }
    var child = left;
    let right = left + 1u;
    if (right < size && better((*hv)[left], (*hi)[left], (*hv)[right], (*hi)[right])) { child = right; }
    if (!better(v, i, (*hv)[child], (*hi)[child])) { break; }
    (*hv)[at] = (*hv)[child];
    (*hi)[at] = (*hi)[child];
    at = child;
  }
  (*hv)[at] = v;
  (*hi)[at] = i;
}

@compute @workgroup_size(WG)
fn select_topk(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(num_workgroups) nwg: vec3u) {
  let r = (wid.x + wid.y * nwg.x) * WG + lid.x;
  if (r >= p.rows) { return; }
  var hv: array<f32, KMAX>;
  var hi: array<u32, KMAX>;
  let k = p.k;
  let out = p.out_offset + r * p.out_stride;
  // An array of empty entries, or a heap written by the previous run, is a valid heap as it stands.
  for (var j = 0u; j < k; j++) {
    if (p.resume != 0u) {
      hv[j] = out_values[out + j];
      hi[j] = out_indices[out + j];
    } else {
      hv[j] = LOWEST;
      hi[j] = NONE;
    }
  }
  var root_v = hv[0];
  var root_i = hi[0];
  let first = p.offset + r * p.stride_row;
  var l = 0u;
  loop {
    loop {
      if (l >= p.len) { break; }
      if (values[first + l * p.stride_len] >= root_v) { break; }
      l += 1u;
    }
    if (l >= p.len) { break; }
    let at = first + l * p.stride_len;
    let v = values[at];
    var i = p.base + l;
    if (p.given != 0u) { i = indices[at]; }
    if (better(v, i, root_v, root_i)) {
      sift_down(&hv, &hi, k, v, i);
      root_v = hv[0];
      root_i = hi[0];
    }
    l += 1u;
  }
  if (p.finish != 0u) {
    // Heap sort: move the worst to the end, one at a time; what remains in front is sorted best first.
    var end = k;
    loop {
      if (end <= 1u) { break; }
      end -= 1u;
      let v = hv[end];
      let i = hi[end];
      hv[end] = hv[0];
      hi[end] = hi[0];
      sift_down(&hv, &hi, end, v, i);
    }
  }
  for (var j = 0u; j < k; j++) {
    out_values[out + j] = hv[j];
    out_indices[out + j] = hi[j];
  }
}
