/** Flags several commands share. */
import { Flag } from "effect/cli";

export const DEFAULT_CONFIG = new URL("../../pipelines/mnist.yaml", import.meta.url).pathname;

export const configFlag = Flag.String("config").pipe(
  Flag.withAlias("c"),
  Flag.withDescription(`YAML config (default: pipelines/mnist.yaml)`),
  Flag.withDefault(DEFAULT_CONFIG),
);

/** An integer flag with a lower bound: anything below it is a usage error naming the flag. */
export const intAtLeast = (name: string, min: number, description: string) =>
  Flag.Int(name).pipe(
    Flag.withDescription(description),
    Flag.filter((v) => v >= min, (v) => `--${name} must be an integer >= ${min}, not ${v}`),
  );

export const outFlag = (description: string) =>
  Flag.String("out").pipe(Flag.withAlias("o"), Flag.withDescription(description), Flag.optional);
