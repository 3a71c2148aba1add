/**
 * Bilinear resampling as Pillow does it (what torchvision's resize of a PIL image calls): a triangle filter whose
 * support widens with the downscale factor (so shrinking averages instead of aliasing), taps clipped to the source and
 * renormalised. For upscaling it is ordinary half-pixel-centred bilinear with edge clamping. Used on the host for the
 * image-folder source and as the reference the augment kernel is tested against (which computes the same filter).
 */

/** Taps of one output sample along one axis: `first` source index and the normalised weights from there on. */
export interface Taps {
  readonly first: number;
  readonly weights: Float64Array;
}

const triangle = (x: number) => Math.max(0, 1 - Math.abs(x));

/**
 * Taps for output sample `i` of `outSize` over the source span [lo, hi) (in pixels, fractional allowed) of an axis
 * whose valid pixels are [clipLo, clipHi).
 */
export const axisTaps = (
  i: number,
  outSize: number,
  lo: number,
  hi: number,
  clipLo: number,
  clipHi: number,
): Taps => {
  const scale = (hi - lo) / outSize;
  const support = Math.max(1, scale);
  const centre = lo + (i + 0.5) * scale;
  const first = Math.max(clipLo, Math.floor(centre - support));
  const last = Math.min(clipHi - 1, Math.ceil(centre + support));
  const weights = new Float64Array(Math.max(0, last - first + 1));
  let sum = 0;
  for (let k = first; k <= last; k++) {
    const w = triangle((k + 0.5 - centre) / support);
    weights[k - first] = w;
    sum += w;
  }
  if (sum > 0) { for (let k = 0; k < weights.length; k++) weights[k]! /= sum; }
  return { first, weights };
};

/**
 * Resamples the box [x0, x1) x [y0, y1) of a C x H x W image (values as given, any numeric array) to C x outH x outW,
 * in float64.
 */
export const resampleBox = (
  src: ArrayLike<number>,
  c: number,
  h: number,
  w: number,
  box: { readonly x0: number; readonly y0: number; readonly x1: number; readonly y1: number },
  outH: number,
  outW: number,
): Float64Array => {
  const out = new Float64Array(c * outH * outW);
  const xs = Array.from({ length: outW }, (_, x) => axisTaps(x, outW, box.x0, box.x1, 0, w));
  const ys = Array.from({ length: outH }, (_, y) => axisTaps(y, outH, box.y0, box.y1, 0, h));
  for (let ch = 0; ch < c; ch++) {
    for (let y = 0; y < outH; y++) {
      const ty = ys[y]!;
      for (let x = 0; x < outW; x++) {
        const tx = xs[x]!;
        let acc = 0;
        for (let a = 0; a < ty.weights.length; a++) {
          const row = (ch * h + ty.first + a) * w;
          let line = 0;
          for (let b = 0; b < tx.weights.length; b++) line += tx.weights[b]! * src[row + tx.first + b]!;
          acc += ty.weights[a]! * line;
        }
        out[(ch * outH + y) * outW + x] = acc;
      }
    }
  }
  return out;
};

/** The centre square of side min(h, w), as a box (what "resize the shorter side, then centre crop" samples). */
export const centreSquare = (h: number, w: number) => {
  const s = Math.min(h, w);
  const x0 = (w - s) / 2, y0 = (h - s) / 2;
  return { x0, y0, x1: x0 + s, y1: y0 + s };
};
