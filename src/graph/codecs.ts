/**
 * Codecs for stage outputs that hold tensors. The artifact store writes a `Uint8Array` as a raw `.bin` file and
 * anything else as JSON, so a tensor must reach it as bytes: JSON (or base64) of a million floats is slow and large.
 *
 * - `Float32FromBytes` (and the other `*FromBytes`): one typed array <-> its raw little-endian bytes.
 * - `BundleFromBytes(schema)`: a struct mixing tensors and plain data <-> one safetensors file, written and read by
 *   src/io/safetensors.ts (the one implementation of the format). Every typed array found anywhere in the struct's
 *   encoded form becomes a 1-D tensor named by its path (`features`, `clusterings.0.centroids`); the rest of the
 *   value is kept as JSON in the header's `__metadata__.json`, with `{"$tensor": name}` where a tensor was. The file
 *   loads in Python with `safetensors.numpy.load_file`. One file per artifact keeps the write a single atomic rename.
 *
 * Decoding always copies, so every typed array owns an aligned buffer of its own.
 */
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect";
import {
  formatSafetensors,
  parseSafetensors,
  type SafeData,
  type SafeTensor,
  safeTensorOf,
  SafetensorsError,
} from "../io/safetensors.ts";

/** The typed arrays a bundle stores: those safetensors has a dtype for. */
type TypedArray = SafeData;

interface TypedArrayClass<T extends TypedArray> {
  new (buffer: ArrayBuffer): T;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
}

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

/** The name of the file a bundle is parsed as, in error messages. */
const BUNDLE = "tensor bundle";

/** Replaces every typed array in `value` by `{ $tensor: name }` and collects it under that name. */
const split = (value: unknown, path: ReadonlyArray<string>, tensors: Map<string, SafeTensor>): unknown => {
  if (ArrayBuffer.isView(value)) {
    const tensor = safeTensorOf(value);
    if (tensor === undefined) throw new Error(`${path.join(".")}: ${value.constructor.name} is not supported`);
    const base = path.join(".") || "value";
    let name = base;
    for (let i = 1; tensors.has(name) || name === "__metadata__"; i++) name = `${base}#${i}`;
    tensors.set(name, tensor);
    return { $tensor: name };
  }
  if (Array.isArray(value)) return value.map((v, i) => split(v, [...path, String(i)], tensors));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, split(v, [...path, k], tensors)]));
  }
  return value;
};

/** Packs a value holding typed arrays into one safetensors file's bytes (see the module comment). */
export const packTensors = (value: unknown): Uint8Array<ArrayBuffer> => {
  const tensors = new Map<string, SafeTensor>();
  const json = JSON.stringify(split(value, [], tensors));
  return formatSafetensors(tensors, { format: "pcl-bundle", json });
};

/** Inverse of `packTensors`; throws a `SafetensorsError` or an `Error` saying what is wrong with a malformed buffer. */
export const unpackTensors = (bytes: Uint8Array): unknown => {
  const { tensors, metadata } = parseSafetensors(bytes, BUNDLE);
  if (typeof metadata.json !== "string") throw new Error("no __metadata__.json in the header (not a pcl bundle)");
  return JSON.parse(metadata.json, (_key, v) => {
    if (v === null || typeof v !== "object" || typeof v.$tensor !== "string") return v;
    const t = tensors.get(v.$tensor);
    if (t === undefined) throw new Error(`tensor '${v.$tensor}' is referenced but not in the file`);
    return t.data;
  });
};

const issue = (e: unknown) =>
  new SchemaIssue.InvalidValue({
    message: e instanceof SafetensorsError ? e.message : `${BUNDLE}: ${(e as Error).message}`,
  });

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
