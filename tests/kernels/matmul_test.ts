import assert from "node:assert/strict";
import { Effect } from "effect";
import { ShapeError } from "../../src/gpu/errors.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { read, runDispatches } from "../../src/gpu/kernel.ts";
import { matmul, type MatmulKernel, matmulParams, type MatmulStrategy, planMatmul } from "../../src/ops/matmul.ts";
import { gpuTest, randoms } from "../helpers.ts";

/**
 * One matmul against a float64 CPU reference. Data are uniform in [-1, 1).
 *
 * Tolerance, per element: the kernels sum the K products in order in f32 (one rounding per fma), then apply
 * alpha, beta and bias with at most three more roundings. For a sum of K terms computed that way the error is at
 * most γ · Σ|terms| with γ = n·u / (1 - n·u), n the number of roundings and u = 2⁻²⁴ (Higham, Accuracy and
 * Stability of Numerical Algorithms, §3.1). So we allow
 *   (K + 3) · u · 1.01 · (|alpha| Σ_k |a_mk| |b_kn| + |beta| |out_mn| + |bias_n|)
 * a bound the GPU's f32 cannot exceed whatever the summation order, yet one a wrong index or a dropped term breaks:
 * for random data Σ|a||b| ≈ K/4, so at K = 1000 the bound is ≈ 0.015 while a missing term is ≈ 0.25 on average.
 */
interface Case {
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly batch?: number;
  /** Which operands carry the batch dimension (2-D ones are shared by every batch); both by default. */
  readonly batched?: { readonly a: boolean; readonly b: boolean };
  readonly transA?: boolean;
  readonly transB?: boolean;
  readonly alpha?: number;
  readonly beta?: number;
  readonly bias?: boolean;
  /** Fill out with NaN first (beta = 0 must not read it). */
  readonly poison?: boolean;
}

const U = 2 ** -24;

const describe = (c: Case) =>
  `${c.batch ?? 1}x[${c.M}x${c.K}]·[${c.K}x${c.N}]${c.transA ? " tA" : ""}${c.transB ? " tB" : ""}` +
  `${c.alpha === undefined ? "" : ` alpha=${c.alpha}`}${c.beta === undefined ? "" : ` beta=${c.beta}`}` +
  `${c.bias ? " +bias" : ""}`;

/** Runs one case on the GPU; returns the kernel that ran. */
const check = (c: Case, strategy: MatmulStrategy, seed: number) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const { M, N, K, transA = false, transB = false, alpha = 1, beta = 0 } = c;
    const B = c.batch ?? 1;
    const batched = c.batched ?? { a: B > 1, b: B > 1 };
    const Ba = batched.a ? B : 1, Bb = batched.b ? B : 1;
    const aShape = transA ? [K, M] : [M, K];
    const bShape = transB ? [N, K] : [K, N];
    const ha = randoms(Ba * M * K, seed);
    const hb = randoms(Bb * K * N, seed + 1);
    const hc = c.poison ? new Float32Array(B * M * N).fill(NaN) : randoms(B * M * N, seed + 2);
    const hbias = randoms(N, seed + 3);
    const a = gpu.upload(ha, "f32", batched.a ? [B, ...aShape] : aShape, "a");
    const b = gpu.upload(hb, "f32", batched.b ? [B, ...bShape] : bShape, "b");
    const out = gpu.upload(hc, "f32", B > 1 ? [B, M, N] : [M, N], "out");
    const bias = c.bias ? gpu.upload(hbias, "f32", [N], "bias") : undefined;
    const plan = planMatmul(a.shape, b.shape, out.shape, strategy, { transA, transB });
    assert.ok(!(plan instanceof ShapeError));
    yield* runDispatches([
      yield* matmul(a, b, out, { transA, transB, alpha, beta, strategy, ...(bias ? { bias } : {}) }),
    ]);
    const got = yield* read(out);
    for (let z = 0; z < B; z++) {
      const oa = batched.a ? z * M * K : 0, ob = batched.b ? z * K * N : 0;
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let sum = 0, abs = 0;
          for (let k = 0; k < K; k++) {
            const x = ha[oa + (transA ? k * M + m : m * K + k)];
            const y = hb[ob + (transB ? n * K + k : k * N + n)];
            sum += x * y;
            abs += Math.abs(x * y);
          }
          const i = z * M * N + m * N + n;
          const old = beta === 0 ? 0 : hc[i];
          const add = c.bias ? hbias[n] : 0;
          const want = alpha * sum + beta * old + add;
          const tol = (K + 3) * U * 1.01 * (Math.abs(alpha) * abs + Math.abs(beta * old) + Math.abs(add));
          if (!(Math.abs(got[i] - want) <= tol)) {
            throw new Error(
              `${strategy}/${plan.kernel} ${describe(c)}: out[${z}, ${m}, ${n}] = ${got[i]}, expected ${want} ` +
                `(tolerance ${tol.toExponential(2)})`,
            );
          }
        }
      }
    }
    return plan.kernel;
  });

const strategies: MatmulStrategy[] = ["register", "tiled"];
const transposes = [[false, false], [true, false], [false, true], [true, true]] as const;

for (const strategy of strategies) {
  gpuTest(
    `matmul (${strategy}): all four transpose combinations, vec4-friendly and awkward sizes`,
    Effect.gen(function* () {
      const kernels = new Set<MatmulKernel>();
      let seed = 1;
      for (const [transA, transB] of transposes) {
        // 64 x 100 x 64: whole vec4s everywhere (reg4), N not a multiple of the 16-column block.
        // 7 x 65 x 63 and 65 x 7 x 13: odd everything (reg, scalar loads), edge tiles in both directions.
        // 36 x 20 x 40: reg4 again, with a column block cut at 4 of its 16 and a row block at 4 of its 16.
        for (const [M, N, K] of [[64, 100, 64], [7, 65, 63], [65, 7, 13], [36, 20, 40]]) {
          kernels.add(yield* check({ M, N, K, transA, transB }, strategy, seed++));
        }
      }
      assert.deepEqual(
        [...kernels].sort(),
        strategy === "tiled" ? ["tiled"] : ["reg", "reg4"],
      );
    }),
  );

  gpuTest(
    `matmul (${strategy}): sizes 1, 7, 63, 65, 1000; K larger than M and N`,
    Effect.gen(function* () {
      let seed = 100;
      for (
        const [M, N, K] of [
          [1, 1, 1],
          [1, 1000, 7],
          [1000, 1, 65],
          [7, 1000, 4],
          [63, 65, 1000],
          [8, 16, 1000],
          [1000, 63, 7],
          [65, 65, 65],
        ]
      ) {
        yield* check({ M, N, K }, strategy, seed++);
        yield* check({ M, N, K, transA: true, transB: true }, strategy, seed++);
      }
      // Empty sums and empty outputs: K = 0 leaves beta · out + bias; M = 0 or N = 0 dispatches nothing.
      yield* check({ M: 5, N: 8, K: 0, beta: 1, bias: true }, strategy, seed++);
      yield* check({ M: 0, N: 8, K: 4 }, strategy, seed++);
      yield* check({ M: 4, N: 0, K: 4, transB: true }, strategy, seed++);
    }),
  );

  gpuTest(
    `matmul (${strategy}): batches, broadcast operands, alpha, beta = 1 accumulation, bias`,
    Effect.gen(function* () {
      let seed = 200;
      for (
        const batched of [{ a: true, b: true }, { a: true, b: false }, { a: false, b: true }, { a: false, b: false }]
      ) {
        for (const [M, N, K] of [[33, 20, 12], [8, 32, 16], [5, 9, 7]]) {
          for (const [transA, transB] of transposes) {
            yield* check({ M, N, K, batch: 3, batched, transA, transB }, strategy, seed++);
          }
          yield* check({ M, N, K, batch: 3, batched, alpha: 0.5, beta: 1, bias: true }, strategy, seed++);
        }
      }
      // beta = 1 and beta = 0.25 accumulate into out; beta = 0 ignores it, NaN included.
      for (const [M, N, K] of [[64, 64, 64], [17, 31, 29]]) {
        yield* check({ M, N, K, beta: 1 }, strategy, seed++);
        yield* check({ M, N, K, alpha: -2, beta: 0.25, bias: true, transB: true }, strategy, seed++);
        yield* check({ M, N, K, poison: true }, strategy, seed++);
        yield* check({ M, N, K, poison: true, bias: true, transA: true }, strategy, seed++);
      }
    }),
  );
}

gpuTest(
  "matmul accumulates across dispatches with beta = 1 (gradient accumulation)",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const [M, N, K] = [12, 20, 8];
    const x = randoms(M * K, 7), y = randoms(K * N, 8);
    const a = gpu.upload(x, "f32", [M, K], "a");
    const b = gpu.upload(y, "f32", [K, N], "b");
    const once = gpu.tensor([M, N], "f32", "once");
    const thrice = gpu.tensor([M, N], "f32", "thrice");
    const first = yield* matmul(a, b, thrice);
    const more = yield* matmul(a, b, thrice, { beta: 1 });
    yield* runDispatches([yield* matmul(a, b, once, { alpha: 3 }), first, more, more]);
    const [want, got] = [yield* read(once), yield* read(thrice)];
    for (let i = 0; i < M * N; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * (1 + Math.abs(want[i])));
    // setParams turns the accumulating dispatch into a plain one with alpha = 3: once more, the same result.
    const plan = planMatmul(a.shape, b.shape, thrice.shape, gpu.tuning.matmul);
    assert.ok(!(plan instanceof ShapeError));
    more.setParams(matmulParams(plan, 3, 0));
    yield* runDispatches([more]);
    assert.deepEqual(yield* read(thrice), want);
  }),
);

gpuTest(
  "matmul rejects mismatched shapes with a ShapeError naming them",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const t = (shape: number[], label = "t") => gpu.tensor(shape, "f32", label);
    const a = t([4, 3], "a"), b = t([5, 6], "b"), out = t([4, 6], "out");
    const cases: Array<[string, Effect.Effect<unknown, unknown, Gpu>, RegExp]> = [
      ["inner dimensions", matmul(a, b, out), /inner dimensions differ \(3 vs 5\).*\[4, 3\].*\[5, 6\]/],
      ["out shape", matmul(a, t([3, 6]), t([4, 5])), /out must be \[4, 6\]/],
      ["transposed inner", matmul(a, t([3, 6]), t([4, 6]), { transA: true }), /inner dimensions differ/],
      ["bias", matmul(a, t([3, 6]), out, { bias: t([4]) }), /bias must be \[6\]/],
      ["batch", matmul(t([2, 4, 3]), t([3, 3, 6]), t([2, 4, 6])), /batch sizes differ/],
      ["batched out", matmul(t([2, 4, 3]), t([3, 6]), t([4, 6])), /out must be \[2, 4, 6\]/],
      ["rank", matmul(t([12]), t([3, 6]), out), /a must be 2-D or 3-D/],
      ["aliasing", matmul(out, t([6, 6]), out), /shares its buffer/],
      ["dtype", matmul(a, gpu.tensor([3, 6], "u32", "u"), out), /must be f32/],
    ];
    for (const [what, effect, message] of cases) {
      const error = yield* Effect.flip(effect);
      assert.ok(error instanceof ShapeError, `${what}: expected a ShapeError, got ${error}`);
      assert.equal(error.kernel, "matmul");
      assert.match(error.message, message, what);
    }
  }),
);

Deno.test("planMatmul picks vec4 loads only where rows are whole vec4s, and grids cover the output", () => {
  const plan = (a: number[], b: number[], out: number[], s: MatmulStrategy, o = {}) => {
    const p = planMatmul(a, b, out, s, o);
    if (p instanceof ShapeError) throw p;
    return p;
  };
  assert.equal(plan([64, 64], [64, 64], [64, 64], "register").kernel, "reg4");
  assert.equal(plan([64, 63], [63, 64], [64, 64], "register").kernel, "reg"); // K % 4
  assert.equal(plan([64, 64], [64, 63], [64, 63], "register").kernel, "reg"); // N % 4, b plain
  assert.equal(plan([64, 64], [63, 64], [64, 63], "register", { transB: true }).kernel, "reg"); // N % 4
  assert.equal(plan([64, 64], [60, 64], [64, 60], "register", { transB: true }).kernel, "reg4");
  assert.equal(plan([64, 63], [64, 64], [63, 64], "register", { transA: true }).kernel, "reg"); // M % 4
  assert.equal(plan([64, 64], [64, 64], [64, 64], "tiled").kernel, "tiled");
  // The k-means shape: [60000, 64] · [100, 64]ᵀ: 7 blocks of 16 columns, 3750 of 16 rows, 64 to a workgroup.
  const km = plan([60000, 64], [100, 64], [60000, 100], "register", { transB: true });
  assert.equal(km.kernel, "reg4");
  assert.deepEqual(km.blocks, [7, 26250]);
  assert.deepEqual(km.workgroups, [Math.ceil(26250 / 64), 1, 1]);
  // Past 65535 workgroups the grid folds over y.
  const tall = plan([10_000_000, 4], [4, 1], [10_000_000, 1], "register");
  assert.equal(tall.kernel, "reg");
  assert.ok(tall.workgroups[0] <= 65535 && tall.workgroups[0] * tall.workgroups[1] * 64 >= tall.blocks[1]);
  const big = plan([5, 1000, 64], [64, 32], [5, 1000, 32], "tiled");
  assert.deepEqual([big.batch, big.strides], [5, [64000, 0, 32000]]);
  assert.deepEqual(big.workgroups, [1, 16, 5]);
});
