import type { Tensor } from "./tensor.ts";

/**
 * Shape and aliasing checks that the ops' preparation shares. WebGPU forbids binding one buffer read-only and
 * read-write in a dispatch (even as disjoint views), so every op checks how its tensors share buffers up front and
 * turns a violation into a ShapeError naming the tensors.
 */

/** The same dimensions, in the same order. */
export const sameShape = (a: Tensor | readonly number[], b: Tensor | readonly number[]): boolean => {
  const x = "shape" in a ? a.shape : a, y = "shape" in b ? b.shape : b;
  return x.length === y.length && x.every((s, i) => s === y[i]);
};

/** The very same bytes: one buffer, the same offset and size (a tensor bound once, read-write, for an in-place op). */
export const sameView = (a: Tensor, b: Tensor): boolean =>
  a.buffer === b.buffer && a.offset === b.offset && a.byteLength === b.byteLength;

/** Views of one buffer whose byte ranges intersect. */
export const overlaps = (a: Tensor, b: Tensor): boolean =>
  a.buffer === b.buffer && a.offset < b.offset + b.byteLength && b.offset < a.offset + a.byteLength;

/**
 * The first pair (one tensor of `a`, one of `b`) on one buffer, in `a`'s order, or undefined. With the tensors a
 * dispatch reads and those it writes: the pair WebGPU cannot bind together.
 */
export const sharedBuffer = (
  a: ReadonlyArray<Tensor>,
  b: ReadonlyArray<Tensor>,
): readonly [Tensor, Tensor] | undefined => {
  for (const x of a) {
    const y = b.find((y) => y.buffer === x.buffer);
    if (y !== undefined) return [x, y];
  }
  return undefined;
};
