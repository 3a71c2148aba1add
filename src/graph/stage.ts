import type { Effect, Schema } from "effect";
import { GraphDefinitionError } from "./errors.ts";

/**
 * One step of a dataflow: a named Effect from `I` to `O`, plus the codec that persists `O` (to resume from it, or to
 * feed it to a standalone run of the next stage). `run` uses property syntax so that `I` is checked contravariantly:
 * method syntax would make it bivariant and let a mismatched composition through.
 */
export interface Stage<in I, out O, out E = never, out R = never, out N extends string = string> {
  readonly name: N;
  readonly output: Schema.Codec<O, unknown>;
  readonly run: (input: I) => Effect.Effect<O, E, R>;
}

/** Any stage at all (every `Stage<I, O, E, R>` is assignable to it); what graphs store internally. */
export type AnyStage = Stage<never, unknown, unknown, unknown>;

/** Stage names become artifact file names, so they are kept to one safe path segment. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export const checkName = (what: string, name: string): void => {
  if (!SAFE_NAME.test(name)) {
    throw new GraphDefinitionError({
      message: `${what} name '${name}' must match ${SAFE_NAME.source} (it becomes an artifact file name)`,
    });
  }
};

/** `stage("square", Schema.Array(Schema.Number), (xs: ReadonlyArray<number>) => Effect.succeed(xs.map(...)))` */
export const stage = <const N extends string, I, O, E = never, R = never>(
  name: N,
  output: Schema.Codec<O, unknown>,
  run: (input: I) => Effect.Effect<O, E, R>,
): Stage<I, O, E, R, N> => {
  checkName("stage", name);
  return { name, output, run };
};
