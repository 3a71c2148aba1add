/**
 * A seeded, labelled synthetic source for fast tests: class k is one of ten procedurally drawn shapes (disc, ring,
 * square, frame, bars, cross, X, triangle, two dots), at a random position, size and intensity (a random colour when
 * C = 3), anti-aliased over one pixel, on a faintly noisy background. Image i depends only on (seed, i).
 */
import type { HostDataset } from "./dataset.ts";
import { Draws, Stream } from "./rng.ts";

export const SHAPES = [
  "disc",
  "ring",
  "square",
  "frame",
  "hbar",
  "vbar",
  "cross",
  "x",
  "triangle",
  "dots",
] as const;

export interface SyntheticOptions {
  readonly n: number;
  readonly side: number;
  readonly channels?: 1 | 3;
  /** At most 10 (one shape each). */
  readonly classes?: number;
  readonly seed?: number;
}

/** Signed distance (in shape units; negative inside) of (u, v) in [-1, 1]^2 to shape `k`. */
const distance = (k: number, u: number, v: number): number => {
  const au = Math.abs(u), av = Math.abs(v);
  const box = (hu: number, hv: number) => Math.max(au - hu, av - hv);
  switch (k) {
    case 0:
      return Math.hypot(u, v) - 0.9;
    case 1:
      return Math.abs(Math.hypot(u, v) - 0.7) - 0.2;
    case 2:
      return box(0.8, 0.8);
    case 3:
      return Math.max(box(0.85, 0.85), -box(0.5, 0.5));
    case 4:
      return box(0.95, 0.25);
    case 5:
      return box(0.25, 0.95);
    case 6:
      return Math.min(box(0.95, 0.2), box(0.2, 0.95));
    case 7:
      return Math.min(Math.abs(u - v), Math.abs(u + v)) / Math.SQRT2 - 0.18 + Math.max(0, Math.max(au, av) - 0.9);
    case 8:
      return Math.max(v - 0.8, (Math.abs(u) * 2 - (v + 0.8)) / Math.sqrt(5)); // apex at the top, base at v = 0.8
    default:
      return Math.min(Math.hypot(u + 0.5, v), Math.hypot(u - 0.5, v)) - 0.35;
  }
};

export const readSynthetic = (options: SyntheticOptions): HostDataset => {
  const { n, side } = options;
  const channels = options.channels ?? 1;
  const classes = Math.min(SHAPES.length, Math.max(1, options.classes ?? 10));
  const seed = options.seed ?? 0;
  const bytes = channels * side * side;
  const images = new Uint8Array(n * bytes);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const d = new Draws([seed, Stream.synthetic], [i, 0, 0, 0]);
    const label = d.int(0, classes);
    labels[i] = label;
    const radius = side * d.uniform(1, 0.25, 0.42); // half the shape's extent, in pixels
    const cx = side / 2 + d.uniform(2, -1, 1) * (side / 2 - radius);
    const cy = side / 2 + d.uniform(3, -1, 1) * (side / 2 - radius);
    const level = d.uniform(4, 0.6, 1);
    const colour = channels === 3 ? [d.uniform(5, 0.3, 1), d.uniform(6, 0.3, 1), d.uniform(7, 0.3, 1)] : [1];
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const u = (x + 0.5 - cx) / radius, v = (y + 0.5 - cy) / radius;
        const coverage = Math.min(1, Math.max(0, 0.5 - distance(label, u, v) * radius));
        const p = y * side + x;
        const noise = 0.08 * d.u(16 + p); // background texture, so that no image is exactly flat
        for (let c = 0; c < channels; c++) {
          const value = noise + (1 - noise) * coverage * level * colour[c]!;
          images[i * bytes + c * side * side + p] = Math.round(255 * value);
        }
      }
    }
  }
  return {
    info: {
      name: `synthetic-${classes}x${channels}x${side}`,
      n,
      channels,
      height: side,
      width: side,
      classes,
      classNames: SHAPES.slice(0, classes),
      source: `synthetic:seed=${seed}`,
    },
    images,
    labels,
  };
};
