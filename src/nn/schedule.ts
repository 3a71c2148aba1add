/**
 * Learning-rate schedules, per epoch, exactly as PCL's `adjust_learning_rate` (docs/algorithm.md §6): the rate is set
 * once at the start of each epoch and held for all its steps; there is no warm-up.
 */

/** `step`: ×0.1 at each milestone reached (default epochs 120 and 160); `cosine`: half a cosine from lr to 0. */
export type LrSchedule =
  | { readonly kind: "step"; readonly milestones?: readonly number[] }
  | { readonly kind: "cosine" };

export const DEFAULT_MILESTONES: readonly number[] = [120, 160];

/**
 * `baseLr` times 0.1 for each milestone with `epoch >= milestone`. Multiplied one factor at a time, as PCL does, so
 * the values are PyTorch's to the bit (0.03 → 0.003 → 0.00030000000000000003).
 */
export const stepLr = (baseLr: number, epoch: number, milestones: readonly number[] = DEFAULT_MILESTONES): number => {
  let lr = baseLr;
  for (const milestone of milestones) lr *= epoch >= milestone ? 0.1 : 1;
  return lr;
};

/** `baseLr · 0.5 · (1 + cos(π · epoch / epochs))`: baseLr at epoch 0, half at epochs / 2, never quite 0. */
export const cosineLr = (baseLr: number, epoch: number, epochs: number): number => {
  if (!(epochs > 0)) throw new RangeError(`cosine schedule: epochs must be positive, got ${epochs}`);
  return baseLr * 0.5 * (1 + Math.cos((Math.PI * epoch) / epochs));
};

/** The learning rate of `epoch` (0-based) in a run of `epochs` epochs. */
export const learningRate = (schedule: LrSchedule, baseLr: number, epoch: number, epochs: number): number =>
  schedule.kind === "cosine" ? cosineLr(baseLr, epoch, epochs) : stepLr(baseLr, epoch, schedule.milestones);
