import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu, type GpuContext } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { contrastiveLoss, type MaskMode } from "../../src/ops/contrastive.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";

const norm = (rows: number[][]) => rows.map((r) => r.map((v) => v / Math.hypot(...r)));
const f32 = (rows: number[][]) => Float32Array.from(rows.flat());

/** Float64 reference: mean_i of CE over row i's unmasked columns of scale · q_i · t_j, target column i. */
const lossRef = (
  q: Float64Array,
  t: Float64Array,
  sel: Uint32Array,
  n: number,
  d: number,
  scale: number,
  mode: MaskMode,
  valid: number,
) => {
  const c = t.length / d;
  let total = 0;
  const perRow: number[] = [];
  for (let i = 0; i < n; i++) {
    const logits: number[] = [];
    for (let j = 0; j < c; j++) {
      const masked = j >= valid ||
        (j < n && j !== i && (mode === "all" || (mode === "same" && sel[j] === sel[i])));
      if (masked) continue;
      let s = 0;
      for (let k = 0; k < d; k++) s += q[i * d + k] * t[j * d + k];
      logits.push(j === i ? Infinity : scale * s); // mark the target to find it again below
    }
    let target = 0;
    for (let k = 0; k < d; k++) target += q[i * d + k] * t[i * d + k];
    target *= scale;
    const row = logits.map((v) => (v === Infinity ? target : v));
    const m = Math.max(...row);
    const l = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - target;
    perRow.push(l);
    total += l;
  }
  return { mean: total / n, perRow };
};

/** Unscaled, unweighted, nothing masked, overwriting dq. */
const PLAIN = { scale: 1, weight: 1, mode: "none", accumulate: false } as const;

const setup = (
  gpu: GpuContext,
  q: Float32Array<ArrayBuffer>,
  t: Float32Array<ArrayBuffer>,
  sel: Uint32Array<ArrayBuffer>,
  n: number,
  d: number,
) => ({
  q: gpu.upload(q, "f32", [n, d], "q"),
  table: gpu.upload(t, "f32", [t.length / d, d], "table"),
  sel: gpu.upload(sel, "u32", [sel.length], "sel"),
  metrics: { loss: gpu.tensor([1], "f32", "loss"), accuracy: gpu.tensor([1], "f32", "acc") },
  dq: gpu.tensor([n, d], "f32", "dq"),
});

gpuTest(
  "contrastive: the ProtoNCE and InfoNCE numeric checks of docs/algorithm.md §5",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const protos = norm([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 1]]);
    const phi = [0.1, 0.2, 0.3, 0.15, 0.25];
    const q = f32(norm([[0.9, 0.1], [0.2, 1.0]]));
    const sel = Uint32Array.from([0, 1, 3, 2]); // positives [0, 1], then the negatives [3, 2]
    const table = f32([...sel].map((c) => protos[c].map((v) => v / phi[c])));
    const p = setup(gpu, q, table, sel, 2, 2);
    const proto = yield* contrastiveLoss(p.q, p.table, p.sel, p.metrics, p.dq, PLAIN);
    yield* runDispatches(proto.forward);
    // The document's values are given to 6 decimals.
    assertClose(yield* read(proto.logits), [
      9.938837,
      0.552158,
      -0.736210,
      -3.312946,
      1.961161,
      4.902903,
      -6.537205,
      -0.653720,
    ], { atol: 2e-6, rtol: 1e-6, what: "proto logits" });
    assertClose(yield* read(p.metrics.loss), [0.027604], { atol: 1e-6, rtol: 0, what: "ProtoNCE mean" });
    assert.deepEqual(Array.from(yield* read(p.metrics.accuracy)), [1]);

    const k = norm([[1, 0.2], [0.1, 1]]);
    const queue = norm([[-1, 0.5], [0.3, -1], [1, -1]]);
    const i = setup(gpu, q, f32([...k, ...queue]), Uint32Array.from([0, 0, 0, 0, 0]), 2, 2);
    const inst = yield* contrastiveLoss(i.q, i.table, i.sel, i.metrics, i.dq, {
      scale: 1 / 0.2,
      weight: 1,
      mode: "all",
      accumulate: false,
    });
    yield* runDispatches(inst.forward);
    assertClose(yield* read(i.metrics.loss), [0.092730], { atol: 1e-6, rtol: 0, what: "InfoNCE mean" });
    const ref = lossRef(
      Float64Array.from(q),
      Float64Array.from(i.table.size ? f32([...k, ...queue]) : []),
      new Uint32Array(5),
      2,
      2,
      5,
      "all",
      5,
    );
    assertClose(ref.perRow, [0.159566, 0.025894], { atol: 1e-6, rtol: 0, what: "InfoNCE per sample (reference)" });
  }),
);

for (const mode of ["none", "same", "all"] as const) {
  gpuTest(
    `contrastive: dq of InfoNCE + weighted ProtoNCE (${mode} mask) equals finite differences`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const n = 5, d = 6, c = 12, valid = 10;
      const q = randoms(n * d, 1);
      const t = randoms(c * d, 2);
      // Duplicate positives: rows 0, 2 and 4 share prototype 3, rows 1 and 3 share 7.
      const sel = Uint32Array.from([3, 7, 3, 7, 3, 9, 10, 11, 12, 13, 14, 15]);
      const p = setup(gpu, q, t, sel, n, d);
      const first = yield* contrastiveLoss(p.q, p.table, p.sel, p.metrics, p.dq, {
        scale: 2.5,
        weight: 1,
        mode: "all",
        accumulate: false,
      });
      const metrics2 = { loss: gpu.tensor([1], "f32", "loss2"), accuracy: gpu.tensor([1], "f32", "acc2") };
      const second = yield* contrastiveLoss(p.q, p.table, p.sel, metrics2, p.dq, {
        scale: 1.5,
        weight: 0.5,
        mode,
        accumulate: true,
      });
      second.setValid(valid);
      yield* runDispatches([...first.forward, ...second.forward, ...first.backward, ...second.backward]);
      const q64 = Float64Array.from(q), t64 = Float64Array.from(t);
      const total = (x: Float64Array) =>
        lossRef(x, t64, sel, n, d, 2.5, "all", c).mean + 0.5 * lossRef(x, t64, sel, n, d, 1.5, mode, valid).mean;
      // f32 logits of O(1) through a softmax: losses agree to ~1e-6.
      assertClose(yield* read(metrics2.loss), [lossRef(q64, t64, sel, n, d, 1.5, mode, valid).mean], {
        atol: 2e-6,
        rtol: 1e-6,
        what: "second loss",
      });
      const fd = Array.from(q64, (_, j) => {
        const h = 1e-6, plus = Float64Array.from(q64), minus = Float64Array.from(q64);
        plus[j] += h;
        minus[j] -= h;
        return (total(plus) - total(minus)) / (2 * h);
      });
      // Central differences in float64 are exact to ~1e-9 here; the GPU's f32 gradient to ~1e-6 of its scale.
      assertClose(yield* read(p.dq), fd, { atol: 2e-6, rtol: 1e-4, what: `dq (${mode})` });
      const logits = yield* read(second.logits);
      for (let j = valid; j < c; j++) assert.equal(logits[j], Math.fround(-1e30), `column ${j} past valid is masked`);
    }),
  );
}

gpuTest(
  "contrastive: top-1 counts a row when its first maximum is its own column or a batch copy of its own id",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    // Unit q rows against table rows built to tie or win: row 0 wins, row 1 ties with column 0, row 2 ties with
    // column 3 (a negative after it: its first maximum is its own column 2, a hit). With distinct ids row 1's first
    // maximum is another row's column (a miss); when column 0 carries row 1's id (its own prototype repeated, as
    // unmasked ProtoNCE does), picking it is a hit.
    const q = f32([[1, 0], [1, 0], [0, 1]]);
    const t = f32([[1, 0], [1, 0], [0, 1], [0, 1], [-1, 0]]);
    for (const [ids, expected] of [[[0, 1, 2, 3, 4], 2 / 3], [[7, 7, 2, 3, 4], 1]] as const) {
      const p = setup(gpu, q, t, Uint32Array.from(ids), 3, 2);
      const loss = yield* contrastiveLoss(p.q, p.table, p.sel, p.metrics, p.dq, PLAIN);
      yield* runDispatches(loss.forward);
      assertClose(yield* read(p.metrics.accuracy), [expected], { atol: 1e-7, rtol: 0, what: `accuracy, ids ${ids}` });
    }
  }),
);

gpuTest(
  "contrastive: a row with a NaN logit is a miss (a diverged step does not read as accurate)",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    // Row 0's logits are all NaN; row 1 wins its own column but meets 0 · -Inf = NaN in column 3; row 2 wins with
    // finite logits and a -Inf: 1 hit of 3 (before NaN counted as a miss, all 3 read as hits).
    const q = f32([[NaN, 0], [0, 1], [1, 0]]);
    const t = f32([[0.5, 0], [0, 1], [1, 0], [-Infinity, 0]]);
    const p = setup(gpu, q, t, Uint32Array.from([0, 1, 2, 3]), 3, 2);
    const loss = yield* contrastiveLoss(p.q, p.table, p.sel, p.metrics, p.dq, PLAIN);
    yield* runDispatches(loss.forward);
    assertClose(yield* read(p.metrics.accuracy), [1 / 3], { atol: 1e-7, rtol: 0, what: "accuracy with NaNs" });
  }),
);
