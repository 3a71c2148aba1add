/** Element types a tensor can hold. `u8` is packed four to a 32-bit word on the GPU (images as bytes). */
export type DType = "f32" | "u32" | "i32" | "u8";

export type HostArray<D extends DType> = D extends "f32" ? Float32Array<ArrayBuffer>
  : D extends "u32" ? Uint32Array<ArrayBuffer>
  : D extends "i32" ? Int32Array<ArrayBuffer>
  : Uint8Array<ArrayBuffer>;

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Bytes a tensor of this shape and dtype occupies on the GPU (a multiple of 4, as storage bindings require). */
export const byteLengthOf = (shape: readonly number[], dtype: DType): number =>
  dtype === "u8" ? Math.ceil(numel(shape) / 4) * 4 : numel(shape) * 4;

export const hostArray = <D extends DType>(dtype: D, buffer: ArrayBuffer, length: number): HostArray<D> =>
  (dtype === "f32"
    ? new Float32Array(buffer, 0, length)
    : dtype === "u32"
    ? new Uint32Array(buffer, 0, length)
    : dtype === "i32"
    ? new Int32Array(buffer, 0, length)
    : new Uint8Array(buffer, 0, length)) as HostArray<D>;

/**
 * A typed view of a GPU buffer: shape, dtype and a byte offset (views of one buffer share it). Created through the
 * Gpu service (`gpu.tensor`, `gpu.upload`); read back with `gpu.read`.
 */
export class Tensor<D extends DType = DType> {
  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: D,
    readonly offset = 0,
  ) {}

  get size(): number {
    return numel(this.shape);
  }

  get byteLength(): number {
    return byteLengthOf(this.shape, this.dtype);
  }

  get label(): string {
    return this.buffer.label;
  }

  /** The same bytes seen with another shape of the same size. */
  reshape(shape: readonly number[]): Tensor<D> {
    if (numel(shape) !== this.size) {
      throw new RangeError(`reshape of '${this.label}' [${this.shape}] to [${shape}]: sizes differ`);
    }
    return new Tensor(this.buffer, shape, this.dtype, this.offset);
  }

  /**
   * Rows [from, from + count) along the first axis, as a tensor of their own (a byte-offset view of the same buffer).
   * A view bound on its own needs a 256-byte-aligned offset (the storage binding rule); copies and reads do not.
   */
  rows(from: number, count: number): Tensor<D> {
    const rowSize = this.size / this.shape[0];
    if (from < 0 || count < 0 || from + count > this.shape[0] || this.dtype === "u8") {
      throw new RangeError(`rows ${from}..${from + count} of '${this.label}' [${this.shape}] ${this.dtype}`);
    }
    return new Tensor(this.buffer, [count, ...this.shape.slice(1)], this.dtype, this.offset + from * rowSize * 4);
  }

  /** The buffer binding of this tensor, as a bind group entry needs it. */
  binding(): GPUBufferBinding {
    return { buffer: this.buffer, offset: this.offset, size: this.byteLength };
  }

  toString(): string {
    return `${this.label}[${this.shape.join("x")}] ${this.dtype}`;
  }
}
