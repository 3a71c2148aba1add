/**
 * The typed stage graph: stages (an Effect plus an output codec), their composition into a `Pipeline` (a chain) or
 * a `Dag` (fan-in), a runner that resumes from per-stage artifacts, and the artifact store it writes to.
 */
export { type AnyStage, type Stage, stage } from "./stage.ts";
export { Dag, INPUT, type Inputs, type Node, Pipeline, Plan } from "./pipeline.ts";
export {
  artifactKey,
  canonicalJson,
  configHash,
  readArtifact,
  type RunError,
  type RunOptions,
  runPipeline,
  runStage,
  writeArtifact,
} from "./runner.ts";
export { ArtifactStore, type ArtifactStoreShape } from "./store.ts";
export { hookPoint, StageHooks } from "./hooks.ts";
export {
  BundleFromBytes,
  Float32FromBytes,
  Int32FromBytes,
  packTensors,
  TensorField,
  Uint32FromBytes,
  unpackTensors,
} from "./codecs.ts";
export { ArtifactCorrupt, GraphDefinitionError, StoreError, UnknownStage } from "./errors.ts";
