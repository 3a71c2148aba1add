/** Flags several commands share. */
import { Option } from "effect";
import { Flag } from "effect/cli";
import { loadConfig } from "../config.ts";

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

/** The stop request a signal makes: the current step finishes, a checkpoint is written, training stops. */
export const stopRequest: { signal: string | undefined } = { signal: undefined };

export const epochsFlag = Flag.Int("epochs").pipe(
  Flag.withDescription("override the config's epochs (a finished run with a step schedule is extended)"),
  Flag.optional,
);

/** The config file with `--epochs` merged in before decoding: an override meets the YAML's rules and paths. */
export const configWithEpochs = (o: { readonly config: string; readonly epochs: Option.Option<number> }) =>
  loadConfig(o.config, Option.isSome(o.epochs) ? { epochs: o.epochs.value } : {});

/** A comma-separated list of distinct integers >= `min` (`--k 10,20,40`, `--seeds 0,1,2`); none when it is not one. */
export const intList = (min: number) => (text: string) => {
  const xs = text.split(",").map((s) => Number(s.trim()));
  return xs.every((x) => Number.isSafeInteger(x) && x >= min) && new Set(xs).size === xs.length
    ? Option.some(xs)
    : Option.none();
};
