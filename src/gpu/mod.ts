export * from "./errors.ts";
export * from "./gpu.ts";
export * from "./kernel.ts";
export * from "./limits.ts";
export * from "./shapes.ts";
export * from "./tensor.ts";
export * from "./timer.ts";
