import assert from "node:assert/strict";
import { Effect } from "effect";
import YAML from "yaml";
import { cli } from "./run.ts";
import { readNpy } from "../../src/io/npy.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { listManifests } from "../../src/pcl/checkpoint.ts";
import { tinyConfig } from "../pcl/tiny.ts";
import { withTempDir } from "../helpers.ts";

Deno.test("cli: every stage command on tiny inputs", () =>
  withTempDir("pcl-stages-", async (dir) => {
    const config = `${dir}/tiny.yaml`;
    await Deno.writeTextFile(config, YAML.stringify({ ...tinyConfig, epochs: 2 }));

    const load = await cli("stage", "load", "--config", config);
    assert.equal(load.code, 0, load.out);
    assert.match(load.out, /synthetic.*: 128 images, 1x12x12, 10 classes/);

    const preview = await cli("stage", "augment", "--config", config, "--preview", `${dir}/p.png`, "--n", "3");
    assert.equal(preview.code, 0, preview.out);
    const png = await Deno.readFile(`${dir}/p.png`);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"

    assert.equal((await cli("train", "--config", config, "--out", `${dir}/run`)).code, 0);
    const [manifest] = await listManifests(`${dir}/run/checkpoints`);
    const inspect = await cli("stage", "checkpoint", manifest);
    assert.equal(inspect.code, 0, inspect.out);
    assert.match(inspect.out, /verified .*\nepoch 2, step 8\/8, queue pointer 0/);

    const encode = await cli("stage", "encode", "--config", config, "--checkpoint", manifest, "--out", `${dir}/f.npy`);
    assert.equal(encode.code, 0, encode.out);
    const features = await Effect.runPromise(readNpy(`${dir}/f.npy`));
    assert.deepEqual(features.shape, [128, 8]);

    const clustered = await cli(
      "stage",
      "cluster",
      "--features",
      `${dir}/f.npy`,
      "--k",
      "3,5",
      "--temperature",
      "0.2",
      "--out",
      `${dir}/p.safetensors`,
    );
    assert.equal(clustered.code, 0, clustered.out);
    const protos = await Effect.runPromise(readSafetensors(`${dir}/p.safetensors`));
    assert.deepEqual(protos.tensors.get("k5.prototypes")?.shape, [5, 8]);
    assert.deepEqual(protos.tensors.get("k3.im2cluster")?.shape, [128]);
    assert.ok(protos.tensors.has("k3.concentration"));

    const bad = await cli("stage", "checkpoint", `${dir}/missing.json`);
    assert.equal(bad.code, 1);
    assert.match(bad.out, /^error: .*missing\.json/m);
  }));
