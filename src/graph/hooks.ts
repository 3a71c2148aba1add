import { Context, Effect } from "effect";

/**
 * Named points of a run, for tests that inject a crash and tools that watch progress: the runner passes
 * `<run>/<stage>` once a stage's output is computed and before it is stored; long stages name their own points (the
 * trainer: `epoch-E/step-S` before each step). The default does nothing; a test provides its own with
 * `Effect.provideService(StageHooks, { at: ... })`.
 */
export const StageHooks = Context.Reference<{ readonly at: (point: string) => Effect.Effect<void> }>(
  "pcl/StageHooks",
  { defaultValue: () => ({ at: () => Effect.void }) },
);

/** Calls the hooks at `point`. */
export const hookPoint = (point: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    const hooks = yield* StageHooks;
    yield* hooks.at(point);
  });
