import { Cause, Effect, Exit, References, type Scope } from "effect";
import { Gpu } from "../src/gpu/gpu.ts";

/** Runs an Effect as a Deno test; a failure throws the original error (assert diffs, typed errors, stacks). */
export const effectTest = <E>(
  name: string,
  body: Effect.Effect<void, E, Scope.Scope>,
  opts: Omit<Deno.TestDefinition, "name" | "fn"> = {},
) =>
  Deno.test({
    name,
    ...opts,
    fn: async () => {
      const exit = await Effect.runPromiseExit(Effect.scoped(body));
      if (Exit.isFailure(exit)) throw Cause.squash(exit.cause);
    },
  });

/** A fresh directory under the system temp dir, removed with everything in it when the scope closes. */
export const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.promise(() => Deno.makeTempDir({ prefix })),
    (dir) => Effect.promise(() => Deno.remove(dir, { recursive: true })),
  );

/** `tempDir` for a plain async test body. */
export const withTempDir = async <A>(prefix: string, body: (dir: string) => Promise<A>): Promise<A> => {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

/** A GPU test gets a device of its own, so failures stay independent; the adapter line is not logged. */
export const gpuTest = <E>(
  name: string,
  body: Effect.Effect<void, E, Gpu | Scope.Scope>,
  opts: Omit<Deno.TestDefinition, "name" | "fn"> = {},
) =>
  effectTest(
    name,
    body.pipe(Effect.provide(Gpu.layer), Effect.provideService(References.MinimumLogLevel, "Warn")),
    opts,
  );

/** Seeded uniform floats in [lo, hi): tests draw their data from this, never from Math.random. */
export const randoms = (n: number, seed: number, lo = -1, hi = 1): Float32Array<ArrayBuffer> => {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 4294967296);
  }
  return out;
};

/** Largest |a - b| / (atol + rtol |b|) over the arrays; <= 1 means every element is within tolerance. */
export const assertClose = (
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-5, rtol = 1e-5, what = "values" } = {},
) => {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], b = expected[i];
    if (!(Math.abs(a - b) <= atol + rtol * Math.abs(b))) {
      throw new Error(`${what}[${i}] = ${a}, expected ${b} (atol ${atol}, rtol ${rtol})`);
    }
  }
};
