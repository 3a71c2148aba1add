import assert from "node:assert/strict";
import { Effect } from "effect";
import { read } from "../../src/gpu/kernel.ts";
import { type HostDataset, Sampler, takeFirst, toGpu } from "../../src/data/dataset.ts";
import { DataError } from "../../src/data/errors.ts";
import { loadDataset } from "../../src/data/source.ts";
import { gpuTest } from "../helpers.ts";

/** n images of C x side x side with distinct bytes per (image, position). */
const host = (n: number, channels: 1 | 3, side: number): HostDataset => {
  const bytes = channels * side * side;
  return {
    info: {
      name: "t",
      n,
      channels,
      height: side,
      width: side,
      classes: 3,
      classNames: ["a", "b", "c"],
      source: "test",
    },
    images: Uint8Array.from({ length: n * bytes }, (_, k) => (k * 37 + Math.floor(k / bytes) * 11) % 251),
    labels: Int32Array.from({ length: n }, (_, i) => i % 3),
  };
};

for (
  const [n, channels, side, maxChunkBytes] of [[10, 3, 5, 256], [7, 1, 3, 36], [5, 1, 2, 1000], [9, 3, 4, 48]] as const
) {
  gpuTest(
    `resident dataset: ${n} images of ${channels}x${side}x${side} in chunks of <= ${maxChunkBytes} bytes hold the bytes`,
    Effect.gen(function* () {
      const h = host(n, channels, side);
      const ds = yield* toGpu(h, { maxChunkBytes });
      const bytes = channels * side * side;
      const per = Math.floor(Math.floor(maxChunkBytes / 4) * 4 / bytes);
      assert.equal(ds.rowsPerChunk, per);
      assert.equal(ds.chunks.length, Math.ceil(n / per));
      const all: number[] = [];
      for (const c of ds.chunks) {
        assert.ok(c.byteLength <= maxChunkBytes, `${c} within the chunk limit`);
        all.push(...(yield* read(c)));
      }
      assert.deepEqual(all, Array.from(h.images));
      assert.deepEqual(ds.labels, h.labels);
    }),
  );
}

gpuTest(
  "resident dataset: an image larger than a chunk, or no images at all, is a DataError",
  Effect.gen(function* () {
    const e = yield* Effect.flip(toGpu(host(2, 3, 8), { maxChunkBytes: 100 }));
    assert.ok(e instanceof DataError);
    assert.match(e.message, /one image is 192 bytes, more than a chunk may hold \(100 bytes\)/);
    const empty = yield* Effect.flip(toGpu(takeFirst(host(2, 1, 2), 0)));
    assert.ok(empty instanceof DataError);
    assert.match(empty.message, /no images/);
  }),
);

gpuTest(
  "loadDataset: a synthetic source made resident, split at the binding limit given",
  Effect.gen(function* () {
    const ds = yield* loadDataset({ kind: "synthetic", n: 30, side: 8, channels: 3, seed: 4 }, { maxChunkBytes: 2000 });
    assert.equal(ds.info.n, 30);
    assert.equal(ds.chunks.length, 3); // 10 images of 192 bytes per 2000-byte chunk
  }),
);

Deno.test("sampler: per-epoch permutations, batches drop the last partial one, deterministic from (seed, epoch)", () => {
  const s = new Sampler(103, 10, 42);
  assert.equal(s.stepsPerEpoch, 10);
  const seen = new Set<number>();
  for (let step = 0; step < 10; step++) for (const i of s.indices(0, step)) seen.add(i);
  assert.equal(seen.size, 100); // 3 images left out this epoch
  assert.ok([...seen].every((i) => i >= 0 && i < 103));
  const again = new Sampler(103, 10, 42);
  assert.deepEqual(again.indices(5, 7), s.indices(5, 7)); // no history needed: epoch 5 without epochs 0..4
  assert.deepEqual(Array.from(s.indices(0, 3)), Array.from(new Sampler(103, 10, 42).indices(0, 3)));
  assert.notDeepEqual(Array.from(s.indices(1, 0)), Array.from(s.indices(0, 0)));
  assert.notDeepEqual(Array.from(new Sampler(103, 10, 43).indices(0, 0)), Array.from(s.indices(0, 0)));
  assert.throws(() => s.indices(0, 10), RangeError);
  assert.equal(new Sampler(9, 10, 0).stepsPerEpoch, 0);
  // left-out images vary with the epoch: over 50 epochs every image is drawn at least once
  const ever = new Set<number>();
  for (let e = 0; e < 50; e++) for (let step = 0; step < 10; step++) for (const i of s.indices(e, step)) ever.add(i);
  assert.equal(ever.size, 103);
});
