// Gradient checks shared by the nn tests: GPU gradients against central differences of the float64 reference.
import assert from "node:assert/strict";
import type { GpuContext } from "../../src/gpu/gpu.ts";
import type { Tensor } from "../../src/gpu/tensor.ts";
import type { ParamStore } from "../../src/nn/params.ts";
import * as ref from "./cpu_reference.ts";

export const state64 = async (gpu: GpuContext, params: ParamStore) =>
  new Map([...await params.stateDict(gpu)].map(([name, v]) => {
    const shape = [...params.parameters, ...params.bufferNames].find((e) => e.name === name)!.shape;
    return [name, ref.t64(v, shape)] as const;
  }));

/**
 * Compares GPU gradients with central differences of the float64 reference, at a few coordinates of every parameter.
 * Tolerance: the GPU works in f32 through several layers with batch statistics, so we allow 1e-3 of the largest
 * gradient magnitude plus 2% relative; a wrong formula (a missing term, a transposed index) is off by far more.
 */
export const checkGradients = async (
  gpu: GpuContext,
  params: ParamStore,
  f: (s: ref.State) => ref.T64,
  upstream: Float32Array,
  perTensor = 4,
) => {
  const state = await state64(gpu, params);
  const grads = await gpu.read(params.grads);
  let checked = 0;
  for (const e of params.parameters) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    const g = grads.subarray(e.offset, e.offset + n);
    // A reduce, not Math.max(...g): convnet5's 147,456-weight convolutions overflow the call stack as arguments.
    const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
    for (let k = 0; k < Math.min(perTensor, n); k++) {
      const i = Math.floor(((k + 0.5) / perTensor) * n);
      const fd = ref.finiteDifference(f, state, e.name, i, upstream);
      assert.ok(
        Math.abs(g[i] - fd) <= 1e-3 * scale + 0.02 * Math.abs(fd),
        `${e.name}[${i}]: GPU ${g[i]}, finite difference ${fd} (scale ${scale})`,
      );
      checked++;
    }
  }
  return checked;
};

export const upload = (gpu: GpuContext, data: Float32Array<ArrayBuffer>, shape: readonly number[], label: string) =>
  gpu.upload(data, "f32", shape, label) as Tensor<"f32">;
