import { Effect } from "effect";
import { DataError, dataError } from "./errors.ts";

/** The bytes of a file, as a DataError naming the file when it is missing or unreadable. */
export const readBytes = (path: string): Effect.Effect<Uint8Array<ArrayBuffer>, DataError> =>
  Effect.tryPromise({
    try: () => Deno.readFile(path) as Promise<Uint8Array<ArrayBuffer>>,
    catch: (e) =>
      e instanceof Deno.errors.NotFound
        ? dataError(path, "file not found")
        : e instanceof Deno.errors.IsADirectory
        ? dataError(path, "is a directory, expected a file")
        : dataError(path, `cannot read: ${e instanceof Error ? e.message : String(e)}`),
  });

/** gzip-decompressed bytes, through the platform's DecompressionStream; a corrupt or cut stream is a DataError. */
export const gunzip = (
  path: string,
  bytes: Uint8Array<ArrayBuffer>,
): Effect.Effect<Uint8Array<ArrayBuffer>, DataError> =>
  Effect.tryPromise({
    try: async () => {
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    },
    catch: (e) =>
      dataError(path, `not a valid gzip file (corrupt or truncated): ${e instanceof Error ? e.message : String(e)}`),
  });

/** A file's bytes, decompressed when its name ends in `.gz`. */
export const readMaybeGzip = (path: string): Effect.Effect<Uint8Array<ArrayBuffer>, DataError> =>
  path.endsWith(".gz") ? Effect.flatMap(readBytes(path), (b) => gunzip(path, b)) : readBytes(path);

/** The first of `candidates` that exists, or a DataError listing what was looked for. */
export const firstExisting = (dir: string, candidates: readonly string[], what: string) =>
  Effect.gen(function* () {
    for (const name of candidates) {
      const path = `${dir}/${name}`;
      const found = yield* Effect.promise(() => Deno.stat(path).then((s) => s.isFile, () => false));
      if (found) return path;
    }
    return yield* new DataError({
      path: dir,
      message: `${dir}: no ${what} file (looked for ${candidates.join(", ")})`,
    });
  });

/** Entries of a directory, sorted by name (as torchvision sorts classes and files), or a DataError. */
export const listDir = (dir: string) =>
  Effect.tryPromise({
    try: async () => {
      const entries: Deno.DirEntry[] = [];
      for await (const e of Deno.readDir(dir)) entries.push(e);
      return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    },
    catch: (e) =>
      e instanceof Deno.errors.NotFound
        ? dataError(dir, "directory not found")
        : dataError(dir, `cannot list: ${e instanceof Error ? e.message : String(e)}`),
  });
