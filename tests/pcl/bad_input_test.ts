// Bad input through the command line, as a user makes it: each gets one clear error and a non-zero exit, and what is
// already on disk stays as it was.
import assert from "node:assert/strict";
import { Effect } from "effect";
import YAML from "yaml";
import { writeNpy } from "../../src/io/npy.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { listManifests, loadCheckpoint } from "../../src/pcl/checkpoint.ts";
import { withTempDir } from "../helpers.ts";
import { cli, snapshot } from "../cli/run.ts";
import { tinyConfig } from "./tiny.ts";

const yaml = async (dir: string, name: string, config: unknown) => {
  const path = `${dir}/${name}.yaml`;
  await Deno.writeTextFile(path, config === undefined ? "# nothing here\n" : YAML.stringify(config));
  return path;
};

Deno.test("bad input: config errors and overrides leave a finished run untouched", () =>
  withTempDir("pcl-bad-", async (dir) => {
    const good = await yaml(dir, "tiny", tinyConfig);
    const out = `${dir}/run`;
    const first = await cli("train", "--config", good, "--out", out);
    assert.equal(first.code, 0, first.out);
    const before = await snapshot(out);

    const cases: Array<[string, string[], RegExp]> = [
      [
        "--epochs 0",
        ["--config", good, "--epochs", "0"],
        /invalid config\nExpected a value greater than 0\n.*"epochs"/,
      ],
      ["--epochs -1", ["--config", good, "--epochs", "-1"], /Expected a value greater than 0\n.*"epochs"/],
      ["--epochs 1 with warmupEpochs 1", ["--config", good, "--epochs", "1"], /warmupEpochs \(1\) leaves no PCL epoch/],
      [
        "an empty config",
        ["--config", await yaml(dir, "empty", undefined)],
        /empty config: start from pipelines\/mnist/,
      ],
      [
        "limit: 100.5",
        ["--config", await yaml(dir, "limit", { ...tinyConfig, train: { ...tinyConfig.train, limit: 100.5 } })],
        /Expected an integer.*\n.*"train"\]\["limit"\]|"limit"/,
      ],
      [
        "model.width on a ResNet",
        [
          "--config",
          await yaml(dir, "width", {
            ...tinyConfig,
            model: { ...tinyConfig.model, arch: "resnet18-cifar", width: 0.5 },
          }),
        ],
        /model\.width applies to convnet and convnet5, not resnet18-cifar/,
      ],
      [
        "--epochs 3 on a finished cosine run",
        ["--config", good, "--epochs", "3"],
        /differs .* in: epochs\. A cosine schedule's rates all depend on the epoch count/,
      ],
    ];
    for (const [what, args, message] of cases) {
      const r = await cli("train", ...args, "--out", out);
      assert.equal(r.code, 1, `${what}: exit code\n${r.out}`);
      assert.match(r.out, /^error: /m, what);
      assert.match(r.out, message, what);
      assert.deepEqual(await snapshot(out), before, `${what}: the run directory changed`);
    }

    // A hand-edited position is refused like a corrupt tensors file, by training and by `stage checkpoint`.
    const [newest] = await listManifests(`${out}/checkpoints`);
    const manifest = JSON.parse(await Deno.readTextFile(newest));
    await Deno.writeTextFile(newest, JSON.stringify({ ...manifest, step: 5 }, null, 2) + "\n");
    const edited = await snapshot(out);
    for (const args of [["train", "--config", good, "--out", out], ["stage", "checkpoint", newest]]) {
      const r = await cli(...args);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /the manifest was edited or is corrupt/);
      assert.deepEqual(await snapshot(out), edited, `${args[0]}: the run directory changed`);
    }
  }));

Deno.test("bad input: impossible sizes are refused before the first step, with nothing written", () =>
  withTempDir("pcl-sizes-", async (dir) => {
    const cases: Array<[string, unknown, RegExp]> = [
      [
        "batchSize above the image count",
        { ...tinyConfig, batchSize: 256, moco: { queueSize: 256, bnGroups: 2 } },
        /batchSize \(256\) is more than the 128 training images: an epoch would have no step/,
      ],
      [
        "K above the image count",
        { ...tinyConfig, pcl: { ...tinyConfig.pcl, clusters: [3, 200] } },
        /pcl\.clusters: K = 200 is more than the 128 training images/,
      ],
    ];
    for (const [i, [what, config, message]] of cases.entries()) {
      const out = `${dir}/run${i}`;
      const r = await cli("train", "--config", await yaml(dir, `c${i}`, config), "--out", out);
      assert.equal(r.code, 1, `${what}\n${r.out}`);
      assert.match(r.out, message, what);
      const { ".lock": _, ...written } = await snapshot(out);
      assert.deepEqual(written, {}, `${what}: files were written`);
    }
  }));

Deno.test("bad input: a diverging run stops with exit 1 and the newest checkpoint still holds finite weights", () =>
  withTempDir("pcl-diverge-", async (dir) => {
    const config = { ...tinyConfig, optimizer: { lr: 1e6 }, checkpoint: { everySteps: 1, keep: 2 } };
    const out = `${dir}/run`;
    const r = await cli("train", "--config", await yaml(dir, "diverge", config), "--out", out);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /^error: .* non-finite at epoch 1, step \d+; lower optimizer\.lr \(1000000\)/m);
    const manifests = await listManifests(`${out}/checkpoints`);
    assert.ok(manifests.length >= 1, "no checkpoint was written before the divergence: the test proves nothing");
    assert.match(r.out, new RegExp(`the last good one is ${manifests[0]!.replace(/[.]/g, "\\.")}`));
    const newest = await Effect.runPromise(loadCheckpoint(manifests[0]!));
    for (const [name, t] of newest.tensors) {
      if (t.dtype === "F32") assert.ok(t.data.every(Number.isFinite), `${name} is not finite`);
    }
  }));

Deno.test("bad input: --epochs extends a finished step-schedule run to the bits of a longer run", () =>
  withTempDir("pcl-extend-", async (dir) => {
    const stepped = { ...tinyConfig, optimizer: { lr: 0.05, schedule: "step", milestones: [2] } };
    const config = await yaml(dir, "step", stepped);
    const extended = `${dir}/extended`, straight = `${dir}/straight`;
    assert.equal((await cli("train", "--config", config, "--out", extended)).code, 0);
    const r = await cli("train", "--config", config, "--epochs", "3", "--out", extended);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /Trained tiny: 3 epochs/);
    assert.equal((await cli("train", "--config", config, "--epochs", "3", "--out", straight)).code, 0);
    const [a, b] = await Promise.all([extended, straight].map(async (d) => {
      const [newest] = await listManifests(`${d}/checkpoints`);
      return {
        name: newest!.split("/").at(-1),
        st: await Effect.runPromise(readSafetensors(newest!.replace(/json$/, "safetensors"))),
      };
    }));
    assert.equal(a!.name, "ckpt-0002-000008.json");
    assert.equal(b!.name, a!.name);
    for (const [name, t] of a!.st.tensors) {
      assert.deepEqual(new Uint8Array(t.data.buffer), new Uint8Array(b!.st.tensors.get(name)!.data.buffer), name);
    }
  }));

Deno.test("bad input: stage commands check every number and leave no temporary file behind", () =>
  withTempDir("pcl-stage-bad-", async (dir) => {
    const features = `${dir}/f.npy`;
    await Effect.runPromise(
      writeNpy(features, { shape: [40, 4], data: Float32Array.from({ length: 160 }, (_, i) => Math.sin(i)) }),
    );
    const cluster = (...args: string[]) => cli("stage", "cluster", "--features", features, "--k", "3", ...args);
    for (
      const [args, message] of [
        [["--iters", "0", "--out", `${dir}/p.safetensors`], /--iters must be an integer >= 1, not 0/],
        [["--nredo", "0", "--out", `${dir}/p.safetensors`], /--nredo must be an integer >= 1, not 0/],
        [["--temperature", "-1", "--out", `${dir}/p.safetensors`], /--temperature must be a positive number, not -1/],
      ] as const
    ) {
      const r = await cluster(...args);
      assert.equal(r.code, 2, `${args}\n${r.out}`);
      assert.match(r.out, message);
    }
    // Features with a NaN: the error names the file and where the first bad value is.
    const nan = `${dir}/nan.npy`;
    await Effect.runPromise(writeNpy(nan, { shape: [4, 2], data: Float32Array.of(0, 1, 2, 3, NaN, 5, 6, 7) }));
    const bad = await cli("stage", "cluster", "--features", nan, "--k", "2", "--out", `${dir}/p.safetensors`);
    assert.equal(bad.code, 1, bad.out);
    assert.match(bad.out, /^error: .*nan\.npy: features contain 1 non-finite value .* row 2, column 0$/m);
    await Deno.remove(nan);
    const k = await cli("stage", "cluster", "--features", features, "--k", "3,1", "--out", `${dir}/p.safetensors`);
    assert.equal(k.code, 2);
    assert.match(k.out, /--k must list distinct integers >= 2, not '3,1'/);
    const seeds = await cli("compare", "--seeds", "0,0");
    assert.equal(seeds.code, 2, seeds.out);
    assert.match(seeds.out, /--seeds must list distinct non-negative integers, not '0,0'/);

    await Deno.mkdir(`${dir}/taken`);
    const taken = await cluster("--out", `${dir}/taken`);
    assert.equal(taken.code, 1, taken.out);
    assert.match(taken.out, /^error: .*taken/m);
    assert.deepEqual(Object.keys(await snapshot(dir)), ["f.npy"], "a stray file was left");

    const config = await yaml(dir, "tiny", tinyConfig);
    const views = await cli("stage", "augment", "--config", config, "--preview", `${dir}/p.png`, "--views=-1");
    assert.equal(views.code, 2, views.out);
    assert.match(views.out, /--views must be an integer >= 1, not -1/);
  }));

Deno.test("bad input: a run directory locked by a live process is refused; a lock left by a dead one is not", () =>
  withTempDir("pcl-lock-", async (dir) => {
    const config = await yaml(dir, "tiny", { ...tinyConfig, epochs: 2 });
    const out = `${dir}/run`;
    await Deno.mkdir(out);
    // Another holder of the lock, as a second process would be (flock locks are per open file, even in one process).
    const holder = await Deno.open(`${out}/.lock`, { read: true, write: true, create: true });
    await holder.lock(true);
    await holder.write(new TextEncoder().encode(JSON.stringify({ pid: 4242 })));
    try {
      const held = await cli("train", "--config", config, "--out", out);
      assert.equal(held.code, 1, held.out);
      assert.match(held.out, /^error: run directory .*run is in use by pid 4242$/m);
      assert.deepEqual(Object.keys(await snapshot(out)), [".lock"]);
    } finally {
      holder.close(); // what the OS does when a process dies, kill -9 included
    }
    const after = await cli("train", "--config", config, "--out", out);
    assert.equal(after.code, 0, after.out);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${out}/.lock`)), { pid: Deno.pid });
  }));
