import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { prepare, read, runDispatches } from "../../src/gpu/kernel.ts";
import { Draws, mulhi, permutation, philox4x32, RNG_WGSL, u01 } from "../../src/data/rng.ts";
import { gpuTest } from "../helpers.ts";

const hex = (xs: Iterable<number>) => Array.from(xs, (x) => x.toString(16).padStart(8, "0")).join(" ");

Deno.test("philox4x32-10 matches the Random123 known-answer vectors", () => {
  assert.equal(hex(philox4x32(0, 0, 0, 0, 0, 0)), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  const f = 0xffffffff;
  assert.equal(hex(philox4x32(f, f, f, f, f, f)), "408f276d 41c83b0e a20bc7c6 6d5451fd");
  assert.equal(
    hex(philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0)),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});

Deno.test("mulhi is the high word of the exact 64-bit product", () => {
  const cases: [number, number][] = [[0xffffffff, 0xffffffff], [0xd2511f53, 0x12345678], [1, 0xffffffff], [0, 7]];
  for (const [a, b] of cases) {
    assert.equal(mulhi(a, b), Number((BigInt(a) * BigInt(b)) >> 32n), `${a} * ${b}`);
  }
});

Deno.test("u01 is in [0, 1), exact in f32, and Draws address slots independently of order", () => {
  assert.equal(u01(0), 0);
  assert.ok(u01(0xffffffff) < 1);
  assert.equal(Math.fround(u01(0xdeadbeef)), u01(0xdeadbeef));
  const a = new Draws([1, 2], [3, 4, 5, 0]);
  const forward = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => a.bits(i));
  const b = new Draws([1, 2], [3, 4, 5, 0]);
  const backward = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((i) => b.bits(i)).reverse();
  assert.deepEqual(forward, backward);
  assert.deepEqual(forward.slice(4, 8), Array.from(philox4x32(3, 4, 5, 1, 1, 2)));
});

Deno.test("permutation: a permutation, a pure function of (seed, epoch), different across epochs and seeds", () => {
  for (const n of [1, 2, 5, 1000]) {
    const p = permutation(n, 7, 3);
    assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i));
    assert.deepEqual(permutation(n, 7, 3), p);
  }
  const base = permutation(1000, 7, 3);
  assert.notDeepEqual(permutation(1000, 7, 4), base);
  assert.notDeepEqual(permutation(1000, 8, 3), base);
  // position of element 0 over many epochs is uniform: chi-square over 10 bins of 100 positions, 2000 epochs;
  // 9 degrees of freedom, p = 0.001 at 27.9
  const bins = new Array(10).fill(0);
  for (let e = 0; e < 2000; e++) bins[Math.floor(permutation(1000, 1, e).indexOf(0) / 100)]++;
  const chi2 = bins.reduce((s, c) => s + (c - 200) ** 2 / 200, 0);
  assert.ok(chi2 < 27.9, `chi-square ${chi2} for ${bins}`);
});

gpuTest(
  "philox4x32 in WGSL is bit-identical to TypeScript",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const n = 300;
    const code = RNG_WGSL + `
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3u) {
  let i = id.x;
  if (i >= ${n}u) { return; }
  let r = philox4x32(vec4u(i, i * 2654435761u, 0xffffffffu - i, 7u), vec2u(i ^ 0x5bd1e995u, 12345u));
  out[4u * i] = r.x; out[4u * i + 1u] = r.y; out[4u * i + 2u] = r.z;
  out[4u * i + 3u] = bitcast<u32>(u01(r.w));
}`;
    const out = gpu.tensor([4 * n], "u32", "philox out");
    const d = yield* prepare({ name: "rng_test", source: code }, { tensors: [out], workgroups: [Math.ceil(n / 64)] });
    yield* runDispatches([d]);
    const got = yield* read(out);
    const f = new Float32Array(1), fu = new Uint32Array(f.buffer);
    for (let i = 0; i < n; i++) {
      const r = philox4x32(i, Math.imul(i, 2654435761) >>> 0, 0xffffffff - i, 7, (i ^ 0x5bd1e995) >>> 0, 12345);
      f[0] = u01(r[3]!);
      assert.deepEqual([...got.subarray(4 * i, 4 * i + 4)], [r[0], r[1], r[2], fu[0]], `counter ${i}`);
    }
  }),
);
