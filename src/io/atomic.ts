import { Effect, Schema } from "effect";

/**
 * Writes `path` through `path.tmp`, flushed to disk, then renamed over `path`: a crash leaves the old file or the new
 * one, never half of one; a failure (the rename onto a directory, a full disk) removes the temporary file. Every
 * file the project writes for later (checkpoints, artifacts, exports, reports) goes through here.
 */
export const writeFileAtomic = async (path: string, data: Uint8Array | string): Promise<void> => {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = `${path}.tmp`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    try {
      for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {}); // a failed write leaves nothing behind
    throw e;
  }
};

/** A file that could not be written: `path` names it. */
export class WriteError extends Schema.TaggedError<WriteError>()("WriteError", {
  path: Schema.String,
  message: Schema.String,
}) {}

/** `writeFileAtomic` as an Effect, failing with a `WriteError` that names the file. */
export const writeFile = (path: string, data: Uint8Array | string) =>
  Effect.tryPromise({
    try: () => writeFileAtomic(path, data),
    catch: (e) => new WriteError({ path, message: `cannot write ${path}: ${e instanceof Error ? e.message : e}` }),
  });
