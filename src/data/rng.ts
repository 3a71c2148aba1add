/**
 * Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
 * bit-identical here and in kernels/rng.wgsl. A draw is a pure function of (key, counter), so any draw of any step can
 * be recomputed without replaying a stream: a resumed run draws exactly what an uninterrupted run would have, and the
 * CPU and a kernel can draw the same numbers independently.
 *
 * Convention used across the project: key = (seed, stream), counter = four words the caller chooses (for the
 * augmentations: epoch, step, sample, view << 16 | block). `Stream` keeps the users of one seed apart.
 *
 * The project's three generators live here, each where its use needs it: `Draws` (Philox) wherever a draw must be
 * recomputable out of order or on the GPU (sampling, augmentation, negatives, the key shuffle); `SequentialRng`
 * (mulberry32) for k-means' host-side choices, drawn in order once per E-step; `NormalRng` (xorshift128+ with
 * Box-Muller) for parameter initialisation and the queue's first keys.
 */
import rngWgsl from "../../kernels/rng.wgsl" with { type: "text" };

/** The WGSL text of `philox4x32(ctr: vec4u, key: vec2u) -> vec4u` and `u01(x: u32) -> f32`, to prepend to a kernel. */
export const RNG_WGSL: string = rngWgsl;

/** One seed feeds several independent generators; each takes its own stream number as the key's second word. */
export const Stream = {
  sampler: 1,
  augment: 2,
  negatives: 3,
  init: 4,
  synthetic: 5,
  keyShuffle: 6,
  queue: 7,
} as const;

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two u32s, from 16-bit halves (exact in doubles, as in WGSL). */
export const mulhi = (a: number, b: number): number => {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const lo = a0 * b0, m1 = a1 * b0, m2 = a0 * b1;
  const carry = ((lo >>> 16) + (m1 & 0xffff) + (m2 & 0xffff)) >>> 16;
  return (a1 * b1 + (m1 >>> 16) + (m2 >>> 16) + carry) >>> 0;
};

/** Philox4x32-10 of counter (c0..c3) under key (k0, k1), written into `out[0..3]` (no allocation). */
export const philox4x32 = (
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  k0: number,
  k1: number,
  out: Uint32Array = new Uint32Array(4),
): Uint32Array => {
  let x0 = c0 >>> 0, x1 = c1 >>> 0, x2 = c2 >>> 0, x3 = c3 >>> 0;
  let y0 = k0 >>> 0, y1 = k1 >>> 0;
  for (let r = 0; r < 10; r++) {
    const hi0 = mulhi(M0, x0), lo0 = Math.imul(M0, x0) >>> 0;
    const hi1 = mulhi(M1, x2), lo1 = Math.imul(M1, x2) >>> 0;
    x0 = (hi1 ^ x1 ^ y0) >>> 0;
    x1 = lo1;
    x2 = (hi0 ^ x3 ^ y1) >>> 0;
    x3 = lo0;
    y0 = (y0 + W0) >>> 0;
    y1 = (y1 + W1) >>> 0;
  }
  out[0] = x0, out[1] = x1, out[2] = x2, out[3] = x3;
  return out;
};

/** A u32 to a float in [0, 1) from its top 24 bits: exact in f32 as in f64, so WGSL and TypeScript agree. */
export const u01 = (x: number): number => (x >>> 8) * 5.9604644775390625e-8;

/**
 * The draws of one (key, counter prefix): draw `i` is word `i % 4` of Philox at counter (c0, c1, c2, c3base | i / 4).
 * Draws are addressed by slot, not consumed in sequence, so a branch that skips a draw never shifts the others.
 */
export class Draws {
  private readonly block = new Uint32Array(4);
  private cached = -1;

  constructor(
    readonly key: readonly [number, number],
    readonly counter: readonly [number, number, number, number],
  ) {}

  /** The u32 in slot `i`. */
  bits(i: number): number {
    const b = i >>> 2;
    if (b !== this.cached) {
      const [c0, c1, c2, c3] = this.counter;
      philox4x32(c0, c1, c2, (c3 + b) >>> 0, this.key[0], this.key[1], this.block);
      this.cached = b;
    }
    return this.block[i & 3]!;
  }

  /** U[0, 1) from slot `i`. */
  u(i: number): number {
    return u01(this.bits(i));
  }

  /** U[lo, hi) from slot `i`. */
  uniform(i: number, lo: number, hi: number): number {
    return lo + (hi - lo) * this.u(i);
  }

  /** An integer in [0, n) from slot `i` (n <= 2^24). */
  int(i: number, n: number): number {
    return Math.min(n - 1, Math.floor(this.u(i) * n));
  }
}

/**
 * The permutation of 0..n-1 for one epoch (Fisher-Yates), a pure function of (seed, epoch). Draw j takes an integer in
 * [0, j] as floor(u * (j + 1)) from a 32-bit u; its bias, at most (j + 1) / 2^32, is far below anything measurable.
 */
export const permutation = (n: number, seed: number, epoch: number, stream: number = Stream.sampler): Uint32Array => {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const block = new Uint32Array(4);
  for (let j = n - 1; j > 0; j--) {
    const d = n - 1 - j;
    if ((d & 3) === 0) philox4x32(epoch, d >>> 2, 0, 0, seed, stream, block);
    const bits = block[d & 3]!;
    const k = Math.floor((bits / 4294967296) * (j + 1));
    const t = perm[j]!;
    perm[j] = perm[k]!;
    perm[k] = t;
  }
  return perm;
};

/**
 * mulberry32 (a Weyl counter through a 32-bit mixer), with seeds above 2^32 folded in, and uniform draws from two
 * outputs (53 bits), so integer draws are unbiased to 2^-21 for any range below 2^32.
 */
export class SequentialRng {
  private state: number;

  constructor(seed: number) {
    const hi = Math.floor(seed / 2 ** 32);
    this.state = ((seed >>> 0) ^ Math.imul(hi >>> 0, 0x9e3779b9)) >>> 0;
  }

  u32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return (this.u32() * 2 ** 21 + (this.u32() >>> 11)) / 2 ** 53;
  }

  /** Uniform integer in [0, m). */
  int(m: number): number {
    return Math.floor(this.float() * m);
  }
}

/** A seeded xorshift128+ generator with Box-Muller normals: initialisation only, never in a kernel. */
export class NormalRng {
  private s0: bigint;
  private s1: bigint;
  private spare: number | undefined;

  constructor(seed: number) {
    const mix = (z: bigint) => {
      z = (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n & 0xffffffffffffffffn;
      z = (z ^ (z >> 27n)) * 0x94d049bb133111ebn & 0xffffffffffffffffn;
      return z ^ (z >> 31n);
    };
    this.s0 = mix(BigInt(seed >>> 0) + 0x9e3779b97f4a7c15n);
    this.s1 = mix(this.s0 + 0x9e3779b97f4a7c15n);
  }

  /** Uniform in (0, 1). */
  uniform(): number {
    let x = this.s0;
    const y = this.s1;
    this.s0 = y;
    x ^= (x << 23n) & 0xffffffffffffffffn;
    this.s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    const bits = Number(((this.s1 + y) & 0xffffffffffffffffn) >> 11n);
    return (bits + 0.5) / 2 ** 53;
  }

  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const t = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(t);
    return r * Math.cos(t);
  }
}
