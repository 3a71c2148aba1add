/**
 * The augmentations on the host in float64, one operation after another in the official order (crop and resize,
 * rotation, colour ops, blur, flip last, normalise): the reference the augment kernel is tested against. The kernel
 * fuses what commutes (it folds the flip into the warp); this file deliberately does not.
 */
import type { Dims, ViewParams } from "./augmentations.ts";
import { resampleBox } from "./resample.ts";

/** Luma weights (ITU-R 601-2, as PIL's convert("L")), for grayscale, saturation and the contrast mean. */
export const LUMA = [0.299, 0.587, 0.114] as const;

const clamp01 = (x: number) => Math.min(1, Math.max(0, x));

/** Crop + resize (+ rotation) to C x S x S, in [0, 1]. */
export const warpCpu = (img: Float64Array, dims: Dims, p: ViewParams, side: number): Float64Array => {
  const { channels: c, height: h, width: w } = dims;
  const { box } = p;
  if (p.outside === "box") {
    // crop (integer box), then resize the crop alone: its edge pixels clamp, nothing outside it is read
    const crop = new Float64Array(c * box.h * box.w);
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < box.h; y++) {
        for (let x = 0; x < box.w; x++) crop[(ch * box.h + y) * box.w + x] = img[(ch * h + box.y + y) * w + box.x + x]!;
      }
    }
    return resampleBox(crop, c, box.h, box.w, { x0: 0, y0: 0, x1: box.w, y1: box.h }, side, side);
  }
  if (p.outside === "image") {
    return resampleBox(img, c, h, w, { x0: box.x, y0: box.y, x1: box.x + box.w, y1: box.y + box.h }, side, side);
  }
  // rotation about the box centre: output offset d (output pixels) -> source box.centre + R(angle) diag(w/S, h/S) d,
  // triangle filter of support max(1, scale) per axis, zeros outside the image (weights normalised over all taps)
  const out = new Float64Array(c * side * side);
  const th = (p.angle * Math.PI) / 180;
  const cos = Math.cos(th), sin = Math.sin(th);
  const sx = box.w / side, sy = box.h / side;
  const supX = Math.max(1, sx), supY = Math.max(1, sy);
  const cx = box.x + box.w / 2, cy = box.y + box.h / 2;
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const dx = (x + 0.5 - side / 2) * sx, dy = (y + 0.5 - side / 2) * sy;
      // counter-clockwise on screen (y down): the output's +x direction reads the source along (cos, sin)
      const ux = cx + cos * dx - sin * dy, uy = cy + sin * dx + cos * dy;
      let total = 0;
      const acc = new Float64Array(c);
      for (let ky = Math.floor(uy - supY); ky <= Math.ceil(uy + supY); ky++) {
        const wy = Math.max(0, 1 - Math.abs((ky + 0.5 - uy) / supY));
        for (let kx = Math.floor(ux - supX); kx <= Math.ceil(ux + supX); kx++) {
          const wgt = wy * Math.max(0, 1 - Math.abs((kx + 0.5 - ux) / supX));
          total += wgt;
          if (wgt === 0 || kx < 0 || ky < 0 || kx >= w || ky >= h) continue;
          for (let ch = 0; ch < c; ch++) acc[ch]! += wgt * img[(ch * h + ky) * w + kx]!;
        }
      }
      for (let ch = 0; ch < c; ch++) out[(ch * side + y) * side + x] = total > 0 ? acc[ch]! / total : 0;
    }
  }
  return out;
};

/** torchvision's _rgb2hsv, per pixel. */
export const rgbToHsv = (r: number, g: number, b: number): [number, number, number] => {
  const maxc = Math.max(r, g, b), minc = Math.min(r, g, b);
  const eq = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eq ? 1 : maxc);
  const div = eq ? 1 : cr;
  const rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
  let hh: number;
  if (maxc === r) hh = bc - gc;
  else if (maxc === g) hh = 2 + rc - bc;
  else hh = 4 + gc - rc;
  const h = (((hh / 6 + 1) % 1) + 1) % 1;
  return [h, s, maxc];
};

/** torchvision's _hsv2rgb, per pixel. */
export const hsvToRgb = (h: number, s: number, v: number): [number, number, number] => {
  const i6 = Math.floor(h * 6);
  const f = h * 6 - i6;
  const i = ((i6 % 6) + 6) % 6;
  const p = clamp01(v * (1 - s)), q = clamp01(v * (1 - s * f)), t = clamp01(v * (1 - s * (1 - f)));
  return ([[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]] as const)[i]! as [number, number, number];
};

/** Colour ops in their order, in place on C x n values. */
export const colourCpu = (x: Float64Array, channels: number, ops: ViewParams["colour"]): void => {
  const n = x.length / channels;
  const grey = (i: number) => channels === 3 ? LUMA[0] * x[i]! + LUMA[1] * x[n + i]! + LUMA[2] * x[2 * n + i]! : x[i]!;
  for (const { op, factor } of ops) {
    if (op === "brightness") {
      for (let k = 0; k < x.length; k++) x[k] = clamp01(factor * x[k]!);
    } else if (op === "contrast") {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += grey(i);
      const mean = sum / n;
      for (let k = 0; k < x.length; k++) x[k] = clamp01(factor * x[k]! + (1 - factor) * mean);
    } else if (channels !== 3) {
      continue; // saturation, hue and grayscale mean nothing for grey images
    } else if (op === "saturation") {
      for (let i = 0; i < n; i++) {
        const g = grey(i);
        for (let ch = 0; ch < 3; ch++) x[ch * n + i] = clamp01(factor * x[ch * n + i]! + (1 - factor) * g);
      }
    } else if (op === "grayscale") {
      for (let i = 0; i < n; i++) {
        const g = grey(i);
        for (let ch = 0; ch < 3; ch++) x[ch * n + i] = g;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const [h, s, v] = rgbToHsv(x[i]!, x[n + i]!, x[2 * n + i]!);
        const [r, g, b] = hsvToRgb((((h + factor) % 1) + 1) % 1, s, v);
        x[i] = r, x[n + i] = g, x[2 * n + i] = b;
      }
    }
  }
};

/** Normalised Gaussian weights exp(-k^2 / 2 sigma^2), k = -radius..radius. */
export const gaussianTaps = (sigma: number, radius: number): Float64Array => {
  const taps = Float64Array.from(
    { length: 2 * radius + 1 },
    (_, i) => Math.exp(-((i - radius) ** 2) / (2 * sigma * sigma)),
  );
  const sum = taps.reduce((a, b) => a + b, 0);
  return taps.map((t) => t / sum);
};

/** Separable Gaussian blur of C planes of side x side, edge pixels replicated (as Pillow's blur extends edges). */
export const blurCpu = (
  x: Float64Array,
  channels: number,
  side: number,
  sigma: number,
  radius: number,
): Float64Array => {
  const taps = gaussianTaps(sigma, radius);
  const at = (i: number) => Math.min(side - 1, Math.max(0, i));
  const tmp = new Float64Array(x.length), out = new Float64Array(x.length);
  for (let ch = 0; ch < channels; ch++) {
    const base = ch * side * side;
    for (let y = 0; y < side; y++) {
      for (let xx = 0; xx < side; xx++) {
        let acc = 0;
        for (let k = -radius; k <= radius; k++) acc += taps[k + radius]! * x[base + y * side + at(xx + k)]!;
        tmp[base + y * side + xx] = acc;
      }
    }
    for (let y = 0; y < side; y++) {
      for (let xx = 0; xx < side; xx++) {
        let acc = 0;
        for (let k = -radius; k <= radius; k++) acc += taps[k + radius]! * tmp[base + at(y + k) * side + xx]!;
        out[base + y * side + xx] = acc;
      }
    }
  }
  return out;
};

/** One view of one image (C x H x W bytes) as the normalised float64 C x S x S the kernel should produce. */
export const augmentCpu = (
  image: ArrayLike<number>,
  dims: Dims,
  p: ViewParams,
  side: number,
  mean: readonly number[],
  std: readonly number[],
): Float64Array => {
  const c = dims.channels;
  const img = Float64Array.from(image, (v) => v / 255);
  let x = warpCpu(img, dims, p, side);
  colourCpu(x, c, p.colour);
  if (p.sigma > 0) x = blurCpu(x, c, side, p.sigma, p.radius);
  if (p.flip) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < side; y++) x.subarray((ch * side + y) * side, (ch * side + y + 1) * side).reverse();
    }
  }
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < side * side; i++) x[ch * side * side + i] = (x[ch * side * side + i]! - mean[ch]!) / std[ch]!;
  }
  return x;
};
