import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { ShapeError } from "../../src/gpu/errors.ts";
import { topk, TOPK_LOWEST, TOPK_NONE } from "../../src/ops/topk.ts";
import { gpuTest, randoms } from "../helpers.ts";

/** The k best (value desc, index asc) of each row, by sorting: the reference. Selection is exact, so no tolerance. */
const cpuTopk = (
  values: (r: number, l: number) => number,
  index: (r: number, l: number) => number,
  rows: number,
  len: number,
  k: number,
) =>
  Array.from({ length: rows }, (_, r) => {
    const c = Array.from({ length: len }, (_, l) => ({ v: values(r, l), i: index(r, l) }));
    c.sort((a, b) => b.v - a.v || a.i - b.i);
    const top = c.slice(0, k);
    while (top.length < k) top.push({ v: TOPK_LOWEST, i: TOPK_NONE });
    return top;
  });

const check = (
  got: { v: Float32Array; i: Uint32Array },
  want: { v: number; i: number }[][],
  width: number,
  col: number,
  what: string,
) => {
  want.forEach((row, r) =>
    row.forEach(({ v, i }, j) => {
      const at = r * width + col + j;
      assert.equal(got.i[at], i, `${what}: row ${r} slot ${j} index`);
      assert.equal(got.v[at], Math.fround(v), `${what}: row ${r} slot ${j} value`);
    })
  );
};

// Values quantised to 1/8 over a few levels: many exact ties, so the index tie-break is exercised everywhere.
const quantised = (n: number, seed: number) => Float32Array.from(randoms(n, seed, -2, 2), (x) => Math.round(x * 8) / 8);

// Rows longer than TOPK_RUN (1536) take several launches, each resuming the heap the previous one left: 5000 (4 runs),
// 70,000 at k = 200 (46 runs; a single launch over 60,000 candidates came out wrong on llvmpipe), 4097 at k = 1.
for (
  const [rows, len, k] of [
    [1, 1, 1],
    [5, 3, 7],
    [70, 300, 20],
    [65, 1000, 200],
    [3, 5000, 256],
    [130, 257, 1],
    [2, 70_000, 200],
    [66, 4097, 1],
  ]
) {
  gpuTest(
    `topk: rows of [${rows}, ${len}] and columns of its transpose, k = ${k}, equal a sort (ties by index)`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const x = quantised(rows * len, rows * 1000 + len);
      const base = 17;
      const want = cpuTopk((r, l) => x[r * len + l]!, (_, l) => base + l, rows, len, k);
      // Row layout [rows, len].
      const vals = gpu.upload(x, "f32", [rows, len], "values");
      const ov = gpu.tensor([rows, k], "f32", "top values"), oi = gpu.tensor([rows, k], "u32", "top indices");
      yield* runDispatches([yield* topk(vals, k, ov, oi, { base })]);
      check({ v: yield* read(ov), i: yield* read(oi) }, want, k, 0, "rows");
      // Column layout [len, rows], written into the middle of wider outputs.
      const xt = new Float32Array(rows * len);
      for (let r = 0; r < rows; r++) for (let l = 0; l < len; l++) xt[l * rows + r] = x[r * len + l]!;
      const valsT = gpu.upload(xt, "f32", [len, rows], "values T");
      const width = k + 5;
      const wv = gpu.tensor([rows, width], "f32", "wide values"), wi = gpu.tensor([rows, width], "u32", "wide idx");
      yield* runDispatches([yield* topk(valsT, k, wv, wi, { columns: true, base, outColumn: 3 })]);
      check({ v: yield* read(wv), i: yield* read(wi) }, want, width, 3, "columns");
    }),
  );
}

gpuTest(
  "topk: increasing rows (every candidate enters the heap: the most loop trips per candidate) of 10,000, k = 256",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const rows = 4, len = 10_000, k = 256;
    const x = Float32Array.from({ length: rows * len }, (_, at) => (at % len) + (at / len >> 0) * 0.5);
    const want = cpuTopk((r, l) => x[r * len + l]!, (_, l) => l, rows, len, k);
    const vals = gpu.upload(x, "f32", [rows, len], "increasing");
    const ov = gpu.tensor([rows, k], "f32", "top values"), oi = gpu.tensor([rows, k], "u32", "top indices");
    yield* runDispatches([yield* topk(vals, k, ov, oi)]);
    check({ v: yield* read(ov), i: yield* read(oi) }, want, k, 0, "increasing");
  }),
);

gpuTest(
  "topk: merging candidate lists with explicit indices gives the top k of their union",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const rows = 67, lists = 3, k = 30, len = lists * k;
    const x = quantised(rows * len, 99);
    // Distinct indices per row, in no particular order (each list's indices come from a different bank chunk).
    const idx = Uint32Array.from({ length: rows * len }, (_, at) => ((at % len) * 7919 + 13) % 100003);
    const want = cpuTopk((r, l) => x[r * len + l]!, (r, l) => idx[r * len + l]!, rows, len, k);
    const vals = gpu.upload(x, "f32", [rows, len], "candidates");
    const ids = gpu.upload(idx, "u32", [rows, len], "candidate indices");
    const ov = gpu.tensor([rows, k], "f32", "merged values"), oi = gpu.tensor([rows, k], "u32", "merged indices");
    yield* runDispatches([yield* topk(vals, k, ov, oi, { indices: ids })]);
    check({ v: yield* read(ov), i: yield* read(oi) }, want, k, 0, "merge");
  }),
);

gpuTest(
  "topk: candidates in pieces (resume, unsorted in between) select as one; NaN and −inf never enter",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const rows = 70, len = 3000, split = 1700, k = 40;
    const x = quantised(rows * len, 5);
    for (let r = 0; r < rows; r++) {
      x[r * len + (r % 50)] = NaN;
      x[r * len + 100 + r] = -Infinity;
    }
    const finite = (v: number) => (Number.isNaN(v) || v === -Infinity ? TOPK_LOWEST : v);
    const want = cpuTopk((r, l) => finite(x[r * len + l]!), (_, l) => l, rows, len, k).map((row) =>
      row.map((e) => (e.v === TOPK_LOWEST ? { v: TOPK_LOWEST, i: TOPK_NONE } : e))
    );
    const piece = (from: number, to: number) => {
      const p = new Float32Array(rows * (to - from));
      for (let r = 0; r < rows; r++) p.set(x.subarray(r * len + from, r * len + to), r * (to - from));
      return gpu.upload(p, "f32", [rows, to - from], `piece ${from}`);
    };
    const ov = gpu.tensor([rows, k + 2], "f32", "values"), oi = gpu.tensor([rows, k + 2], "u32", "indices");
    yield* runDispatches([
      yield* topk(piece(0, split), k, ov, oi, { outColumn: 2, sorted: false }),
      yield* topk(piece(split, len), k, ov, oi, { outColumn: 2, base: split, resume: true }),
    ]);
    check({ v: yield* read(ov), i: yield* read(oi) }, want, k + 2, 2, "pieces");
    // A row with fewer candidates than k keeps empty entries at the end.
    const short = gpu.upload(Float32Array.from([NaN, 2, -Infinity]), "f32", [1, 3], "short");
    const sv = gpu.tensor([1, 4], "f32", "sv"), si = gpu.tensor([1, 4], "u32", "si");
    yield* runDispatches([yield* topk(short, 4, sv, si)]);
    assert.deepEqual(Array.from(yield* read(si)), [1, TOPK_NONE, TOPK_NONE, TOPK_NONE]);
  }),
);

gpuTest(
  "topk: bad shapes and k are ShapeErrors",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const vals = gpu.tensor([4, 10], "f32", "v");
    const ov = gpu.tensor([4, 5], "f32", "ov"), oi = gpu.tensor([4, 5], "u32", "oi");
    for (
      const bad of [
        topk(vals, 0, ov, oi),
        topk(vals, 300, ov, oi),
        topk(vals, 6, ov, oi),
        topk(vals, 5, ov, oi, { outColumn: 1 }),
        topk(vals, 5, ov, ov),
        topk(vals, 5, gpu.tensor([10, 5], "f32", "x"), oi),
        topk(vals, 5, ov, oi, { indices: gpu.tensor([4, 9], "u32", "i") }),
        topk(gpu.tensor([4, 0], "f32", "empty"), 5, ov, oi),
      ]
    ) {
      const e = yield* Effect.flip(bad);
      assert.ok(e instanceof ShapeError, String(e));
    }
  }),
);
