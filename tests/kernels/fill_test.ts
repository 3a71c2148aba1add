import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { copy, fill } from "../../src/ops/fill.ts";
import { gpuTest, randoms } from "../helpers.ts";

for (const n of [1, 7, 63, 65, 1000]) {
  gpuTest(
    `fill and copy, n = ${n}`,
    Effect.gen(function* () {
      const gpu = yield* Gpu;
      const x = gpu.upload(randoms(n, n), "f32", [n], "x");
      const a = gpu.tensor([n], "f32", "a");
      const b = gpu.tensor([n], "f32", "b");
      yield* runDispatches([yield* fill(a, 2.5), yield* copy(x, b)]);
      assert.deepEqual(Array.from(yield* read(a)), new Array(n).fill(2.5));
      assert.deepEqual(yield* read(b), randoms(n, n));
    }),
  );
}
