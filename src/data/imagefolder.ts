/**
 * A folder of images, one sub-folder per class (torchvision's ImageFolder: classes are the sub-folder names, sorted;
 * files sorted within a class). PNG and JPEG are decoded on the host and brought to `side x side`: the shorter side is
 * resized to `side` and the centre square kept, with Pillow-style bilinear resampling (antialiased when shrinking).
 * Grey images are replicated to RGB when `channels` is 3; RGB is reduced to luma (ITU-R 601: 0.299, 0.587, 0.114)
 * when `channels` is 1; alpha is dropped.
 */
import { Effect } from "effect";
import { convertIndexedToRgb, decode as decodePng } from "fast-png";
import jpeg from "jpeg-js";
import type { HostDataset } from "./dataset.ts";
import { DataError, dataError } from "./errors.ts";
import { listDir, readBytes } from "./files.ts";
import { centreSquare, resampleBox } from "./resample.ts";

export interface ImageFolderOptions {
  readonly dir: string;
  /** Output side: every image becomes side x side. */
  readonly side: number;
  readonly channels?: 1 | 3;
  /** Skip undecodable files (their count is logged as a warning) instead of failing on the first one. */
  readonly skipUndecodable?: boolean;
  /** Stop after this many images (in class then file order). */
  readonly limit?: number;
  readonly name?: string;
}

const IMAGE_EXT = /\.(png|jpe?g)$/i;

/** A decoded image: interleaved 8-bit samples, `channels` per pixel (1 grey, 3 RGB). */
interface Pixels {
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 3;
  readonly data: Uint8Array;
}

const unpackBits = (data: Uint8Array, width: number, height: number, depth: number): Uint8Array => {
  const out = new Uint8Array(width * height);
  const perLine = Math.ceil((depth * width) / 8);
  const max = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const byte = data[y * perLine + (bit >> 3)]!;
      const v = (byte >> (8 - depth - (bit & 7))) & max;
      out[y * width + x] = Math.round((v * 255) / max);
    }
  }
  return out;
};

/** PNG (any bit depth, palette, grey/RGB with or without alpha) to 8-bit grey or RGB. */
const fromPng = (bytes: Uint8Array): Pixels => {
  const png = decodePng(bytes);
  const { width, height } = png;
  if (png.palette !== undefined) {
    const rgb = convertIndexedToRgb(png);
    const per = rgb.length / (width * height);
    return { width, height, channels: 3, data: dropAlpha(rgb, width * height, per, 3) };
  }
  let samples: Uint8Array;
  if (png.depth === 16) samples = Uint8Array.from(png.data as Uint16Array, (v) => v >> 8);
  else if (png.depth === 8) samples = png.data as Uint8Array;
  else samples = unpackBits(png.data as Uint8Array, width, height, png.depth); // grey only has depth < 8
  const grey = png.channels <= 2;
  return {
    width,
    height,
    channels: grey ? 1 : 3,
    data: dropAlpha(samples, width * height, png.channels, grey ? 1 : 3),
  };
};

const dropAlpha = (data: Uint8Array, pixels: number, from: number, to: 1 | 3): Uint8Array => {
  if (from === to) return data;
  const out = new Uint8Array(pixels * to);
  for (let p = 0; p < pixels; p++) for (let c = 0; c < to; c++) out[p * to + c] = data[p * from + c]!;
  return out;
};

const fromJpeg = (bytes: Uint8Array): Pixels => {
  const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 });
  const channels = img.data.length / (img.width * img.height);
  return {
    width: img.width,
    height: img.height,
    channels: 3,
    data: dropAlpha(img.data, img.width * img.height, channels, 3),
  };
};

/** Decodes by content (PNG signature, JPEG SOI marker), not by file name. */
export const decodeImage = (path: string, bytes: Uint8Array): Effect.Effect<Pixels, DataError> =>
  Effect.try({
    try: () => {
      const png = bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
      const jpg = bytes[0] === 0xff && bytes[1] === 0xd8;
      if (!png && !jpg) throw new Error("neither a PNG nor a JPEG signature");
      const px = png ? fromPng(bytes) : fromJpeg(bytes);
      if (px.width < 1 || px.height < 1) throw new Error(`empty image (${px.width} x ${px.height})`);
      return px;
    },
    catch: (e) => dataError(path, `cannot decode image: ${e instanceof Error ? e.message : String(e)}`),
  });

/** Interleaved pixels to `channels` planes (CHW) of side x side: shorter side resized, centre square kept. */
export const toSquare = (px: Pixels, side: number, channels: 1 | 3): Uint8Array => {
  const { width: w, height: h } = px;
  const planar = new Float64Array(channels * h * w);
  for (let p = 0; p < h * w; p++) {
    if (channels === px.channels) {
      for (let c = 0; c < channels; c++) planar[c * h * w + p] = px.data[p * channels + c]!;
    } else if (channels === 3) {
      for (let c = 0; c < 3; c++) planar[c * h * w + p] = px.data[p]!;
    } else {
      planar[p] = 0.299 * px.data[p * 3]! + 0.587 * px.data[p * 3 + 1]! + 0.114 * px.data[p * 3 + 2]!;
    }
  }
  const out = resampleBox(planar, channels, h, w, centreSquare(h, w), side, side);
  return Uint8Array.from(out, (v) => Math.min(255, Math.max(0, Math.round(v))));
};

/** Reads the folder; every class folder must hold at least one image. */
export const readImageFolder = (options: ImageFolderOptions): Effect.Effect<HostDataset, DataError> =>
  Effect.gen(function* () {
    const { dir, side } = options;
    const channels = options.channels ?? 3;
    if (!Number.isInteger(side) || side < 1) {
      return yield* dataError(dir, `side must be a positive integer, got ${side}`);
    }
    const classes = (yield* listDir(dir)).filter((e) => e.isDirectory).map((e) => e.name);
    if (classes.length === 0) return yield* dataError(dir, "no class sub-folders (expected one folder per class)");
    const files: { path: string; label: number }[] = [];
    for (const [label, name] of classes.entries()) {
      const inClass = (yield* listDir(`${dir}/${name}`)).filter((e) => e.isFile && IMAGE_EXT.test(e.name));
      if (inClass.length === 0) {
        return yield* new DataError({
          path: `${dir}/${name}`,
          message: `${dir}/${name}: empty class folder (no .png, .jpg or .jpeg files)`,
        });
      }
      for (const f of inClass) files.push({ path: `${dir}/${name}/${f.name}`, label });
    }
    const wanted = options.limit === undefined ? files.length : Math.min(files.length, options.limit);
    const bytes = channels * side * side;
    const images = new Uint8Array(wanted * bytes);
    const labels = new Int32Array(wanted);
    let n = 0;
    const skipped: string[] = [];
    for (const f of files) {
      if (n === wanted) break;
      const decoded = yield* Effect.result(decodeImage(f.path, yield* readBytes(f.path)));
      if (decoded._tag === "Failure") {
        if (options.skipUndecodable !== true) {
          return yield* dataError(
            f.path,
            `${decoded.failure.message.replace(`${f.path}: `, "")} ` +
              `(to skip files that do not decode, set skipUndecodable: true on the imagefolder source)`,
          );
        }
        skipped.push(f.path);
        continue;
      }
      images.set(toSquare(decoded.success, side, channels), n * bytes);
      labels[n++] = f.label;
    }
    if (skipped.length > 0) {
      yield* Effect.logWarning(
        `${dir}: skipped ${skipped.length} undecodable image(s), e.g. ${skipped.slice(0, 3).join(", ")}`,
      );
    }
    if (n === 0) return yield* dataError(dir, "no decodable images");
    return {
      info: {
        name: options.name ?? (dir.split("/").filter((s) => s !== "").at(-1) ?? "images"),
        n,
        channels,
        height: side,
        width: side,
        classes: classes.length,
        classNames: classes,
        source: dir,
      },
      images: images.slice(0, n * bytes),
      labels: labels.slice(0, n),
    };
  });
