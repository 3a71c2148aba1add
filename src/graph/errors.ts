import { Schema } from "effect";

/** The artifact store could not read, write, list or delete `key` (I/O failure, or a value it cannot write). */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  key: Schema.String,
  message: Schema.String,
}) {}

/**
 * A stored artifact exists but cannot be read back: undecodable JSON, a malformed tensor container, or a value its
 * stage's codec rejects. Never answered by silently re-running the stage: the file may hold hours of work.
 */
export class ArtifactCorrupt extends Schema.TaggedError<ArtifactCorrupt>()("ArtifactCorrupt", {
  key: Schema.String,
  file: Schema.String,
  message: Schema.String,
}) {}

/** `from` (or a standalone run) named a stage the graph does not have. */
export class UnknownStage extends Schema.TaggedError<UnknownStage>()("UnknownStage", {
  stage: Schema.String,
  known: Schema.Array(Schema.String),
  message: Schema.String,
}) {}

/** A graph was built wrongly (duplicate or unsafe stage name, unknown dependency). Thrown while building. */
export class GraphDefinitionError extends Schema.TaggedError<GraphDefinitionError>()("GraphDefinitionError", {
  message: Schema.String,
}) {}
