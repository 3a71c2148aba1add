/**
 * One process per run directory: `DIR/.lock` is held with an exclusive OS file lock (flock) for as long as a run
 * trains, and holds the owner's pid. A second process gets a `RunLocked` error naming that pid. The OS drops the lock
 * when its process ends, however it ends (`kill -9`, a crash), so a lock is never stale: the file stays behind and the
 * next run simply takes it.
 */
import { Effect, Schema } from "effect";
import { WriteError } from "./atomic.ts";

export class RunLocked extends Schema.TaggedError<RunLocked>()("RunLocked", {
  path: Schema.String,
  pid: Schema.Number,
  message: Schema.String,
}) {}

/** The pid written in a lock file, if it can be read. */
const ownerOf = (path: string): number | undefined => {
  try {
    const pid = JSON.parse(Deno.readTextFileSync(path))?.pid;
    return typeof pid === "number" ? pid : undefined;
  } catch {
    return undefined; // being written by its owner right now
  }
};

/** Takes `dir`'s lock (creating `dir` if needed), or fails with `RunLocked`. */
const take = (dir: string) =>
  Effect.gen(function* () {
    const path = `${dir}/.lock`;
    const io = (what: string) => (e: unknown) => new WriteError({ path, message: `cannot ${what} ${path}: ${e}` });
    yield* Effect.tryPromise({ try: () => Deno.mkdir(dir, { recursive: true }), catch: io("create the directory of") });
    const file = yield* Effect.try({
      try: () => Deno.openSync(path, { read: true, write: true, create: true }),
      catch: io("open"),
    });
    const locked = yield* Effect.try({ try: () => file.tryLockSync(true), catch: io("lock") }).pipe(
      Effect.tapError(() => Effect.sync(() => file.close())),
    );
    if (!locked) {
      file.close();
      const pid = ownerOf(path);
      return yield* new RunLocked({
        path,
        pid: pid ?? -1,
        message: `run directory ${dir} is in use by ${pid === undefined ? "another process" : `pid ${pid}`}`,
      });
    }
    yield* Effect.try({
      try: () => {
        file.truncateSync(0);
        file.writeSync(new TextEncoder().encode(JSON.stringify({ pid: Deno.pid }) + "\n"));
      },
      catch: io("write"),
    }).pipe(Effect.tapError(() => Effect.sync(() => file.close())));
    return file;
  });

/** Holds `dir`'s lock for the enclosing scope; released when the scope closes (or the process ends). */
export const lockRunDirectory = (dir: string) =>
  Effect.acquireRelease(take(dir), (file) =>
    Effect.sync(() => {
      try {
        file.unlockSync();
      } finally {
        file.close();
      }
    }));
