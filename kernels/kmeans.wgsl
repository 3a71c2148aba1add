// k-means on row-chunked data (the E-step of PCL). Rows are padded to a multiple of 4 floats and read as vec4.
//
// Determinism: no float atomics anywhere. Cluster sizes are counted with integer atomics (order-free); the centroid
// sums walk each cluster's members in increasing point index, which a stable radix sort of the assignments provides;
// the objective is summed in fixed blocks. Same input, same adapter: same bits.
//
// Entry points, in the order an iteration uses them:
//   assign8/16     nearest centroid of each row of one chunk (running best, never an N x K matrix), its squared
//                  distance, and the chunk's cluster sizes
//   objective      partial sums of the distances over fixed blocks of rows (summed on the host in float64)
//   radix_count    per-block histogram of one 8-bit digit of the assignments
//   radix_scan     exclusive prefix sum of the digit-major histogram table (one workgroup)
//   radix_scatter  stable scatter by that digit: after all digits, point indices ordered by (cluster, index)
//   accumulate     centroid sums over one chunk's members in index order; the last chunk divides by the size
//   record         where each cluster's members start in the sorted order, and the iteration's sizes, objective
//                  partials and centroids copied into the window's slot (read back once per window)
//   split          copies and perturbs centroids for empty clusters, as planned on the host
//   restore        an iteration's centroids and norms back from the window's history (to redo it with splits)
//   norms          squared norm of each centroid (after an L2 normalisation in spherical mode)
//   gather         rows picked by index from one source chunk (initial centroids, the training subsample)
//   pad            a [rows, d] chunk into the padded [rows, 4 * d4] layout
//   nonfinite      count and first position of NaN/Inf values in a [rows, d] chunk
override WG: u32 = 64;

const RADIX: u32 = 256u; // the radix kernels run RADIX invocations per workgroup
const TILES: u32 = 4u; // a radix block is TILES x RADIX consecutive elements
const BIG: f32 = 3.0e38;

fn flat(wid: vec3u, lid: vec3u, nwg: vec3u, size: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * size + lid.x;
}

// ---------------------------------------------------------------------------------------------------------------
// assign8 / assign16: one invocation per 8 (16) consecutive rows, looping over the centroids 16 at a time with an
// 8 x 16 (16 x 16) block of dot products in registers (no workgroup memory, no barriers), the layout of
// matmul.wgsl's `reg4`: per 4 dims, 8 + 16 vec4 loads feed 512 FMAs (16 + 16 feed 1024), which is what llvmpipe
// (a load costs a loop over the lanes) rewards. The score
// ‖c‖² − 2 x·c picks the centroid; ties keep the lowest index because centroids are visited in increasing order
// and only a strictly smaller score replaces the best. The distance is ‖x‖² + score, clamped at 0 as faiss does
// (cancellation can make it slightly negative). `cnorm4` is padded to a multiple of 16 centroids.

struct AssignParams { rows: u32, k: u32, d4: u32, first: u32, count_base: u32 }

@group(0) @binding(0) var<storage, read> x: array<vec4f>;
@group(0) @binding(1) var<storage, read> cent: array<vec4f>;
@group(0) @binding(2) var<storage, read> cnorm4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> dist: array<f32>;
@group(0) @binding(5) var<storage, read_write> counts: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> ap: AssignParams;

/** 16 consecutive centroids' values at one dimension, or 16 scores. */
struct Row16 { c0: vec4f, c1: vec4f, c2: vec4f, c3: vec4f }

/** Centroids j .. j + 15 at dimensions 4v .. 4v + 3 (one Row16 per dimension). */
struct Panel16 { k0: Row16, k1: Row16, k2: Row16, k3: Row16 }

fn axpy16(acc: Row16, s: f32, y: Row16) -> Row16 {
  let v = vec4f(s);
  return Row16(fma(v, y.c0, acc.c0), fma(v, y.c1, acc.c1), fma(v, y.c2, acc.c2), fma(v, y.c3, acc.c3));
}

/** acc += x[4v .. 4v + 3] · panel, dimension by dimension. */
fn step16(acc: Row16, xv: vec4f, p: Panel16) -> Row16 {
  return axpy16(axpy16(axpy16(axpy16(acc, xv.x, p.k0), xv.y, p.k1), xv.z, p.k2), xv.w, p.k3);
}

/** Four centroids' 4-dim slices (rows) regrouped as four dimensions' 4-centroid vectors: free on SIMD lanes. */
fn tr(y0: vec4f, y1: vec4f, y2: vec4f, y3: vec4f) -> mat4x4f {
  return transpose(mat4x4f(y0, y1, y2, y3));
}

/** Centroids j .. j + 15 (clamped to the last one) at dimensions 4v .. 4v + 3. */
fn panel(v: u32, j: u32) -> Panel16 {
  let d4 = ap.d4;
  let last = ap.k - 1u;
  let t0 = tr(cent[j * d4 + v], cent[min(j + 1u, last) * d4 + v], cent[min(j + 2u, last) * d4 + v],
              cent[min(j + 3u, last) * d4 + v]);
  let t1 = tr(cent[min(j + 4u, last) * d4 + v], cent[min(j + 5u, last) * d4 + v],
              cent[min(j + 6u, last) * d4 + v], cent[min(j + 7u, last) * d4 + v]);
  let t2 = tr(cent[min(j + 8u, last) * d4 + v], cent[min(j + 9u, last) * d4 + v],
              cent[min(j + 10u, last) * d4 + v], cent[min(j + 11u, last) * d4 + v]);
  let t3 = tr(cent[min(j + 12u, last) * d4 + v], cent[min(j + 13u, last) * d4 + v],
              cent[min(j + 14u, last) * d4 + v], cent[min(j + 15u, last) * d4 + v]);
  return Panel16(Row16(t0[0], t1[0], t2[0], t3[0]), Row16(t0[1], t1[1], t2[1], t3[1]),
                 Row16(t0[2], t1[2], t2[2], t3[2]), Row16(t0[3], t1[3], t2[3], t3[3]));
}

struct Best { score: f32, index: u32 }

fn pick4(b: Best, s: vec4f, j: u32) -> Best {
  var r = b;
  if (j < ap.k && s.x < r.score) { r = Best(s.x, j); }
  if (j + 1u < ap.k && s.y < r.score) { r = Best(s.y, j + 1u); }
  if (j + 2u < ap.k && s.z < r.score) { r = Best(s.z, j + 2u); }
  if (j + 3u < ap.k && s.w < r.score) { r = Best(s.w, j + 3u); }
  return r;
}

/** The best of `b` and the scores ‖c‖² − 2 x·c of centroids j .. j + 15, the earliest on ties. */
fn pick16(b: Best, cn: Row16, dots: Row16, j: u32) -> Best {
  let r = pick4(pick4(b, cn.c0 - 2.0 * dots.c0, j), cn.c1 - 2.0 * dots.c1, j + 4u);
  return pick4(pick4(r, cn.c2 - 2.0 * dots.c2, j + 8u), cn.c3 - 2.0 * dots.c3, j + 12u);
}

// A block of 8 rows: their offsets in x (rows past the end re-read the last row, never written, so that the inner
// loop has no branches), their dot products with 16 centroids, their best centroids so far.
struct Rows8 { b0: u32, b1: u32, b2: u32, b3: u32, b4: u32, b5: u32, b6: u32, b7: u32 }
struct Dots8 { r0: Row16, r1: Row16, r2: Row16, r3: Row16, r4: Row16, r5: Row16, r6: Row16, r7: Row16 }
alias Best8 = array<Best, 8>;

fn rows8(r0: u32) -> Rows8 {
  let last = ap.rows - 1u;
  let d4 = ap.d4;
  return Rows8(min(r0, last) * d4, min(r0 + 1u, last) * d4, min(r0 + 2u, last) * d4, min(r0 + 3u, last) * d4,
               min(r0 + 4u, last) * d4, min(r0 + 5u, last) * d4, min(r0 + 6u, last) * d4, min(r0 + 7u, last) * d4);
}

fn zero8() -> Dots8 {
  let z = Row16(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0));
  return Dots8(z, z, z, z, z, z, z, z);
}

fn dots8(a: Dots8, r: Rows8, v: u32, p: Panel16) -> Dots8 {
  return Dots8(step16(a.r0, x[r.b0 + v], p), step16(a.r1, x[r.b1 + v], p), step16(a.r2, x[r.b2 + v], p),
               step16(a.r3, x[r.b3 + v], p), step16(a.r4, x[r.b4 + v], p), step16(a.r5, x[r.b5 + v], p),
               step16(a.r6, x[r.b6 + v], p), step16(a.r7, x[r.b7 + v], p));
}

fn cnorm16(j: u32) -> Row16 {
  let q = j / 4u;
  return Row16(cnorm4[q], cnorm4[q + 1u], cnorm4[q + 2u], cnorm4[q + 3u]);
}

fn pick8(b: Best8, cn: Row16, a: Dots8, j: u32) -> Best8 {
  return Best8(pick16(b[0], cn, a.r0, j), pick16(b[1], cn, a.r1, j), pick16(b[2], cn, a.r2, j),
               pick16(b[3], cn, a.r3, j), pick16(b[4], cn, a.r4, j), pick16(b[5], cn, a.r5, j),
               pick16(b[6], cn, a.r6, j), pick16(b[7], cn, a.r7, j));
}

fn none8() -> Best8 {
  let n = Best(BIG, 0u);
  return Best8(n, n, n, n, n, n, n, n);
}

/** Rows r0 .. r0 + 7 that exist: label, distance ‖x‖² + score (clamped at 0), and the cluster's count. */
fn finish8(r0: u32, best: Best8) {
  for (var i = 0u; i < 8u; i++) {
    let row = r0 + i;
    if (row < ap.rows) {
      var xn = 0.0;
      for (var v = 0u; v < ap.d4; v++) {
        let xv = x[row * ap.d4 + v];
        xn += dot(xv, xv);
      }
      let b = best[i];
      labels[ap.first + row] = b.index;
      dist[ap.first + row] = max(0.0, xn + b.score);
      atomicAdd(&counts[ap.count_base + b.index], 1u);
    }
  }
}

// assign8: 8 rows per invocation (8 x 16 accumulators: what a GPU's registers hold without spilling).
@compute @workgroup_size(WG)
fn assign8(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
           @builtin(num_workgroups) nwg: vec3u) {
  let r0 = flat(wid, lid, nwg, WG) * 8u;
  if (r0 >= ap.rows) { return; }
  let ra = rows8(r0);
  var ba = none8();
  for (var j = 0u; j < ap.k; j += 16u) {
    var a = zero8();
    for (var v = 0u; v < ap.d4; v++) { a = dots8(a, ra, v, panel(v, j)); }
    ba = pick8(ba, cnorm16(j), a, j);
  }
  finish8(r0, ba);
}

// assign16: 16 rows per invocation sharing each centroid panel (1024 FMAs per 32 loads): 1.3x faster than assign8
// on llvmpipe (measured at N = 60k, d = 128, K = 1000: 29 against 22 GFLOP/s), where registers spill either way.
@compute @workgroup_size(WG)
fn assign16(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
            @builtin(num_workgroups) nwg: vec3u) {
  let r0 = flat(wid, lid, nwg, WG) * 16u;
  if (r0 >= ap.rows) { return; }
  let ra = rows8(r0);
  let rb = rows8(r0 + 8u);
  var ba = none8();
  var bb = none8();
  for (var j = 0u; j < ap.k; j += 16u) {
    var a = zero8();
    var b = zero8();
    for (var v = 0u; v < ap.d4; v++) {
      let p = panel(v, j);
      a = dots8(a, ra, v, p);
      b = dots8(b, rb, v, p);
    }
    let cn = cnorm16(j);
    ba = pick8(ba, cn, a, j);
    bb = pick8(bb, cn, b, j);
  }
  finish8(r0, ba);
  finish8(r0 + 8u, bb);
}

// ---------------------------------------------------------------------------------------------------------------
// objective: partial[b] = Σ dist[b * 256 .. b * 256 + 255], in order.

struct ObjectiveParams { n: u32 }

@group(0) @binding(0) var<storage, read> odist: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(1) @binding(0) var<uniform> op: ObjectiveParams;

@compute @workgroup_size(WG)
fn objective(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
             @builtin(num_workgroups) nwg: vec3u) {
  let b = flat(wid, lid, nwg, WG);
  let lo = b * 256u;
  if (lo >= op.n) { return; }
  let hi = min(lo + 256u, op.n);
  var s = 0.0;
  for (var i = lo; i < hi; i++) { s += odist[i]; }
  partial[b] = s;
}

// ---------------------------------------------------------------------------------------------------------------
// Stable LSD radix sort of (cluster, point index) by cluster, 8 bits per pass. A block is TILES x RADIX consecutive
// elements; hist is digit-major ([digit][block]) so that its exclusive scan is each (digit, block)'s first slot.
// Within a block, an element's rank among equal digits is counted from the elements before it (earlier tiles
// through a running count, earlier lanes of its tile by a scan of workgroup memory): stable, and free of
// scheduling order, unlike a slot taken with an atomic.

struct SortParams { n: u32, shift: u32, blocks: u32, identity: u32 }

@group(0) @binding(0) var<storage, read> keys_in: array<u32>;
@group(0) @binding(1) var<storage, read> vals_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> hist: array<u32>;
@group(0) @binding(3) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> vals_out: array<u32>;
@group(1) @binding(0) var<uniform> sp: SortParams;

var<workgroup> bins: array<atomic<u32>, RADIX>;
var<workgroup> digits: array<u32, RADIX>;
var<workgroup> base: array<u32, RADIX>;

@compute @workgroup_size(RADIX)
fn radix_count(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(num_workgroups) nwg: vec3u) {
  let b = wid.x + wid.y * nwg.x;
  if (b >= sp.blocks) { return; } // uniform across the workgroup
  for (var t = 0u; t < TILES; t++) {
    let i = (b * TILES + t) * RADIX + lid.x;
    if (i < sp.n) { atomicAdd(&bins[(keys_in[i] >> sp.shift) & 255u], 1u); }
  }
  workgroupBarrier();
  hist[lid.x * sp.blocks + b] = atomicLoad(&bins[lid.x]);
}

// The scan of the table: each invocation sums a contiguous run, one invocation scans the RADIX run totals, then each
// rewrites its run as exclusive prefixes.
struct ScanParams { m: u32 }
@group(1) @binding(0) var<uniform> cp: ScanParams;

@compute @workgroup_size(RADIX)
fn radix_scan(@builtin(local_invocation_id) lid: vec3u) {
  let per = (cp.m + RADIX - 1u) / RADIX;
  let lo = min(lid.x * per, cp.m);
  let hi = min(lo + per, cp.m);
  var s = 0u;
  for (var i = lo; i < hi; i++) { s += hist[i]; }
  base[lid.x] = s;
  workgroupBarrier();
  if (lid.x == 0u) {
    var acc = 0u;
    for (var l = 0u; l < RADIX; l++) {
      let v = base[l];
      base[l] = acc;
      acc += v;
    }
  }
  workgroupBarrier();
  var acc = base[lid.x];
  for (var i = lo; i < hi; i++) {
    let v = hist[i];
    hist[i] = acc;
    acc += v;
  }
}

@compute @workgroup_size(RADIX)
fn radix_scatter(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                 @builtin(num_workgroups) nwg: vec3u) {
  let b = wid.x + wid.y * nwg.x;
  if (b >= sp.blocks) { return; } // uniform across the workgroup
  let l = lid.x;
  base[l] = hist[l * sp.blocks + b];
  for (var t = 0u; t < TILES; t++) {
    let i = (b * TILES + t) * RADIX + l;
    let valid = i < sp.n;
    var key = 0u;
    var digit = RADIX; // matches no real digit
    if (valid) {
      key = keys_in[i];
      digit = (key >> sp.shift) & 255u;
    }
    digits[l] = digit;
    workgroupBarrier(); // digits of this tile, running counts of the earlier ones, base: all visible
    if (valid) {
      var rank = 0u;
      for (var e = 0u; e < l; e++) { rank += select(0u, 1u, digits[e] == digit); }
      let slot = base[digit] + atomicLoad(&bins[digit]) + rank;
      keys_out[slot] = key;
      vals_out[slot] = select(vals_in[i], i, sp.identity == 1u);
    }
    workgroupBarrier(); // every lane has read the running counts before they grow
    if (valid) { atomicAdd(&bins[digit], 1u); }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// accumulate: one invocation per (centroid, 4 dims). Chunk j adds its members of cluster c, found at
// order[starts[j * k + c] ..][.. counts[j * k + c]], to the running sum left by chunk j − 1, so over all chunks the sum
// runs in increasing point index, in float32, as faiss's compute_centroids does. The last chunk multiplies by
// 1 / size (faiss's order of operations); an empty cluster gets 0, which the split then replaces.

struct AccumulateParams { k: u32, d4: u32, first: u32, chunk: u32, chunks: u32 }

@group(0) @binding(0) var<storage, read> ax: array<vec4f>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> starts: array<u32>;
@group(0) @binding(3) var<storage, read> sizes: array<u32>;
@group(0) @binding(4) var<storage, read_write> sums: array<vec4f>;
@group(1) @binding(0) var<uniform> cc: AccumulateParams;

@compute @workgroup_size(WG)
fn accumulate(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
              @builtin(num_workgroups) nwg: vec3u) {
  let g = flat(wid, lid, nwg, WG);
  if (g >= cc.k * cc.d4) { return; }
  let c = g / cc.d4;
  let v = g % cc.d4;
  var s = vec4f(0.0);
  if (cc.chunk > 0u) { s = sums[g]; }
  let lo = starts[cc.chunk * cc.k + c];
  let hi = lo + sizes[cc.chunk * cc.k + c];
  for (var m = lo; m < hi; m++) { s += ax[(order[m] - cc.first) * cc.d4 + v]; }
  if (cc.chunk + 1u == cc.chunks) {
    var size = 0u;
    for (var j = 0u; j < cc.chunks; j++) { size += sizes[j * cc.k + c]; }
    if (size > 0u) {
      s *= 1.0 / f32(size);
    }
  }
  sums[g] = s;
}

// ---------------------------------------------------------------------------------------------------------------
// record: after iteration i's assignment, before its update, into slot i of the window. Invocation 0 writes the
// starts (chunk j's members of cluster c begin at starts[j * k + c] in the sorted order: clusters in order, chunks
// in order within a cluster); the others copy the cluster sizes and the objective's partial sums (as bits) into the
// trace slot, and the centroids and their norms, as they are before the update, into the history slot.

struct RecordParams { k: u32, chunks: u32, partials: u32, d4: u32, cnorm4: u32, slot: u32 }

@group(0) @binding(0) var<storage, read> rcounts: array<u32>;
@group(0) @binding(1) var<storage, read> rpartial: array<u32>;
@group(0) @binding(2) var<storage, read> rcent: array<vec4f>;
@group(0) @binding(3) var<storage, read> rcnorm: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> rstarts: array<u32>;
@group(0) @binding(5) var<storage, read_write> trace: array<u32>;
@group(0) @binding(6) var<storage, read_write> history: array<vec4f>;
@group(1) @binding(0) var<uniform> rp: RecordParams;

@compute @workgroup_size(WG)
fn record(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
          @builtin(num_workgroups) nwg: vec3u) {
  let g = flat(wid, lid, nwg, WG);
  if (g == 0u) {
    var at = 0u;
    for (var c = 0u; c < rp.k; c++) {
      for (var j = 0u; j < rp.chunks; j++) {
        rstarts[j * rp.k + c] = at;
        at += rcounts[j * rp.k + c];
      }
    }
  }
  let sizes = rp.k * rp.chunks;
  let t = rp.slot * (sizes + rp.partials);
  if (g < sizes) { trace[t + g] = rcounts[g]; }
  if (g < rp.partials) { trace[t + sizes + g] = rpartial[g]; }
  let c4 = rp.k * rp.d4;
  let h = rp.slot * (c4 + rp.cnorm4);
  if (g < c4) { history[h + g] = rcent[g]; }
  if (g < rp.cnorm4) { history[h + c4 + g] = rcnorm[g]; }
}

// ---------------------------------------------------------------------------------------------------------------
// split: one invocation per 4 dims, applying the host's plan in order (a later split may copy an earlier one's
// result). plan[2s] = the empty cluster, plan[2s + 1] = the cluster it splits. Even dims of the copy grow by
// 1/1024 and those of the original shrink, odd dims the other way round (faiss's symmetric perturbation).

struct SplitParams { d4: u32, splits: u32 }

@group(0) @binding(0) var<storage, read> plan: array<u32>;
@group(0) @binding(1) var<storage, read_write> scent: array<vec4f>;
@group(1) @binding(0) var<uniform> pp: SplitParams;

@compute @workgroup_size(WG)
fn split(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
         @builtin(num_workgroups) nwg: vec3u) {
  let v = flat(wid, lid, nwg, WG);
  if (v >= pp.d4) { return; }
  let up = 1.0 + 1.0 / 1024.0;
  let down = 1.0 - 1.0 / 1024.0;
  let grow = vec4f(up, down, up, down);
  let shrink = vec4f(down, up, down, up);
  for (var s = 0u; s < pp.splits; s++) {
    let ci = plan[2u * s];
    let cj = plan[2u * s + 1u];
    let y = scent[cj * pp.d4 + v];
    scent[ci * pp.d4 + v] = y * grow;
    scent[cj * pp.d4 + v] = y * shrink;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// restore: the centroids and their norms of history slot `slot` (what `record` saw), one invocation per vec4.

struct RestoreParams { k: u32, d4: u32, cnorm4: u32, slot: u32 }

@group(0) @binding(0) var<storage, read> hsrc: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> hcent: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> hcnorm: array<vec4f>;
@group(1) @binding(0) var<uniform> hp: RestoreParams;

@compute @workgroup_size(WG)
fn restore(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
           @builtin(num_workgroups) nwg: vec3u) {
  let g = flat(wid, lid, nwg, WG);
  let c4 = hp.k * hp.d4;
  let h = hp.slot * (c4 + hp.cnorm4);
  if (g < c4) { hcent[g] = hsrc[h + g]; }
  if (g < hp.cnorm4) { hcnorm[g] = hsrc[h + c4 + g]; }
}

// ---------------------------------------------------------------------------------------------------------------
// norms: ncnorm[c] = ‖c‖², one invocation per centroid; with normalize = 1 the centroid is first scaled to unit
// norm (faiss's spherical k-means; a zero centroid is left as is).

struct NormParams { k: u32, d4: u32, normalize: u32 }

@group(0) @binding(0) var<storage, read_write> ncent: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> ncnorm: array<f32>;
@group(1) @binding(0) var<uniform> np: NormParams;

@compute @workgroup_size(WG)
fn norms(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
         @builtin(num_workgroups) nwg: vec3u) {
  let c = flat(wid, lid, nwg, WG);
  if (c >= np.k) { return; }
  let b = c * np.d4;
  var s = 0.0;
  for (var v = 0u; v < np.d4; v++) { s += dot(ncent[b + v], ncent[b + v]); }
  if (np.normalize == 1u && s > 0.0) {
    let inv = 1.0 / sqrt(s);
    s = 0.0;
    for (var v = 0u; v < np.d4; v++) {
      let y = ncent[b + v] * inv;
      ncent[b + v] = y;
      s += dot(y, y);
    }
  }
  ncnorm[c] = s;
}

// ---------------------------------------------------------------------------------------------------------------
// gather: dst row r = source row idx[idx_first + r] when that row lies in this source chunk; one invocation per
// (row, 4 dims). A destination filled from several source chunks takes one dispatch per source chunk.

struct GatherParams { rows: u32, d4: u32, src_first: u32, src_rows: u32, idx_first: u32 }

@group(0) @binding(0) var<storage, read> gsrc: array<vec4f>;
@group(0) @binding(1) var<storage, read> gidx: array<u32>;
@group(0) @binding(2) var<storage, read_write> gdst: array<vec4f>;
@group(1) @binding(0) var<uniform> gp: GatherParams;

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
          @builtin(num_workgroups) nwg: vec3u) {
  let g = flat(wid, lid, nwg, WG);
  if (g >= gp.rows * gp.d4) { return; }
  let r = g / gp.d4;
  let v = g % gp.d4;
  let src = gidx[gp.idx_first + r];
  if (src >= gp.src_first && src - gp.src_first < gp.src_rows) {
    gdst[g] = gsrc[(src - gp.src_first) * gp.d4 + v];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// pad: dst[r, j] = j < d ? src[r, j] : 0 for a [rows, d] chunk into [rows, dp]; one invocation per element of dst.

struct PadParams { rows: u32, d: u32, dp: u32 }

@group(0) @binding(0) var<storage, read> psrc: array<f32>;
@group(0) @binding(1) var<storage, read_write> pdst: array<f32>;
@group(1) @binding(0) var<uniform> pd: PadParams;

@compute @workgroup_size(WG)
fn pad(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
       @builtin(num_workgroups) nwg: vec3u) {
  let g = flat(wid, lid, nwg, WG);
  if (g >= pd.rows * pd.dp) { return; }
  let r = g / pd.dp;
  let j = g % pd.dp;
  var y = 0.0;
  if (j < pd.d) { y = psrc[r * pd.d + j]; }
  pdst[g] = y;
}

// ---------------------------------------------------------------------------------------------------------------
// nonfinite: bad[2 * chunk] = how many values of the chunk are NaN or ±Inf, bad[2 * chunk + 1] = the smallest flat
// index of one (0xffffffff if none). Tested on the bits, because a compiler may assume floats are finite.

struct FiniteParams { n: u32, chunk: u32 }

@group(0) @binding(0) var<storage, read> fsrc: array<u32>;
@group(0) @binding(1) var<storage, read_write> bad: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> fp: FiniteParams;

@compute @workgroup_size(WG)
fn nonfinite(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
             @builtin(num_workgroups) nwg: vec3u) {
  let i = flat(wid, lid, nwg, WG);
  if (i >= fp.n) { return; }
  if ((fsrc[i] & 0x7f800000u) == 0x7f800000u) {
    atomicAdd(&bad[2u * fp.chunk], 1u);
    atomicMin(&bad[2u * fp.chunk + 1u], i);
  }
}
