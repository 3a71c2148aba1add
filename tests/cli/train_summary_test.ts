import assert from "node:assert/strict";
import YAML from "yaml";
import { tinyConfig } from "../pcl/tiny.ts";
import { withTempDir } from "../helpers.ts";
import { cli } from "./run.ts";

Deno.test("cli: the training summary shows the learned features beside the raw pixels, as metrics.jsonl and pixels.json hold them", () =>
  withTempDir("pcl-summary-", async (dir) => {
    const config = `${dir}/tiny.yaml`;
    const evaluation = { test: { kind: "synthetic", n: 64, side: 12, seed: 9 }, probeImages: 128 };
    await Deno.writeTextFile(config, YAML.stringify({ ...tinyConfig, evaluation }));
    const r = await cli("train", "--config", config, "--out", `${dir}/run`);
    assert.equal(r.code, 0, r.out);
    const lines = (await Deno.readTextFile(`${dir}/run/metrics.jsonl`)).trim().split("\n");
    const learned = JSON.parse(lines.at(-1)!).evaluation;
    const pixels = JSON.parse(await Deno.readTextFile(`${dir}/run/pixels.json`)).evaluation;
    const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
    const row = (e: typeof learned) => [
      pct(e.knn.k20),
      pct(e.knn.k200),
      pct(e.linear),
      e.clustering.ami.toFixed(3),
      e.clustering.nmi.toFixed(3),
      e.clustering.ari.toFixed(3),
      pct(e.clustering.acc),
    ];
    const shown = (label: string) => r.out.split("\n").find((l) => l.trim().startsWith(label))?.trim().split(/\s{2,}/);
    assert.match(r.out, /\s+kNN k=20\s+kNN k=200\s+linear\s+AMI\s+NMI\s+ARI\s+ACC/);
    assert.deepEqual(shown("learned features")?.slice(1), row(learned));
    assert.deepEqual(shown("raw pixels")?.slice(1), row(pixels));
    // The gain, signed: points for the rates, differences for the scores.
    const signed = (d: number, digits: number) => `${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(digits)}`;
    assert.deepEqual(shown("learned − pixels")?.slice(1), [
      signed(100 * (learned.knn.k20 - pixels.knn.k20), 1),
      signed(100 * (learned.knn.k200 - pixels.knn.k200), 1),
      signed(100 * (learned.linear - pixels.linear), 1),
      signed(learned.clustering.ami - pixels.clustering.ami, 3),
      signed(learned.clustering.nmi - pixels.clustering.nmi, 3),
      signed(learned.clustering.ari - pixels.clustering.ari, 3),
      signed(100 * (learned.clustering.acc - pixels.clustering.acc), 1),
    ]);
  }));
