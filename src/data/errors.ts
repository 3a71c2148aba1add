import { Schema } from "effect";

/**
 * Input data that cannot be used: a missing file, a wrong magic number, a truncated file, image and label counts that
 * disagree, an empty class folder, an undecodable image. `path` names the file (or folder); `message` says what is
 * wrong with it in words a person can act on.
 */
export class DataError extends Schema.TaggedError<DataError>()("DataError", {
  path: Schema.String,
  message: Schema.String,
}) {}

export const dataError = (path: string, what: string): DataError =>
  new DataError({ path, message: `${path}: ${what}` });
