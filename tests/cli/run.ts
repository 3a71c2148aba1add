import { main } from "../../src/cli/main.ts";

/** Runs the CLI in-process, returning its exit code and everything it printed. */
export const cli = async (...args: string[]) => {
  const out: string[] = [];
  const { error, log } = console;
  console.error = (...a: unknown[]) => out.push(a.join(" "));
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  try {
    return { code: await main(args), out: out.join("\n") };
  } finally {
    console.error = error;
    console.log = log;
  }
};

/** Every file under `dir` with its bytes' SHA-256: equal snapshots mean nothing was written, moved or deleted. */
export const snapshot = async (dir: string): Promise<Record<string, string>> => {
  const out: Record<string, string> = {};
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else {
        const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(p));
        out[p.slice(dir.length + 1)] = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"))
          .join("");
      }
    }
  };
  await walk(dir);
  return out;
};
