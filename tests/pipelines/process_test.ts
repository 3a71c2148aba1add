// Real processes: SIGINT stops training cleanly (exit 130, a checkpoint), `kill -9` loses nothing a checkpoint had,
// and either way the resumed run ends with the same bits as an uninterrupted one.
import assert from "node:assert/strict";
import { Effect, References } from "effect";
import YAML from "yaml";
import { decodeConfig } from "../../src/config.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { train } from "../../pipelines/pcl.ts";
import { listManifests } from "../../src/stages/checkpoint.ts";
import { tinyConfig } from "./tiny.ts";
import { withTempDir } from "../helpers.ts";

const config = { ...tinyConfig, epochs: 2, checkpoint: { everySteps: 2, keep: 50 } };
const main = new URL("../../src/cli/main.ts", import.meta.url).pathname;

const spawn = (yaml: string, out: string) =>
  new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", main, "train", "--config", yaml, "--out", out],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();

/** Waits until the run has written at least `n` checkpoints. */
const checkpoints = async (out: string, n: number) => {
  for (let i = 0; i < 600; i++) {
    if ((await listManifests(`${out}/checkpoints`)).length >= n) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ${n} checkpoints in ${out} after 30 s`);
};

const finalBytes = async (out: string) => {
  const [newest] = await listManifests(`${out}/checkpoints`);
  const st = await Effect.runPromise(readSafetensors(newest.replace(/\.json$/, ".safetensors")));
  return { name: newest.split("/").at(-1), tensors: st.tensors };
};

const sameBits = (a: Awaited<ReturnType<typeof finalBytes>>, b: typeof a, what: string) => {
  assert.equal(b.name, a.name, what);
  for (const [name, t] of a.tensors) {
    const x = new Uint8Array(t.data.buffer), y = new Uint8Array(b.tensors.get(name)!.data.buffer);
    assert.ok(x.length === y.length && x.every((v, i) => v === y[i]), `${what}: ${name} differs`);
  }
};

Deno.test("process: SIGINT and kill -9 mid-epoch, then resume: bit-identical to an uninterrupted run", () =>
  withTempDir("pcl-process-", async (dir) => {
    const yaml = `${dir}/tiny.yaml`;
    await Deno.writeTextFile(yaml, YAML.stringify(config));
    const decoded = await Effect.runPromise(decodeConfig(config));
    const resume = (out: string) =>
      Effect.runPromise(
        train(decoded, { out }).pipe(
          Effect.provide(Gpu.layer),
          Effect.provideService(References.MinimumLogLevel, "Warn"),
        ),
      );
    await resume(`${dir}/straight`);
    const reference = await finalBytes(`${dir}/straight`);

    const interrupted = spawn(yaml, `${dir}/sigint`);
    await checkpoints(`${dir}/sigint`, 1);
    interrupted.kill("SIGINT");
    const { code, stderr } = await interrupted.output();
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 130, err);
    assert.match(err, /stopped by SIGINT at epoch \d, step \d+\/8; checkpoint .*ckpt-/);
    await resume(`${dir}/sigint`);
    sameBits(reference, await finalBytes(`${dir}/sigint`), "after SIGINT");

    const killed = spawn(yaml, `${dir}/killed`);
    await checkpoints(`${dir}/killed`, 2);
    killed.kill("SIGKILL");
    await killed.output();
    const left = await listManifests(`${dir}/killed/checkpoints`);
    assert.ok(left.length >= 2 && !left[0].endsWith("ckpt-0001-000008.json"), `killed mid-run: ${left[0]}`);
    await resume(`${dir}/killed`);
    sameBits(reference, await finalBytes(`${dir}/killed`), "after kill -9");
  }));
