import { Schema } from "effect";

/** No `navigator.gpu`, no adapter, or the device request failed. */
export class GpuUnavailable extends Schema.TaggedError<GpuUnavailable>()("GpuUnavailable", {
  message: Schema.String,
}) {}

/** A WebGPU validation error (bad WGSL, bad binding, bad dispatch) caught in an error scope around one kernel. */
export class GpuValidationError extends Schema.TaggedError<GpuValidationError>()("GpuValidationError", {
  kernel: Schema.String,
  message: Schema.String,
}) {}

/** An allocation that exceeds a device limit or that the device could not satisfy. */
export class GpuOutOfMemory extends Schema.TaggedError<GpuOutOfMemory>()("GpuOutOfMemory", {
  label: Schema.String,
  bytes: Schema.Number,
  limit: Schema.Number,
  message: Schema.String,
}) {}

/**
 * A kernel needs more of the device than its limits allow (storage buffers per stage, workgroup memory, invocations
 * per workgroup): found before compiling, naming the kernel, its entry point and the limit.
 */
export class GpuLimitExceeded extends Schema.TaggedError<GpuLimitExceeded>()("GpuLimitExceeded", {
  kernel: Schema.String,
  /** The WebGPU limit's name, e.g. `maxComputeWorkgroupStorageSize`. */
  limit: Schema.String,
  required: Schema.Number,
  allowed: Schema.Number,
  message: Schema.String,
}) {}

/** The device was lost (driver reset, out of memory on a real GPU, ...) while work was running. */
export class GpuDeviceLost extends Schema.TaggedError<GpuDeviceLost>()("GpuDeviceLost", {
  reason: Schema.String,
  message: Schema.String,
}) {}

/** A kernel was asked to run on shapes it cannot handle. Thrown at preparation time, never inside a step. */
export class ShapeError extends Schema.TaggedError<ShapeError>()("ShapeError", {
  kernel: Schema.String,
  message: Schema.String,
}) {}

export type GpuError = GpuValidationError | GpuOutOfMemory | GpuDeviceLost | GpuLimitExceeded;

export const shapeError = (kernel: string, message: string): ShapeError =>
  new ShapeError({ kernel, message: `${kernel}: ${message}` });
