import { Effect } from "effect";
import source from "../../kernels/softmax_ce.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, type Params, prepare, sequence } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { rowWorkgroup } from "./reduce.ts";

const MEAN_WG = 256;
const NAN_BITS = 0x7fc00000;

const check = (kernel: string, logits: Tensor, targets: Tensor) => {
  if (logits.shape.length !== 2 || logits.dtype !== "f32") {
    return shapeError(kernel, `logits ${logits} must be 2-D f32 [N, C]`);
  }
  const [rows, cols] = logits.shape as [number, number];
  if (rows === 0 || cols === 0) return shapeError(kernel, `logits ${logits} must have at least one row and class`);
  if (targets.dtype !== "u32" || targets.shape.length !== 1 || targets.shape[0] !== rows) {
    return shapeError(kernel, `targets ${targets} must be u32 [${rows}] for logits ${logits}`);
  }
  return undefined;
};

const params = (rows: number, cols: number): Params => [["u32", rows], ["u32", cols], ["u32", NAN_BITS]];

/**
 * Softmax cross-entropy, row-wise and numerically stable: `loss[i] = logsumexp(logits_i) − logits_i[targets_i]` into
 * f32 [N], and the mean over rows into the 1-element `mean`, summed in a fixed order. One Dispatch (two launches: the
 * rows, then the mean). Logits are used as given: callers scale them (e.g. by 1/τ) beforehand.
 *
 * Targets must lie in [0, C): that is the caller's duty, since a kernel cannot fail. A row with a target out of range
 * gets a NaN loss, so the mean is NaN too and the error cannot pass unnoticed.
 */
export const softmaxCrossEntropy = Effect.fnUntraced(
  function* (logits: Tensor, targets: Tensor, loss: Tensor, mean: Tensor) {
    const gpu = yield* Gpu;
    const bad = check("softmaxCrossEntropy", logits, targets);
    if (bad !== undefined) return yield* bad;
    const [rows, cols] = logits.shape as [number, number];
    if (loss.dtype !== "f32" || loss.shape.length !== 1 || loss.shape[0] !== rows) {
      return yield* shapeError("softmaxCrossEntropy", `loss ${loss} must be f32 [${rows}]`);
    }
    if (mean.dtype !== "f32" || mean.size !== 1) {
      return yield* shapeError("softmaxCrossEntropy", `mean ${mean} must be a 1-element f32 tensor`);
    }
    const inputs = [logits, targets];
    if (inputs.some((t) => t.buffer === loss.buffer || t.buffer === mean.buffer) || loss.buffer === mean.buffer) {
      return yield* shapeError("softmaxCrossEntropy", `loss ${loss} and mean ${mean} must have buffers of their own`);
    }
    const rowsDispatch = yield* prepare(
      { name: "softmax_ce", source, entryPoint: "forward", constants: { WG: rowWorkgroup(cols) } },
      { tensors: [logits, targets, loss], params: params(rows, cols), workgroups: grid1d(gpu, rows) },
    );
    const meanDispatch = yield* prepare(
      { name: "softmax_ce", source, entryPoint: "mean_loss", constants: { WG: MEAN_WG } },
      { tensors: [undefined, undefined, loss, mean], params: params(rows, cols), workgroups: [1] },
    );
    return sequence("softmax_ce", [rowsDispatch, meanDispatch]);
  },
);

/**
 * The gradient of the mean softmax cross-entropy: `dlogits[i, j] = (softmax(logits_i)_j − [j = targets_i]) / N`,
 * f32 [N, C]. Recomputes the row statistics from the logits, so it needs nothing from the forward. A target out of
 * range gives a NaN row.
 */
export const softmaxCrossEntropyBackward = Effect.fnUntraced(
  function* (logits: Tensor, targets: Tensor, dlogits: Tensor) {
    const gpu = yield* Gpu;
    const bad = check("softmaxCrossEntropyBackward", logits, targets);
    if (bad !== undefined) return yield* bad;
    const [rows, cols] = logits.shape as [number, number];
    if (
      dlogits.dtype !== "f32" || dlogits.shape.length !== 2 || dlogits.shape[0] !== rows || dlogits.shape[1] !== cols
    ) {
      return yield* shapeError("softmaxCrossEntropyBackward", `dlogits ${dlogits} must be f32 [${rows}, ${cols}]`);
    }
    if (dlogits.buffer === logits.buffer || dlogits.buffer === targets.buffer) {
      return yield* shapeError("softmaxCrossEntropyBackward", `dlogits ${dlogits} must have a buffer of its own`);
    }
    return yield* prepare(
      { name: "softmax_ce", source, entryPoint: "backward", constants: { WG: rowWorkgroup(cols) } },
      {
        tensors: [logits, targets, undefined, undefined, dlogits],
        params: params(rows, cols),
        workgroups: grid1d(gpu, rows),
      },
    );
  },
);
