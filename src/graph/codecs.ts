/**
 * Codecs for stage outputs that hold tensors. The artifact store writes a `Uint8Array` as a raw `.bin` file and
 * anything else as JSON, so a tensor must reach it as bytes: JSON (or base64) of a million floats is slow and large.
 *
 * - `Float32FromBytes` (and the other `*FromBytes`): one typed array <-> its raw little-endian bytes.
 * - `BundleFromBytes(schema)`: a struct mixing tensors and plain data <-> one file in the safetensors layout
 *   (`u64 LE header length | JSON header | raw tensor bytes`). Every typed array found anywhere in the struct's
 *   encoded form becomes a 1-D tensor named by its path (`features`, `clusterings.0.centroids`); the rest of the
 *   value is kept as JSON in the header's `__metadata__.json`, with `{"$tensor": name}` where a tensor was. The file
 *   loads in Python with `safetensors.numpy.load_file`. One file per artifact keeps the write a single atomic rename.
 *
 * Decoding always copies, so every typed array owns an aligned buffer of its own.
 */
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect";

type TypedArray =
  | Float32Array<ArrayBuffer>
  | Float64Array<ArrayBuffer>
  | Int32Array<ArrayBuffer>
  | Uint32Array<ArrayBuffer>
  | Int16Array<ArrayBuffer>
  | Uint16Array<ArrayBuffer>
  | Int8Array<ArrayBuffer>
  | Uint8Array<ArrayBuffer>;

interface TypedArrayClass<T extends TypedArray> {
  new (buffer: ArrayBuffer): T;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
}

/** safetensors dtype names for the typed arrays we store. */
const DTYPES: ReadonlyArray<readonly [string, TypedArrayClass<TypedArray>]> = [
  ["F32", Float32Array],
  ["F64", Float64Array],
  ["I32", Int32Array],
  ["U32", Uint32Array],
  ["I16", Int16Array],
  ["U16", Uint16Array],
  ["I8", Int8Array],
  ["U8", Uint8Array],
];

const bytesOf = (t: ArrayBufferView): Uint8Array<ArrayBuffer> =>
  new Uint8Array(t.buffer as ArrayBuffer, t.byteOffset, t.byteLength);

const fail = (message: string) => Effect.fail(new SchemaIssue.InvalidValue({ message }));

const typedArrayFromBytes = <T extends TypedArray>(ctor: TypedArrayClass<T>) =>
  Schema.Uint8Array.pipe(Schema.decodeTo(
    Schema.instanceOf(ctor),
    SchemaTransformation.transformEffect<T, Uint8Array>({
      decode: (b) =>
        b.byteLength % ctor.BYTES_PER_ELEMENT === 0
          ? Effect.succeed(new ctor(b.slice().buffer))
          : fail(`${b.byteLength} bytes is not a whole number of ${ctor.name} elements`),
      encode: (t) => Effect.succeed(bytesOf(t)),
    }),
  ));

/** `Float32Array` <-> its raw bytes (a `.bin` artifact). */
export const Float32FromBytes = typedArrayFromBytes(Float32Array<ArrayBuffer>);
/** `Int32Array` <-> its raw bytes (cluster assignments, labels). */
export const Int32FromBytes = typedArrayFromBytes(Int32Array<ArrayBuffer>);
/** `Uint32Array` <-> its raw bytes (indices, seeds). */
export const Uint32FromBytes = typedArrayFromBytes(Uint32Array<ArrayBuffer>);

// ---------------------------------------------------------------------------------------------------------------
// The bundle container

const isTensor = (v: unknown): v is TypedArray => DTYPES.some(([, ctor]) => v instanceof ctor);

/** Replaces every typed array in `value` by `{ $tensor: name }` and collects it under that name. */
const split = (value: unknown, path: ReadonlyArray<string>, tensors: Map<string, TypedArray>): unknown => {
  if (isTensor(value)) {
    const base = path.join(".") || "value";
    let name = base;
    for (let i = 1; tensors.has(name) || name === "__metadata__"; i++) name = `${base}#${i}`;
    tensors.set(name, value);
    return { $tensor: name };
  }
  if (ArrayBuffer.isView(value)) throw new Error(`${path.join(".")}: ${value.constructor.name} is not supported`);
  if (Array.isArray(value)) return value.map((v, i) => split(v, [...path, String(i)], tensors));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, split(v, [...path, k], tensors)]));
  }
  return value;
};

/** Packs a value holding typed arrays into one safetensors-layout buffer (see the module comment). */
export const packTensors = (value: unknown): Uint8Array<ArrayBuffer> => {
  const tensors = new Map<string, TypedArray>();
  const json = JSON.stringify(split(value, [], tensors));
  // Widest elements first, so with the 8-aligned header every tensor starts aligned to its element size.
  const order = [...tensors].sort(([, a], [, b]) => b.BYTES_PER_ELEMENT - a.BYTES_PER_ELEMENT);
  const header: Record<string, unknown> = { __metadata__: { format: "pcl-bundle", json } };
  const starts: Array<number> = [];
  let offset = 0;
  for (const [name, t] of order) {
    const dtype = DTYPES.find(([, ctor]) => t instanceof ctor)![0];
    header[name] = { dtype, shape: [t.length], data_offsets: [offset, offset + t.byteLength] };
    starts.push(offset);
    offset += t.byteLength;
  }
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(headerBytes.length / 8) * 8; // safetensors pads the header with spaces
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.fill(0x20, 8, 8 + padded);
  out.set(headerBytes, 8);
  order.forEach(([, t], i) => out.set(bytesOf(t), 8 + padded + starts[i]));
  return out;
};

interface TensorInfo {
  readonly dtype: string;
  readonly shape: ReadonlyArray<number>;
  readonly data_offsets: readonly [number, number];
}

/** Inverse of `packTensors`; throws an `Error` saying what is wrong with a malformed buffer. */
export const unpackTensors = (bytes: Uint8Array): unknown => {
  if (bytes.byteLength < 8) throw new Error(`${bytes.byteLength} bytes is too short for a tensor bundle`);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + headerLength > bytes.byteLength) throw new Error(`header length ${headerLength} exceeds the file`);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, unknown>;
  const data = bytes.subarray(8 + headerLength);
  const meta = header.__metadata__ as { json?: unknown } | undefined;
  if (typeof meta?.json !== "string") throw new Error("no __metadata__.json in the header (not a pcl bundle)");
  const tensors = new Map<string, TypedArray>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, data_offsets: [begin, end] } = info as TensorInfo;
    const ctor = DTYPES.find(([d]) => d === dtype)?.[1];
    if (ctor === undefined) throw new Error(`tensor '${name}': unsupported dtype ${dtype}`);
    if (!(0 <= begin && begin <= end && end <= data.byteLength) || (end - begin) % ctor.BYTES_PER_ELEMENT !== 0) {
      throw new Error(`tensor '${name}': bad data_offsets [${begin}, ${end}] for ${data.byteLength} data bytes`);
    }
    tensors.set(name, new ctor(data.slice(begin, end).buffer));
  }
  return JSON.parse(meta.json, (_key, v) => {
    if (v === null || typeof v !== "object" || typeof v.$tensor !== "string") return v;
    const t = tensors.get(v.$tensor);
    if (t === undefined) throw new Error(`tensor '${v.$tensor}' is referenced but not in the file`);
    return t;
  });
};

const issue = (e: unknown) => new SchemaIssue.InvalidValue({ message: `tensor bundle: ${(e as Error).message}` });

/**
 * `schema`'s values <-> one safetensors-layout buffer. `schema`'s encoded form must be JSON data plus typed arrays,
 * e.g. `Schema.Struct({ k: Schema.Number, centroids: Schema.instanceOf(Float32Array<ArrayBuffer>) })`.
 */
export const BundleFromBytes = <S extends Schema.Top>(
  schema: S,
): Schema.Codec<S["Type"], Uint8Array, S["DecodingServices"], S["EncodingServices"]> =>
  Schema.Uint8Array.pipe(Schema.decodeTo(
    schema,
    SchemaTransformation.transformEffect<S["Encoded"], Uint8Array>({
      decode: (b) => Effect.try({ try: () => unpackTensors(b), catch: (e) => issue(e) }),
      encode: (v) => Effect.try({ try: () => packTensors(v), catch: (e) => issue(e) }),
    }),
  ));

/** A schema for a typed-array field of a bundle: `Schema.Struct({ features: TensorField(Float32Array<ArrayBuffer>) })`. */
export const TensorField = <T extends TypedArray>(ctor: TypedArrayClass<T>) => Schema.instanceOf(ctor);
