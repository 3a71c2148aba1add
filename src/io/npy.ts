/**
 * NumPy `.npy` files: read float32 ('<f4'), int32 ('<i4'), int64 ('<i8') and uint8 ('|u1') arrays in C order with a
 * version 1, 2 or 3 header; write float32, int32 and uint8. Every error names the file and what is wrong with it.
 *
 * Format: magic "\x93NUMPY", major and minor version bytes, the header length (u16 LE in v1, u32 LE in v2/3), a
 * Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and a newline
 * so that the data starts on a 64-byte boundary, then the raw little-endian data.
 */
import { Effect, Schema } from "effect";
import { writeFileAtomic } from "./atomic.ts";

export class NpyError extends Schema.TaggedError<NpyError>()("NpyError", {
  file: Schema.String,
  message: Schema.String,
}) {}

export type NpyArray =
  | { readonly dtype: "<f4"; readonly shape: readonly number[]; readonly data: Float32Array<ArrayBuffer> }
  | { readonly dtype: "<i4"; readonly shape: readonly number[]; readonly data: Int32Array<ArrayBuffer> }
  | { readonly dtype: "<i8"; readonly shape: readonly number[]; readonly data: BigInt64Array<ArrayBuffer> }
  | { readonly dtype: "|u1"; readonly shape: readonly number[]; readonly data: Uint8Array<ArrayBuffer> };

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

const ITEM_SIZE = { "<f4": 4, "<i4": 4, "<i8": 8, "|u1": 1 } as const;
type Descr = keyof typeof ITEM_SIZE;

/** descr spellings NumPy may write for the types we read ('=' and '<' are the same on a little-endian host). */
const ALIASES: Record<string, Descr> = {
  "<f4": "<f4",
  "=f4": "<f4",
  "<i4": "<i4",
  "=i4": "<i4",
  "<i8": "<i8",
  "=i8": "<i8",
  "|u1": "|u1",
  "<u1": "|u1",
  "=u1": "|u1",
};

const typed = (descr: Descr, buffer: ArrayBuffer, shape: readonly number[]): NpyArray => {
  switch (descr) {
    case "<f4":
      return { dtype: descr, shape, data: new Float32Array(buffer) };
    case "<i4":
      return { dtype: descr, shape, data: new Int32Array(buffer) };
    case "<i8":
      return { dtype: descr, shape, data: new BigInt64Array(buffer) };
    case "|u1":
      return { dtype: descr, shape, data: new Uint8Array(buffer) };
  }
};

/** Parses `.npy` bytes; `file` only names the source in errors. The data is copied into an aligned buffer. */
export const parseNpy = (bytes: Uint8Array, file: string): NpyArray => {
  const fail = (message: string): never => {
    throw new NpyError({ file, message: `${file}: ${message}` });
  };
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    fail(bytes.length < 6 ? `too short (${bytes.length} bytes) for a .npy file` : "not a .npy file (wrong magic)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6]!;
  if (major < 1 || major > 3) fail(`unsupported .npy version ${major}.${bytes[7]}`);
  const headerStart = major === 1 ? 10 : 12;
  if (bytes.length < headerStart) fail(`truncated: ${bytes.length} bytes end inside the header length`);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) fail(`truncated: the header needs ${dataStart} bytes, the file has ${bytes.length}`);
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(headerStart, dataStart));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    fail(`bad header (need 'descr', 'fortran_order' and 'shape'): ${header.trim()}`);
  }
  const dtype = ALIASES[descr!];
  if (dtype === undefined) {
    fail(`unsupported dtype '${descr}' (readable: '<f4' float32, '<i4' int32, '<i8' int64, '|u1' uint8)`);
  }
  const shape = shapeText!.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  if (shape.some((s) => !Number.isSafeInteger(s) || s < 0)) fail(`bad shape (${shapeText})`);
  if (fortran === "True" && shape.filter((s) => s > 1).length > 1) {
    fail("Fortran-order (column-major) arrays are not supported: save with np.ascontiguousarray");
  }
  const count = shape.reduce((a, b) => a * b, 1);
  const expected = count * ITEM_SIZE[dtype!];
  const actual = bytes.length - dataStart;
  if (actual < expected) fail(`truncated: shape (${shape}) ${descr} needs ${expected} data bytes, found ${actual}`);
  if (actual > expected) fail(`${actual - expected} bytes after the data of shape (${shape}) ${descr}`);
  return typed(dtype!, bytes.slice(dataStart, dataStart + expected).buffer, shape);
};

/** `.npy` bytes (format version 1.0, or 2.0 when the header does not fit 65535 bytes). */
export const formatNpy = (
  array: { readonly shape: readonly number[]; readonly data: Float32Array | Int32Array | Uint8Array },
): Uint8Array<ArrayBuffer> => {
  const { shape, data } = array;
  const descr = data instanceof Float32Array ? "<f4" : data instanceof Int32Array ? "<i4" : "|u1";
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`formatNpy: ${data.length} values do not fill shape (${shape})`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const padTo64 = (prefix: number) => Math.ceil((prefix + dict.length + 1) / 64) * 64;
  const v1 = padTo64(10) - 10 <= 0xffff;
  const prefix = v1 ? 10 : 12;
  const total = padTo64(prefix);
  const header = dict.padEnd(total - prefix - 1, " ") + "\n";
  const out = new Uint8Array(total + data.byteLength);
  out.set(MAGIC);
  out[6] = v1 ? 1 : 2;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (v1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  out.set(new TextEncoder().encode(header), prefix);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), total);
  return out;
};

const ioError = (file: string, what: string) => (e: unknown) =>
  e instanceof NpyError ? e : new NpyError({ file, message: `${file}: cannot ${what}: ${(e as Error).message ?? e}` });

export const readNpy = (file: string): Effect.Effect<NpyArray, NpyError> =>
  Effect.tryPromise({ try: () => Deno.readFile(file), catch: ioError(file, "read") }).pipe(
    Effect.flatMap((bytes) => Effect.try({ try: () => parseNpy(bytes, file), catch: ioError(file, "parse") })),
  );

/** Writes `<file>.tmp` and renames it over `file`, so a crash never leaves half a file. */
export const writeNpy = (
  file: string,
  array: { readonly shape: readonly number[]; readonly data: Float32Array | Int32Array | Uint8Array },
): Effect.Effect<void, NpyError> =>
  Effect.tryPromise({
    try: async () => {
      await writeFileAtomic(file, formatNpy(array));
    },
    catch: ioError(file, "write"),
  });

/** A float32 N x d matrix from a `.npy` file, or an NpyError saying why the file holds something else. */
export const readNpyMatrix = (file: string) =>
  readNpy(file).pipe(
    Effect.flatMap((a) =>
      a.dtype === "<f4" && a.shape.length === 2
        ? Effect.succeed({ data: a.data, shape: [a.shape[0]!, a.shape[1]!] as const })
        : Effect.fail(
          new NpyError({ file, message: `${file}: expected a 2-D float32 array, found ${a.dtype} (${a.shape})` }),
        )
    ),
  );
