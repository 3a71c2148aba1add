import { Effect } from "effect";
import source from "../../kernels/contrastive.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { alloc, type Dispatch, grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { matmul } from "./matmul.ts";
import { softmaxCrossEntropy, softmaxCrossEntropyBackward } from "./softmax_ce.ts";

const WG = 256;

/**
 * Which in-batch columns (j < N, j ≠ i) of row i are masked: `none` (ProtoNCE as the official code), `all`
 * (InfoNCE: the other rows' keys are not MoCo negatives), `same` (ProtoNCE with `maskDuplicatePositives`: the
 * columns holding row i's own prototype again).
 */
export type MaskMode = "none" | "all" | "same";
const MODES = { none: 0, all: 1, same: 2 } as const;

const check2d = (kernel: string, logits: Tensor) => {
  if (logits.dtype !== "f32" || logits.shape.length !== 2) return shapeError(kernel, `${logits} must be f32 [N, C]`);
  const [n, c] = logits.shape as [number, number];
  return n > c
    ? shapeError(kernel, `${logits} needs at least as many columns as rows (row i's target is column i)`)
    : undefined;
};

/**
 * Masks logits in place (see `MaskMode`), and every column from `valid` on (room left for negatives that a draw did
 * not fill). `sel` (u32 [C]) names each column's prototype for `same`. `valid` can change per step through
 * `setParams([["u32", N], ["u32", C], ["u32", mode], ["u32", valid]])`, or more simply `maskParams`.
 */
export const maskLogits = Effect.fnUntraced(function* (logits: Tensor, sel: Tensor, mode: MaskMode, valid?: number) {
  const gpu = yield* Gpu;
  const bad = check2d("maskLogits", logits);
  if (bad !== undefined) return yield* bad;
  const [n, c] = logits.shape as [number, number];
  if (sel.dtype !== "u32" || sel.size !== c) return yield* shapeError("maskLogits", `sel ${sel} must be u32 [${c}]`);
  return yield* prepare({ name: "contrastive", source, entryPoint: "mask", constants: { WG } }, {
    tensors: [logits, sel],
    params: maskParams(n, c, mode, valid ?? c),
    workgroups: grid1d(gpu, Math.ceil((n * c) / WG)),
  });
});

export const maskParams = (n: number, c: number, mode: MaskMode, valid: number) =>
  [["u32", n], ["u32", c], ["u32", MODES[mode]], ["u32", valid]] as const;

/**
 * `accuracy[0]` = fraction of rows i whose first maximum is column i (Acc@Inst, Acc@Proto), a batch column j < N
 * with `sel[j] == sel[i]` counting as column i (the row's own prototype repeated when duplicates are not masked).
 */
export const top1Diagonal = Effect.fnUntraced(function* (logits: Tensor, sel: Tensor<"u32">, accuracy: Tensor) {
  const bad = check2d("top1Diagonal", logits);
  if (bad !== undefined) return yield* bad;
  const [n, c] = logits.shape as [number, number];
  if (accuracy.dtype !== "f32" || accuracy.size !== 1) {
    return yield* shapeError("top1Diagonal", `accuracy ${accuracy} must be a 1-element f32 tensor`);
  }
  if (sel.dtype !== "u32" || sel.size !== c) return yield* shapeError("top1Diagonal", `sel ${sel} must be u32 [${c}]`);
  return yield* prepare({ name: "contrastive", source, entryPoint: "top1", constants: { WG } }, {
    tensors: [logits, sel, accuracy],
    params: maskParams(n, c, "none", c),
    workgroups: [1],
  });
});

export interface ContrastiveOptions {
  /** Multiplies q·table (1/τ for InfoNCE; ProtoNCE's 1/φ per column is folded into the table's rows). */
  readonly scale: number;
  /** This loss's weight in the total (1/M for each of M clusterings), applied to its gradient. */
  readonly weight: number;
  readonly mode: MaskMode;
  /** Add this loss's gradient into `dq` (true) or overwrite `dq` with it (false: the first loss of a step). */
  readonly accumulate: boolean;
}

/** One contrastive cross-entropy bound to its tensors: row i's target is column i of `q · tableᵀ · scale`. */
export interface ContrastiveLoss {
  readonly logits: Tensor<"f32">;
  /** Logits, mask, per-row loss and its mean, top-1 accuracy. */
  readonly forward: readonly Dispatch[];
  /** The gradient of `weight · mean loss` with respect to q, into `dq`. */
  readonly backward: readonly Dispatch[];
  /** Columns from `valid` on are masked from the next step on (a negative draw that could not fill its room). */
  readonly setValid: (valid: number) => void;
}

/**
 * Prepares `mean_i CE(softmax(scale · q_i · tableᵀ), i)` for q [N, d] and table [C, d] (C ≥ N), writing the mean
 * loss into `loss` and the top-1 accuracy into `accuracy` (1-element tensors), and its weighted gradient into `dq`.
 */
export const contrastiveLoss = Effect.fnUntraced(function* (
  q: Tensor<"f32">,
  table: Tensor<"f32">,
  sel: Tensor<"u32">,
  metrics: { readonly loss: Tensor<"f32">; readonly accuracy: Tensor<"f32"> },
  dq: Tensor<"f32">,
  o: ContrastiveOptions,
) {
  const gpu = yield* Gpu;
  const [n, d] = q.shape as [number, number];
  const c = table.shape[0];
  if (table.shape.length !== 2 || table.shape[1] !== d || c < n) {
    return yield* shapeError("contrastiveLoss", `table ${table} must be [C ≥ ${n}, ${d}] for q ${q}`);
  }
  const logits = yield* alloc([n, c], "f32", "contrastive.logits");
  const dlogits = yield* alloc([n, c], "f32", "contrastive.dlogits");
  const rowLoss = yield* alloc([n], "f32", "contrastive.rowLoss");
  const targets = gpu.upload(Uint32Array.from({ length: n }, (_, i) => i), "u32", [n], "contrastive.targets");
  const mask = yield* maskLogits(logits, sel, o.mode);
  return {
    logits,
    forward: [
      yield* matmul(q, table, logits, { transB: true, alpha: o.scale }),
      mask,
      yield* softmaxCrossEntropy(logits, targets, rowLoss, metrics.loss),
      yield* top1Diagonal(logits, sel, metrics.accuracy),
    ],
    backward: [
      yield* softmaxCrossEntropyBackward(logits, targets, dlogits),
      yield* matmul(dlogits, table, dq, { alpha: o.scale * o.weight, beta: o.accumulate ? 1 : 0 }),
    ],
    setValid: (valid) => mask.setParams(maskParams(n, c, o.mode, valid)),
  } satisfies ContrastiveLoss;
});
