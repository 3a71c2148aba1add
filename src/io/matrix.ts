/**
 * A host matrix (row-major f32, what `.npy` and safetensors readers give): the currency between the E-step, the
 * evaluation and files. `readMatrix` reads one from a `.npy` file or a tensor of a `.safetensors` file.
 */
import { Effect } from "effect";
import { readNpyMatrix } from "./npy.ts";
import { readSafetensors, type SafeTensor, SafetensorsError } from "./safetensors.ts";

export interface Matrix {
  readonly data: Float32Array<ArrayBuffer>;
  readonly shape: readonly [number, number];
}

/** The matrix of a `.npy` file, or of a `.safetensors` file's tensor `tensor` (else its only one, or "features"). */
export const readMatrix = (file: string, tensor?: string) =>
  Effect.gen(function* () {
    if (!file.endsWith(".safetensors")) return yield* readNpyMatrix(file);
    const { tensors } = yield* readSafetensors(file);
    const names = [...tensors.keys()];
    const name = tensor ?? (names.length === 1 ? names[0] : tensors.has("features") ? "features" : undefined);
    const t: SafeTensor | undefined = name === undefined ? undefined : tensors.get(name);
    if (t === undefined) {
      return yield* new SafetensorsError({
        file,
        message:
          `${file}: ${name === undefined ? "several tensors and none named 'features'" : `no tensor '${name}'`}` +
          ` (it has: ${names.join(", ") || "none"}); pick one with --tensor`,
      });
    }
    if (t.dtype !== "F32" || t.shape.length !== 2) {
      return yield* new SafetensorsError({
        file,
        message: `${file}: tensor '${name}' is ${t.dtype} [${t.shape}], not a 2-D F32 matrix`,
      });
    }
    return { data: t.data as Float32Array<ArrayBuffer>, shape: [t.shape[0]!, t.shape[1]!] } satisfies Matrix;
  });
