import { Effect } from "effect";
import source from "../../kernels/elementwise.wgsl" with { type: "text" };
import { Gpu } from "../gpu/gpu.ts";
import { grid1d, prepare } from "../gpu/kernel.ts";
import { shapeError } from "../gpu/errors.ts";
import { sameShape, sameView as same } from "../gpu/shapes.ts";
import type { Tensor } from "../gpu/tensor.ts";

/**
 * Elementwise f32 ops. Every op's uniforms are `[["u32", n], ["f32", a]]` (n elements, a the scalar, 0 where the op
 * has none), so a prepared `scale` or `axpy` can take a new scalar through `Dispatch.setParams` without preparing again.
 *
 * Aliasing: an output may be the very same tensor as an input (same buffer, offset and size) where an op says so; it is
 * then bound once, read-write. Any other sharing of a buffer between an output and an input (two views of one buffer)
 * is a ShapeError, because WebGPU forbids binding a buffer twice in a dispatch when one binding is writable.
 */

const WG = 256;

type Bindings = readonly [x?: Tensor, y?: Tensor, out?: Tensor, io?: Tensor];

/** ShapeError unless every tensor is f32 and of the first one's shape. */
const checkAll = (kernel: string, tensors: readonly Tensor[]) => {
  const first = tensors[0]!;
  for (const t of tensors) {
    if (t.dtype !== "f32") return shapeError(kernel, `${t} must be f32`);
    if (!sameShape(t, first)) {
      return shapeError(kernel, `shapes differ: ${tensors.map(String).join(", ")}`);
    }
  }
  return undefined;
};

/** ShapeError when `out` shares a buffer with `input` without being the same tensor. */
const checkAlias = (kernel: string, input: Tensor, out: Tensor) =>
  input.buffer === out.buffer && !same(input, out)
    ? shapeError(kernel, `${out} overlaps ${input} without being the same tensor (views of one buffer)`)
    : undefined;

const launch = Effect.fnUntraced(function* (entryPoint: string, tensors: Bindings, n: number, a = 0) {
  const gpu = yield* Gpu;
  const [x, y, out, io] = tensors;
  return yield* prepare({ name: "elementwise", source, entryPoint, constants: { WG } }, {
    tensors: [x, y, out, io],
    params: [["u32", n], ["f32", a]],
    workgroups: grid1d(gpu, Math.ceil(n / WG)),
  });
});

/** `out = x + y`. `out` may be `x` or `y` (or both, when x is y) for an in-place add. */
export const add = Effect.fnUntraced(function* (x: Tensor, y: Tensor, out: Tensor) {
  const bad = checkAll("add", [x, y, out]) ?? checkAlias("add", x, out) ?? checkAlias("add", y, out);
  if (bad !== undefined) return yield* bad;
  const n = out.size;
  if (same(out, x) && same(out, y)) return yield* launch("scale_inplace", [, , , out], n, 2); // x + x = 2x exactly
  if (same(out, x)) return yield* launch("add_inplace", [, y, , out], n);
  if (same(out, y)) return yield* launch("add_inplace", [, x, , out], n);
  return yield* launch("add", [x, y, out], n);
});

/** `out = a · x`. `out` may be `x` (in place). The uniforms' `a` can be changed later with `setParams`. */
export const scale = Effect.fnUntraced(function* (x: Tensor, a: number, out: Tensor) {
  const bad = checkAll("scale", [x, out]) ?? checkAlias("scale", x, out);
  if (bad !== undefined) return yield* bad;
  if (same(out, x)) return yield* launch("scale_inplace", [, , , out], out.size, a);
  return yield* launch("scale", [x, , out], out.size, a);
});

/**
 * `y += a · x`, in place on `y`. When `x` is `y` this is `y = (1 + a) · y` (prepared as an in-place scale, whose
 * uniform scalar is then `1 + a`).
 */
export const axpy = Effect.fnUntraced(function* (a: number, x: Tensor, y: Tensor) {
  const bad = checkAll("axpy", [x, y]) ?? checkAlias("axpy", x, y);
  if (bad !== undefined) return yield* bad;
  if (same(x, y)) return yield* launch("scale_inplace", [, , , y], y.size, 1 + a);
  return yield* launch("axpy", [x, , , y], y.size, a);
});

/** `out = max(x, 0)`. `out` may be `x` (in place). */
export const relu = Effect.fnUntraced(function* (x: Tensor, out: Tensor) {
  const bad = checkAll("relu", [x, out]) ?? checkAlias("relu", x, out);
  if (bad !== undefined) return yield* bad;
  if (same(out, x)) return yield* launch("relu_inplace", [, , , out], out.size);
  return yield* launch("relu", [x, , out], out.size);
});

/**
 * `dx = dy where x > 0, else 0` (x: the input of the relu, dy: the gradient of its output). `dx` may be `dy` (in
 * place); it may not be `x`.
 */
export const reluBackward = Effect.fnUntraced(function* (x: Tensor, dy: Tensor, dx: Tensor) {
  const bad = checkAll("reluBackward", [x, dy, dx]) ?? checkAlias("reluBackward", dy, dx) ??
    (x.buffer === dx.buffer
      ? shapeError("reluBackward", `${dx} must not share a buffer with the input ${x}`)
      : undefined);
  if (bad !== undefined) return yield* bad;
  if (same(dx, dy)) return yield* launch("relu_backward_inplace", [x, , , dx], dx.size);
  return yield* launch("relu_backward", [x, dy, dx], dx.size);
});
