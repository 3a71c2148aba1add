/**
 * safetensors files (huggingface/safetensors format), readable by PyTorch (`safetensors.torch.load_file`) and NumPy:
 *
 *   u64 LE N | N bytes of JSON header, padded with spaces to a multiple of 8 | raw little-endian tensor data
 *
 * The header maps each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the data
 * section) plus an optional `"__metadata__"` object of string values. Tensors must tile the data section exactly,
 * without gaps or overlaps, as the reference implementation requires. Dtypes: F64, F32, I64, I32, U32, I16, U16, I8, U8.
 *
 * The one safetensors implementation: prototypes files and checkpoints use it directly, and the graph's tensor
 * bundles (src/graph/codecs.ts, `BundleFromBytes`) are safetensors files written and read through it.
 */
import { Effect, Schema } from "effect";
import { writeFileAtomic } from "./atomic.ts";

export class SafetensorsError extends Schema.TaggedError<SafetensorsError>()("SafetensorsError", {
  file: Schema.String,
  message: Schema.String,
}) {}

/** The typed array that holds each safetensors dtype. */
interface DataOf {
  readonly F64: Float64Array<ArrayBuffer>;
  readonly F32: Float32Array<ArrayBuffer>;
  readonly I64: BigInt64Array<ArrayBuffer>;
  readonly I32: Int32Array<ArrayBuffer>;
  readonly U32: Uint32Array<ArrayBuffer>;
  readonly I16: Int16Array<ArrayBuffer>;
  readonly U16: Uint16Array<ArrayBuffer>;
  readonly I8: Int8Array<ArrayBuffer>;
  readonly U8: Uint8Array<ArrayBuffer>;
}

export type SafeDType = keyof DataOf;

/** A tensor of a safetensors file: discriminated by `dtype`, so `t.dtype === "F32"` makes `t.data` a Float32Array. */
export type SafeTensor = {
  readonly [D in SafeDType]: { readonly dtype: D; readonly shape: readonly number[]; readonly data: DataOf[D] };
}[SafeDType];

/** Any typed array a safetensors file can hold. */
export type SafeData = SafeTensor["data"];

export interface SafeTensors {
  readonly tensors: ReadonlyMap<string, SafeTensor>;
  /** `__metadata__`: strings only, per the format. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** The constructor of each dtype's typed array, in the order the error messages list them. */
const ARRAYS: {
  readonly [D in SafeDType]: { new (buffer: ArrayBuffer): DataOf[D]; readonly BYTES_PER_ELEMENT: number };
} = {
  F64: Float64Array,
  F32: Float32Array,
  I64: BigInt64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  U16: Uint16Array,
  I8: Int8Array,
  U8: Uint8Array,
};

const DTYPES = Object.keys(ARRAYS) as ReadonlyArray<SafeDType>;

const itemSize = (dtype: SafeDType): number => ARRAYS[dtype].BYTES_PER_ELEMENT;

/** The spec's bound on the header, which keeps a corrupt length from allocating gigabytes. */
const MAX_HEADER = 100_000_000;

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

const typed = (dtype: SafeDType, shape: readonly number[], buffer: ArrayBuffer): SafeTensor =>
  ({ dtype, shape, data: new ARRAYS[dtype](buffer) }) as SafeTensor;

/** The dtype of a typed array, if a safetensors file can hold it. */
export const safeDTypeOf = (data: unknown): SafeDType | undefined => DTYPES.find((d) => data instanceof ARRAYS[d]);

/** `data` as a tensor of `shape` (default: 1-D), or undefined for a view no dtype holds (a Float16Array, a DataView). */
export const safeTensorOf = (data: ArrayBufferView, shape?: readonly number[]): SafeTensor | undefined => {
  const dtype = safeDTypeOf(data);
  return dtype === undefined ? undefined : ({ dtype, shape: shape ?? [(data as SafeData).length], data } as SafeTensor);
};

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** Parses safetensors bytes; `file` only names the source in errors. Tensor data is copied into aligned buffers. */
export const parseSafetensors = (bytes: Uint8Array, file: string): SafeTensors => {
  const fail = (message: string): never => {
    throw new SafetensorsError({ file, message: `${file}: ${message}` });
  };
  if (bytes.length < 8) fail(`truncated: ${bytes.length} bytes, fewer than the 8-byte header length`);
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) fail(`bad header: length ${n} is over the format's limit of ${MAX_HEADER} bytes`);
  const headerEnd = 8 + Number(n);
  if (headerEnd > bytes.length) fail(`truncated: the header needs ${headerEnd} bytes, the file has ${bytes.length}`);
  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, headerEnd));
    if (!text.startsWith("{")) throw new Error("it does not start with '{'");
    header = JSON.parse(text);
  } catch (e) {
    fail(`bad header: not a JSON object (${(e as Error).message})`);
  }
  if (!isRecord(header)) return fail("bad header: not a JSON object");
  const data = bytes.subarray(headerEnd);
  const metadata: Record<string, string> = {};
  const entries: Array<{ name: string; dtype: SafeDType; shape: number[]; begin: number; end: number }> = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isRecord(info) || Object.values(info).some((v) => typeof v !== "string")) {
        fail("bad header: __metadata__ must map names to strings");
      }
      Object.assign(metadata, info);
      continue;
    }
    if (!isRecord(info)) return fail(`bad header: tensor '${name}' is not an object`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== "string" || !DTYPES.includes(dtype as SafeDType)) {
      fail(`tensor '${name}' has unsupported dtype ${JSON.stringify(dtype)} (supported: ${DTYPES.join(", ")})`);
    }
    if (!Array.isArray(shape) || shape.some((s) => !Number.isSafeInteger(s) || s < 0)) {
      fail(`bad header: tensor '${name}' has shape ${JSON.stringify(shape)}, not a list of sizes`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`bad header: tensor '${name}' has data_offsets ${JSON.stringify(offsets)}, not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    const bytesNeeded = numel(shape as number[]) * itemSize(dtype as SafeDType);
    if (end < begin || end - begin !== bytesNeeded) {
      fail(
        `tensor '${name}': data_offsets [${begin}, ${end}] do not hold ${dtype} ${JSON.stringify(shape)} ` +
          `(${bytesNeeded} bytes)`,
      );
    }
    entries.push({ name, dtype: dtype as SafeDType, shape: shape as number[], begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of entries) {
    if (e.begin !== at) {
      fail(
        `data_offsets out of range: tensor '${e.name}' starts at ${e.begin}, expected ${at} ` +
          `(tensors must tile the data without gaps or overlaps)`,
      );
    }
    at = e.end;
  }
  if (at > data.length) fail(`truncated: the tensors need ${at} data bytes, the file has ${data.length}`);
  if (at < data.length) fail(`data_offsets out of range: ${data.length - at} bytes after the last tensor`);
  const tensors = new Map<string, SafeTensor>();
  for (const e of entries) tensors.set(e.name, typed(e.dtype, e.shape, data.slice(e.begin, e.end).buffer));
  // Keep the header's order rather than the data's.
  const ordered = new Map(Object.keys(header).filter((k) => k !== "__metadata__").map((k) => [k, tensors.get(k)!]));
  return { tensors: ordered, metadata };
};

/**
 * safetensors bytes for `tensors` (in the given order in the header; in the data, widest elements first so that
 * each tensor is aligned to its element size) and string `metadata`.
 */
export const formatSafetensors = (
  tensors: ReadonlyMap<string, SafeTensor> | Readonly<Record<string, SafeTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array<ArrayBuffer> => {
  const list = [...(tensors instanceof Map ? tensors : Object.entries(tensors))] as Array<[string, SafeTensor]>;
  for (const [name, t] of list) {
    if (name === "__metadata__") throw new RangeError("formatSafetensors: '__metadata__' is not a tensor name");
    if (numel(t.shape) !== t.data.length) {
      throw new RangeError(`formatSafetensors: tensor '${name}' has ${t.data.length} values for shape [${t.shape}]`);
    }
  }
  const layout = [...list].sort(([, a], [, b]) => itemSize(b.dtype) - itemSize(a.dtype));
  const offsets = new Map<string, [number, number]>();
  let size = 0;
  for (const [name, t] of layout) {
    offsets.set(name, [size, size + t.data.byteLength]);
    size += t.data.byteLength;
  }
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  for (const [name, t] of list) header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: offsets.get(name) };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + size);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.fill(0x20, 8, 8 + padded);
  out.set(json, 8);
  for (const [name, t] of layout) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), 8 + padded + offsets.get(name)![0]);
  }
  return out;
};

const ioError = (file: string, what: string) => (e: unknown) =>
  e instanceof SafetensorsError
    ? e
    : new SafetensorsError({ file, message: `${file}: cannot ${what}: ${(e as Error).message ?? e}` });

export const readSafetensors = (file: string): Effect.Effect<SafeTensors, SafetensorsError> =>
  Effect.tryPromise({ try: () => Deno.readFile(file), catch: ioError(file, "read") }).pipe(
    Effect.flatMap((bytes) => Effect.try({ try: () => parseSafetensors(bytes, file), catch: ioError(file, "parse") })),
  );

/** Writes `<file>.tmp` and renames it over `file`, so a crash leaves the old file or the new one. */
export const writeSafetensors = (
  file: string,
  tensors: ReadonlyMap<string, SafeTensor> | Readonly<Record<string, SafeTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): Effect.Effect<void, SafetensorsError> =>
  Effect.tryPromise({
    try: async () => {
      await writeFileAtomic(file, formatSafetensors(tensors, metadata));
    },
    catch: ioError(file, "write"),
  });
