import { Effect, FileSystem, Layer, Option, Path, Stdio, Terminal } from "effect";
import { ChildProcessSpawner } from "effect/process";

/**
 * What `effect/cli` needs from the platform, built from effect's own pieces on Deno's APIs (about 0.3 s less start-up
 * than `@effect/platform-node`, and no redis/undici/ws in the dependency tree). Only what the flags use is real.
 */
const info = (s: Deno.FileInfo) =>
  ({
    type: s.isFile ? "File" : s.isDirectory ? "Directory" : "Unknown",
    mtime: Option.fromNullishOr(s.mtime),
    atime: Option.none(),
    birthtime: Option.none(),
    dev: 0n,
    ino: Option.none(),
    mode: s.mode ?? 0,
    nlink: Option.none(),
    uid: Option.none(),
    gid: Option.none(),
    rdev: Option.none(),
    size: BigInt(s.size),
    blksize: Option.none(),
    blocks: Option.none(),
  }) as FileSystem.File.Info;

export const DenoCliEnv = (args: ReadonlyArray<string> = Deno.args) =>
  Layer.mergeAll(
    FileSystem.layerNoop({
      exists: (p) => Effect.promise(() => Deno.stat(p).then(() => true, () => false)),
      stat: (p) => Effect.orDie(Effect.tryPromise(() => Deno.stat(p))).pipe(Effect.map(info)),
      readFileString: (p) => Effect.orDie(Effect.tryPromise(() => Deno.readTextFile(p))),
    }),
    Path.layer,
    Stdio.layerTest({ args: Effect.sync(() => args) }),
    Layer.succeed(
      Terminal.Terminal,
      Terminal.make({
        columns: Effect.sync(() => (Deno.stdout.isTerminal() ? Deno.consoleSize().columns : 100)),
        rows: Effect.succeed(24),
        size: Effect.die("no prompts"),
        readInput: Effect.die("no prompts"),
        readLine: Effect.die("no prompts"),
        display: (t) => Effect.sync(() => console.log(t)),
      }),
    ),
    Layer.succeed(
      ChildProcessSpawner.ChildProcessSpawner,
      ChildProcessSpawner.make(() => Effect.die("no spawning")),
    ),
  );
