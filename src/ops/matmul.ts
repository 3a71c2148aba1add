import { Effect } from "effect";
import source from "../../kernels/matmul.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { type Dispatch, type Params, prepare } from "../gpu/kernel.ts";
import { ShapeError, shapeError } from "../gpu/errors.ts";
import { Tensor } from "../gpu/tensor.ts";

/** How the output is tiled: workgroup-memory tiles (real GPUs) or register blocks without barriers (llvmpipe). */
export type MatmulStrategy = "tiled" | "register";

/**
 * The entry point of kernels/matmul.wgsl that runs: `tiled` for the tiled strategy; for the register strategy `reg4`
 * (vec4 loads and stores) where K, N and op(a)'s contiguous dimension (K, or M when transA) are multiples of 4, `reg`
 * (scalar) otherwise.
 */
export type MatmulKernel = "tiled" | "reg" | "reg4";

export interface MatmulOptions {
  /** op(a) = aᵀ: a is stored [K, M] (or [B, K, M]). */
  readonly transA?: boolean;
  /** op(b) = bᵀ: b is stored [N, K] (or [B, N, K]). */
  readonly transB?: boolean;
  /** Scales op(a) · op(b); 1 by default. */
  readonly alpha?: number;
  /** Scales the old contents of `out`, added in (gradient accumulation); 0 by default: `out` is not read at all. */
  readonly beta?: number;
  /** [N], added to every row of every batch. */
  readonly bias?: Tensor;
  /** Overrides the adapter's choice (`gpu.tuning.matmul`). */
  readonly strategy?: MatmulStrategy;
}

/** What one matmul launch runs: sizes, entry point, override constants, grid. */
export interface MatmulPlan {
  readonly kernel: MatmulKernel;
  readonly batch: number;
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly constants: Record<string, number>;
  readonly workgroups: readonly [number, number, number];
  /** Batch strides in elements (0: a 2-D operand shared by every batch). */
  readonly strides: readonly [a: number, b: number, out: number];
  /** Register kernels: blocks of outputs across N, and in all per batch (0 for the tiled kernel). */
  readonly blocks: readonly [acrossN: number, total: number];
}

/** Outputs per invocation of the register kernels, rows x columns, and invocations per (1-D) workgroup. */
const BLOCK: Record<"reg" | "reg4", readonly [number, number]> = { reg: [16, 16], reg4: [16, 16] };
const WG = 64;
/** Workgroups per grid dimension that every device allows. */
const MAX_GROUPS = 65535;
/** Tiled kernel: TILE x TILE outputs per workgroup of (TILE / 4)² invocations, k in steps of TK. */
const TILE = 64;
const TK = 16;

const fmt = (shape: readonly number[]) => `[${shape.join(", ")}]`;
/** A 1-D count of workgroups as an x * y grid (the kernels skip the excess past the count). */
const split = (groups: number): [number, number] => {
  if (groups <= MAX_GROUPS) return [groups, 1];
  const y = Math.ceil(groups / MAX_GROUPS);
  return [Math.ceil(groups / y), y];
};

/**
 * Checks the shapes of `out = alpha · op(a) · op(b) + beta · out + bias` and plans the launch. a is [M, K] or
 * [B, M, K] (stored transposed when transA), b [K, N] or [B, K, N] (likewise), out [M, N] or [B, M, N]; a 2-D
 * operand is shared by every batch. Returns the plan, or a ShapeError naming the shapes.
 */
export const planMatmul = (
  a: readonly number[],
  b: readonly number[],
  out: readonly number[],
  strategy: MatmulStrategy,
  options: Pick<MatmulOptions, "transA" | "transB"> & { readonly bias?: readonly number[] } = {},
): MatmulPlan | ShapeError => {
  const { transA = false, transB = false } = options;
  const what = () =>
    `${transA ? "aᵀ" : "a"} ${fmt(a)} · ${transB ? "bᵀ" : "b"} ${fmt(b)} -> out ${fmt(out)}` +
    (options.bias === undefined ? "" : ` + bias ${fmt(options.bias)}`);
  for (const [name, s] of [["a", a], ["b", b], ["out", out]] as const) {
    if (s.length !== 2 && s.length !== 3) {
      return shapeError("matmul", `${name} must be 2-D or 3-D (batched): ${what()}`);
    }
  }
  const last2 = (s: readonly number[]) => [s[s.length - 2], s[s.length - 1]] as const;
  const [a0, a1] = last2(a);
  const [b0, b1] = last2(b);
  const [M, K] = transA ? [a1, a0] : [a0, a1];
  const [Kb, N] = transB ? [b1, b0] : [b0, b1];
  if (K !== Kb) return shapeError("matmul", `inner dimensions differ (${K} vs ${Kb}): ${what()}`);
  const [o0, o1] = last2(out);
  if (o0 !== M || o1 !== N) return shapeError("matmul", `out must be [${M}, ${N}]: ${what()}`);
  const batches = [a, b, out].filter((s) => s.length === 3).map((s) => s[0]);
  const batch = batches.length === 0 ? 1 : Math.max(...batches);
  if (batches.some((n) => n !== batch)) return shapeError("matmul", `batch sizes differ: ${what()}`);
  if (batch > 1 && out.length !== 3) return shapeError("matmul", `out must be [${batch}, ${M}, ${N}]: ${what()}`);
  if (options.bias !== undefined && (options.bias.length !== 1 || options.bias[0] !== N)) {
    return shapeError("matmul", `bias must be [${N}]: ${what()}`);
  }
  const strides = [a.length === 3 ? M * K : 0, b.length === 3 ? K * N : 0, M * N] as const;
  const flags = { TRANS_A: transA ? 1 : 0, TRANS_B: transB ? 1 : 0, BIAS: options.bias === undefined ? 0 : 1 };
  if (strategy === "tiled") {
    return {
      kernel: "tiled",
      batch,
      M,
      N,
      K,
      strides,
      blocks: [0, 0],
      constants: { ...flags, TILE, TK },
      workgroups: [Math.ceil(N / TILE), Math.ceil(M / TILE), batch],
    };
  }
  // vec4 loads and stores need K, N and op(a)'s contiguous dimension in whole vec4s (then so are the batch strides),
  // and no empty operand (a vec4 binding must hold one vec4).
  const vec4 = M > 0 && N > 0 && K > 0 && K % 4 === 0 && N % 4 === 0 && (!transA || M % 4 === 0);
  const kernel = vec4 ? "reg4" : "reg";
  const [rows, cols] = BLOCK[kernel];
  const blocksN = Math.ceil(N / cols);
  const blocks = blocksN * Math.ceil(M / rows);
  return {
    kernel,
    batch,
    M,
    N,
    K,
    strides,
    blocks: [blocksN, blocks],
    constants: { ...flags, WG },
    workgroups: [...split(Math.ceil(blocks / WG)), batch],
  };
};

/**
 * The uniform parameters of a planned matmul: for `Dispatch.setParams`, to change alpha or beta of a prepared matmul
 * (same tensors, same plan) without preparing it again.
 */
export const matmulParams = (plan: MatmulPlan, alpha = 1, beta = 0): Params => [
  ["u32", plan.M],
  ["u32", plan.N],
  ["u32", plan.K],
  ["u32", plan.strides[0]],
  ["u32", plan.strides[1]],
  ["u32", plan.strides[2]],
  ["f32", alpha],
  ["f32", beta],
  ["u32", plan.blocks[0]],
  ["u32", plan.blocks[1]],
];

const nothing: Dispatch = { kernel: "matmul", record: () => {}, setParams: () => {} };

/**
 * `out = alpha · op(a) · op(b) + beta · out + bias`, batched (see `planMatmul` for the shapes). Sums run over k in
 * order in f32, one invocation per output: deterministic. The strategy is the adapter's (`gpu.tuning.matmul`) unless
 * `options.strategy` forces one. `out` must not share a buffer with a, b or bias.
 */
export const matmul = Effect.fnUntraced(function* (a: Tensor, b: Tensor, out: Tensor, options: MatmulOptions = {}) {
  const gpu = yield* Gpu;
  const { bias, alpha = 1, beta = 0 } = options;
  for (const [name, t] of [["a", a], ["b", b], ["out", out], ["bias", bias]] as const) {
    if (t !== undefined && t.dtype !== "f32") return yield* shapeError("matmul", `${name} ${t} must be f32`);
  }
  for (const t of [a, b, bias]) {
    if (t !== undefined && t.buffer === out.buffer) {
      return yield* shapeError("matmul", `out ${out} shares its buffer with input ${t}`);
    }
  }
  const plan = planMatmul(a.shape, b.shape, out.shape, options.strategy ?? gpu.tuning.matmul, {
    ...(options.transA === undefined ? {} : { transA: options.transA }),
    ...(options.transB === undefined ? {} : { transB: options.transB }),
    ...(bias === undefined ? {} : { bias: bias.shape }),
  });
  if (plan instanceof ShapeError) return yield* plan;
  if (plan.M === 0 || plan.N === 0 || plan.batch === 0) return nothing; // an empty output: nothing to compute
  // WebGPU has no empty bindings: with K = 0 the kernel reads neither a nor b, so one word of each stands in.
  const bound = (t: Tensor) => t.size > 0 ? t : new Tensor(t.buffer, [1], t.dtype, t.offset);
  return yield* prepare({ name: "matmul", source, entryPoint: plan.kernel, constants: plan.constants }, {
    // Without a bias the kernel never reads binding 2, but it must be bound: `a` stands in.
    tensors: [bound(a), bound(b), bias ?? bound(a), out],
    params: matmulParams(plan, alpha, beta),
    workgroups: plan.workgroups,
  });
});
