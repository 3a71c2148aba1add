import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { gatherRows } from "../../src/ops/gather.ts";
import { gpuTest, randoms } from "../helpers.ts";

// gatherRows copies 32-bit words: results must be bit-exact (no tolerance), NaN payloads and -0 included.

/** The CPU reference: out[b] = x[index[b]], a zero row for an index out of range. */
const cpuGather = (x: Uint32Array, rows: number, cols: number, index: Uint32Array) => {
  const out = new Uint32Array(index.length * cols);
  index.forEach((r, b) => {
    if (r < rows) out.set(x.subarray(r * cols, (r + 1) * cols), b * cols);
  });
  return out;
};

const cases: Array<[rows: number, cols: number, batch: number]> = [
  [1, 1, 1],
  [7, 63, 65], // more gathered rows than rows: indices repeat
  [1000, 7, 63],
  [65, 1000, 7],
  [63, 1, 1000],
  [1000, 65, 1000],
];

for (const [rows, cols, batch] of cases) {
  gpuTest(
    `gatherRows [${rows}, ${cols}] by ${batch} indices copies the rows bit for bit (f32, u32, i32)`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const f = randoms(rows * cols, rows + cols, -5, 5);
      f[0] = -0;
      if (f.length > 2) f[2] = NaN;
      const bits = new Uint32Array(f.buffer);
      if (bits.length > 1) bits[1] = 0x7fc01234; // a NaN with a payload
      const index = Uint32Array.from(randoms(batch, batch + 1, 0, rows), (v) => Math.min(rows - 1, Math.floor(v)));
      index[0] = rows - 1; // the last row
      const want = cpuGather(bits, rows, cols, index);
      const idx = gpu.upload(index, "u32", [batch], "index");
      const xf = gpu.upload(f, "f32", [rows, cols], "xf");
      const xu = gpu.upload(bits.slice(), "u32", [rows, cols], "xu");
      const xi = gpu.upload(new Int32Array(bits.buffer.slice(0)), "i32", [rows, cols], "xi");
      const of = gpu.tensor([batch, cols], "f32", "of");
      const ou = gpu.tensor([batch, cols], "u32", "ou");
      const oi = gpu.tensor([batch, cols], "i32", "oi");
      yield* runDispatches([
        yield* gatherRows(xf, idx, of),
        yield* gatherRows(xu, idx, ou),
        yield* gatherRows(xi, idx, oi),
      ]);
      assert.deepEqual(new Uint32Array((yield* read(of)).slice().buffer), want);
      assert.deepEqual(yield* read(ou), want);
      assert.deepEqual(new Uint32Array((yield* read(oi)).slice().buffer), want);
    }),
  );
}

gpuTest(
  "gatherRows: an index out of range gives a zero row and leaves the other rows right",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const rows = 5, cols = 3;
    const x = gpu.upload(Uint32Array.from({ length: rows * cols }, (_, i) => i + 1), "u32", [rows, cols], "x");
    const index = gpu.upload(Uint32Array.from([4, 5, 0, 0xffffffff, 2]), "u32", [5], "index");
    const out = gpu.tensor([5, cols], "u32", "out");
    yield* runDispatches([yield* gatherRows(x, index, out)]);
    assert.deepEqual(Array.from(yield* read(out)), [13, 14, 15, 0, 0, 0, 1, 2, 3, 0, 0, 0, 7, 8, 9]);
  }),
);

gpuTest(
  "gatherRows shape errors name the kernel",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const x = gpu.tensor([4, 3], "f32", "x");
    const index = gpu.tensor([2], "u32", "index");
    const cases = [
      gatherRows(x, index, gpu.tensor([2, 4], "f32", "out")),
      gatherRows(x, index, gpu.tensor([3, 3], "f32", "out")),
      gatherRows(x, index, gpu.tensor([2, 3], "u32", "out")),
      gatherRows(x, gpu.tensor([2], "i32", "index"), gpu.tensor([2, 3], "f32", "out")),
      gatherRows(gpu.tensor([12], "f32", "flat"), index, gpu.tensor([2, 3], "f32", "out")),
      gatherRows(gpu.tensor([4, 4], "u8", "bytes"), index, gpu.tensor([2, 4], "u8", "out")),
    ];
    for (const effect of cases) {
      const error = yield* Effect.flip(effect);
      assert.equal(error._tag, "ShapeError", error.message);
      assert.ok(error.message.startsWith("gatherRows:"), error.message);
    }
  }),
);
