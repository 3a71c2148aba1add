// Real processes: SIGINT stops training cleanly (exit 130, a checkpoint), `kill -9` loses nothing a checkpoint had,
// and either way the resumed run ends with the same bits as an uninterrupted one.
import assert from "node:assert/strict";
import { Effect, References } from "effect";
import YAML from "yaml";
import { decodeConfig } from "../../src/config.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { train } from "../../src/pcl/train.ts";
import { listManifests } from "../../src/pcl/checkpoint.ts";
import { lockRunDirectory } from "../../src/io/lock.ts";
import { tinyConfig } from "./tiny.ts";
import { withTempDir } from "../helpers.ts";

const config = { ...tinyConfig, epochs: 2, checkpoint: { everySteps: 2, keep: 50 } };
const main = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** Trains `config` in this process, logging warnings only. */
const trainHere = async (config: unknown, out: string) =>
  Effect.runPromise(
    train(await Effect.runPromise(decodeConfig(config)), { out }).pipe(
      Effect.provide(Gpu.layer),
      Effect.provideService(References.MinimumLogLevel, "Warn"),
    ),
  );

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

const metrics = async (out: string): Promise<Record<string, unknown>[]> =>
  (await Deno.readTextFile(`${out}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));

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
    const resume = (out: string) => trainHere(config, out);
    await resume(`${dir}/straight`);
    const reference = await finalBytes(`${dir}/straight`);

    const interrupted = spawn(yaml, `${dir}/sigint`);
    await checkpoints(`${dir}/sigint`, 1);
    interrupted.kill("SIGINT");
    const { code, stderr } = await interrupted.output();
    const err = new TextDecoder().decode(stderr);
    assert.equal(code, 130, err);
    assert.match(err, /stopped by SIGINT at epoch \d, step \d+\/8; checkpoint .*ckpt-/);
    const resumed = await resume(`${dir}/sigint`);
    sameBits(reference, await finalBytes(`${dir}/sigint`), "after SIGINT");
    // The interrupted epoch counts all its steps, with the same sums as the uninterrupted run, and one training time
    // (every epoch's whole wall time, both processes' shares) is what the summary and the report give.
    const [straightMetrics, sigintMetrics] = await Promise.all(
      ["straight", "sigint"].map((d) => metrics(`${dir}/${d}`)),
    );
    const timeless = (m: Record<string, unknown>) => {
      const { seconds: _s, imagesPerSecond: _i, elapsed: _e, ...rest } = m;
      return rest;
    };
    assert.deepEqual(sigintMetrics.map(timeless), straightMetrics.map(timeless));
    assert.ok(sigintMetrics.every((m) => (m.elapsed as number) >= (m.seconds as number)), "elapsed covers the M-step");
    const total = sigintMetrics.reduce((a, m) => a + (m.elapsed as number), 0);
    assert.equal(resumed.seconds, total);
    const report = await Deno.readTextFile(`${dir}/sigint/report.html`);
    assert.match(report, new RegExp(`<td>training time</td><td>${total.toFixed(1)} s</td>`));

    const killed = spawn(yaml, `${dir}/killed`);
    await checkpoints(`${dir}/killed`, 2);
    killed.kill("SIGKILL");
    await killed.output();
    const left = await listManifests(`${dir}/killed/checkpoints`);
    assert.ok(left.length >= 2 && !left[0].endsWith("ckpt-0001-000008.json"), `killed mid-run: ${left[0]}`);
    await resume(`${dir}/killed`);
    sameBits(reference, await finalBytes(`${dir}/killed`), "after kill -9");
  }));

Deno.test("process: a second training process in the same run directory is refused; the first is unaffected", () =>
  withTempDir("pcl-lock-", async (dir) => {
    const longer = { ...config, epochs: 4 }; // long enough to be still running when the second one starts
    const yaml = `${dir}/tiny.yaml`;
    await Deno.writeTextFile(yaml, YAML.stringify(longer));
    await trainHere(longer, `${dir}/alone`);

    const first = spawn(yaml, `${dir}/shared`);
    for (let i = 0; i < 600 && !(await exists(`${dir}/shared/.lock`)); i++) await new Promise((r) => setTimeout(r, 50));
    const second = await spawn(yaml, `${dir}/shared`).output();
    const err = new TextDecoder().decode(second.stderr);
    assert.equal(second.code, 1, err);
    assert.match(err, new RegExp(`^error: run directory .*shared is in use by pid ${first.pid}`, "m"));
    const done = await first.output();
    assert.equal(done.code, 0, new TextDecoder().decode(done.stderr));
    sameBits(await finalBytes(`${dir}/alone`), await finalBytes(`${dir}/shared`), "the first process");
    await Effect.runPromise(Effect.scoped(lockRunDirectory(`${dir}/shared`))); // released at the end
  }));

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
