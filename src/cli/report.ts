/**
 * Writes the report of a training run: `deno run -A src/cli/report.ts DIR` → DIR/report.html, whose path it prints.
 * A failure prints one line (`error: ...`) and exits 1.
 */
import { Cause, Effect, Exit } from "effect";
import { renderReport } from "../report/mod.ts";

const USAGE = "usage: report DIR   (a directory made by `deno task train --out DIR`)";

if (import.meta.main) {
  const dir = Deno.args[0];
  if (dir === undefined || Deno.args.length > 1 || dir === "--help" || dir === "-h") {
    console.error(USAGE);
    Deno.exit(dir === "--help" || dir === "-h" ? 0 : 2);
  }
  const exit = await Effect.runPromiseExit(renderReport(dir.replace(/\/+$/, "") || "/"));
  if (Exit.isSuccess(exit)) {
    console.log(exit.value);
  } else {
    const error = Cause.squash(exit.cause) as { message?: string };
    console.error(`error: ${error.message ?? Cause.pretty(exit.cause)}`);
    Deno.exit(1);
  }
}
