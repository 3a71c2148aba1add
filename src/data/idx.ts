/**
 * IDX files (LeCun's MNIST format, also Fashion-MNIST's), plain or gzip-compressed: a big-endian header
 * `0x00 0x00 <type> <ndims>` then `ndims` u32 sizes, then the data. Only unsigned bytes (type 0x08) occur in these
 * datasets, and only those are read.
 */
import { Effect } from "effect";
import type { HostDataset } from "./dataset.ts";
import { type DataError, dataError } from "./errors.ts";
import { firstExisting, readMaybeGzip } from "./files.ts";

const U8 = 0x08;

export interface IdxArray {
  readonly dims: readonly number[];
  readonly data: Uint8Array<ArrayBuffer>;
}

const hex = (x: number) => `0x${(x >>> 0).toString(16).padStart(8, "0")}`;

/** Parses an IDX file of unsigned bytes with `ndims` dimensions (3 for images, 1 for labels). */
export const parseIdx = (
  path: string,
  bytes: Uint8Array<ArrayBuffer>,
  ndims: 1 | 3,
): Effect.Effect<IdxArray, DataError> =>
  Effect.gen(function* () {
    const kind = ndims === 3 ? "images" : "labels";
    const expected = (U8 << 8) | ndims;
    if (bytes.length < 4) {
      return yield* dataError(path, `truncated: ${bytes.length} bytes, too short for an IDX header`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const magic = view.getUint32(0);
    if (magic !== expected) {
      const other = magic === ((U8 << 8) | (ndims === 3 ? 1 : 3))
        ? ` (this looks like an IDX ${ndims === 3 ? "labels" : "images"} file)`
        : "";
      return yield* dataError(
        path,
        `wrong magic number ${hex(magic)}, expected ${hex(expected)} for IDX ${kind} (unsigned bytes, ${ndims} ` +
          `dimension${ndims === 1 ? "" : "s"})${other}`,
      );
    }
    const header = 4 + 4 * ndims;
    if (bytes.length < header) {
      return yield* dataError(path, `truncated: ${bytes.length} bytes, the IDX header alone needs ${header}`);
    }
    const dims = Array.from({ length: ndims }, (_, i) => view.getUint32(4 + 4 * i));
    const size = dims.reduce((a, b) => a * b, 1);
    const have = bytes.length - header;
    if (have < size) {
      return yield* dataError(
        path,
        `truncated: the header says ${dims.join(" x ")} = ${size} bytes of ${kind}, the file has ${have} after it`,
      );
    }
    if (have > size) {
      return yield* dataError(
        path,
        `${have - size} unexpected bytes after the ${dims.join(" x ")} ${kind} the header announces`,
      );
    }
    return { dims, data: bytes.subarray(header) };
  });

export interface IdxPairOptions {
  readonly name: string;
  readonly classNames?: readonly string[];
  /** The class count when no names are given; without either, the labels must be 0..C-1 with every class present. */
  readonly classes?: number;
}

/** An images file and a labels file as one dataset (grey, C = 1). */
export const readIdxPair = (
  imagesPath: string,
  labelsPath: string,
  options: IdxPairOptions,
): Effect.Effect<HostDataset, DataError> =>
  Effect.gen(function* () {
    const images = yield* parseIdx(imagesPath, yield* readMaybeGzip(imagesPath), 3);
    const labels = yield* parseIdx(labelsPath, yield* readMaybeGzip(labelsPath), 1);
    const [n, height, width] = images.dims as [number, number, number];
    if (labels.dims[0] !== n) {
      return yield* dataError(
        labelsPath,
        `${labels.dims[0]} labels, but ${imagesPath} holds ${n} images: the two files do not belong together`,
      );
    }
    const declared = options.classNames?.length ?? options.classes;
    let max = -1;
    for (const l of labels.data) max = Math.max(max, l);
    if (declared !== undefined && max >= declared) {
      const at = labels.data.findIndex((l) => l >= declared);
      return yield* dataError(
        labelsPath,
        `label ${labels.data[at]} at index ${at} is outside 0..${declared - 1} (${declared} classes)`,
      );
    }
    const classes = declared ?? max + 1;
    if (declared === undefined) {
      const seen = new Uint8Array(classes);
      for (const l of labels.data) seen[l] = 1;
      const empty = seen.reduce((a, v) => a + (v === 0 ? 1 : 0), 0);
      if (empty > 0) {
        return yield* dataError(
          labelsPath,
          `labels run to ${max} but ${empty} of the values 0..${max} never occur: the labels are not class ` +
            `indices 0..C-1 (set the source's \`classes\` if some classes are really absent)`,
        );
      }
    }
    return {
      info: {
        name: options.name,
        n,
        channels: 1,
        height,
        width,
        classes,
        classNames: options.classNames ?? Array.from({ length: classes }, (_, i) => String(i)),
        source: imagesPath,
      },
      images: images.data,
      labels: Int32Array.from(labels.data),
    };
  });

export type Split = "train" | "test";

/** The four MNIST-layout files of a directory: `train-images-idx3-ubyte[.gz]` (or `train-images.idx3-ubyte`), ... */
export const readIdxDir = (dir: string, split: Split, options: IdxPairOptions): Effect.Effect<HostDataset, DataError> =>
  Effect.gen(function* () {
    const prefix = split === "train" ? "train" : "t10k";
    const names = (what: "images" | "labels", d: 1 | 3) =>
      [`${prefix}-${what}-idx${d}-ubyte`, `${prefix}-${what}.idx${d}-ubyte`].flatMap((n) => [n, `${n}.gz`]);
    const images = yield* firstExisting(dir, names("images", 3), `${split} images`);
    const labels = yield* firstExisting(dir, names("labels", 1), `${split} labels`);
    return yield* readIdxPair(images, labels, options);
  });
