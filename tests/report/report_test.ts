import assert from "node:assert/strict";
import { Effect, Option, References } from "effect";
import { decode as decodePng } from "fast-png";
import { decodeConfig } from "../../src/config.ts";
import type { HostDataset } from "../../src/data/dataset.ts";
import { readSource } from "../../src/data/source.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { ArtifactStore, BundleFromBytes, readArtifact } from "../../src/graph/mod.ts";
import { PrototypesSchema } from "../../src/pcl/estep.ts";
import { listManifests } from "../../src/pcl/checkpoint.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { train } from "../../src/pcl/train.ts";
import { renderReport, ReportError } from "../../src/report/mod.ts";
import { histogram } from "../../src/report/charts.ts";
import { imagePng, largestClusters, nearestMembers } from "../../src/report/gallery.ts";
import { effectTest, tempDir } from "../helpers.ts";
import { tinyConfig } from "../pcl/tiny.ts";

// ---------------------------------------------------------------------------------------------------------------
// One tiny PCL run (2 epochs, warm-up 1, K = 3 and 5 on 128 synthetic images) shared by the tests; each test
// renders a copy of it, changed to the case it tests. The run is removed when the test module unloads.

let trained: Promise<string> | undefined;
const tinyRun = () =>
  trained ??= (async () => {
    const config = await Effect.runPromise(decodeConfig(tinyConfig));
    const out = await Deno.makeTempDir({ prefix: "pcl-report-run-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(out, { recursive: true }));
    await Effect.runPromise(
      train(config, { out }).pipe(
        Effect.provide(Gpu.layer),
        Effect.provideService(References.MinimumLogLevel, "Error"),
      ),
    );
    return out;
  })();

const copyTree = async (from: string, to: string) => {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
};

/** A fresh copy of the tiny run, removed when the test ends. */
const runCopy = () =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = await Deno.makeTempDir({ prefix: "pcl-report-" });
      await copyTree(await tinyRun(), dir);
      return dir;
    }),
    (dir) => Effect.promise(() => Deno.remove(dir, { recursive: true })),
  );

type Json = Record<string, unknown>;
const readLines = (dir: string) =>
  Effect.promise(async () =>
    (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l) as Json)
  );
const writeLines = (dir: string, lines: Json[]) =>
  Effect.promise(() =>
    Deno.writeTextFile(`${dir}/metrics.jsonl`, lines.map((l) => JSON.stringify(l)).join("\n") + "\n")
  );

interface Chart {
  id: string;
  title: string;
  config: { type: string; data: { labels?: string[]; datasets: { label: string; data: unknown[] }[] } };
}

/** Renders `dir` and returns the page and its chart data. */
const render = (dir: string) =>
  Effect.gen(function* () {
    const path = yield* renderReport(dir);
    assert.equal(path, `${dir}/report.html`);
    const html = yield* Effect.promise(() => Deno.readTextFile(path));
    const json = /<script type="application\/json" id="report-data">(.*?)<\/script>/s.exec(html);
    assert.ok(json, "the chart data is embedded");
    const charts = new Map((JSON.parse(json[1]!).charts as Chart[]).map((c) => [c.id, c]));
    const series = (id: string) =>
      Object.fromEntries(charts.get(id)?.config.data.datasets.map((d) => [d.label, d.data]) ?? []);
    return { html, charts, series };
  });

/** The page refers to nothing outside itself: no remote or protocol-relative src/href/url(), no stylesheet link. */
const assertSelfContained = (html: string) => {
  assert.doesNotMatch(html, /\b(src|href)\s*=\s*["']?\s*(https?:)?\/\//i, "no external src/href");
  assert.doesNotMatch(html, /url\(\s*["']?\s*(https?:)?\/\//i, "no external url()");
  assert.doesNotMatch(html, /<link\b|@import\b/i, "no linked stylesheet");
  assert.doesNotMatch(html, /sourceMappingURL/, "no source map reference");
};

/** Gallery rows: clustering, cluster, and the data-index of each image in order. */
const galleryRows = (html: string) =>
  [...html.matchAll(/<div class="proto" data-clustering="(\d+)" data-cluster="(\d+)">(.*?)<\/div><\/div>/gs)].map(
    (m) => ({
      clustering: Number(m[1]),
      cluster: Number(m[2]),
      indices: [...m[3]!.matchAll(/data-index="(\d+)"/g)].map((i) => Number(i[1])),
      sources: [...m[3]!.matchAll(/src="data:image\/png;base64,([^"]+)"/g)].map((i) => i[1]!),
    }),
  );

const newestManifest = (dir: string) =>
  Effect.promise(async () => {
    const [path] = await listManifests(`${dir}/checkpoints`);
    return { path: path!, manifest: JSON.parse(await Deno.readTextFile(path!)) as Json };
  });

const sizesOf = (im2cluster: ArrayLike<number>, k: number) => {
  const sizes = new Array<number>(k).fill(0);
  for (let i = 0; i < im2cluster.length; i++) sizes[im2cluster[i]!]++;
  return sizes;
};

effectTest(
  "report: curves, evaluation, E-step scores, histograms and galleries of a PCL run match its files",
  Effect.gen(function* () {
    const dir = yield* runCopy();
    const lines = yield* readLines(dir);
    assert.equal(lines.length, 2);
    // Evaluation as the other half of the pipeline writes it: partial at epoch 0, complete at epoch 1.
    lines[0]!.evaluation = { knn: { k20: 0.41, k200: 0.38 } };
    lines[1]!.evaluation = {
      knn: { k20: 0.52, k200: 0.47 },
      linear: 0.61,
      clustering: { ami: 0.33, nmi: 0.36, ari: 0.21, acc: 0.44 },
    };
    lines[1]!.estep = [{ k: 3, ami: 0.12, nmi: 0.2, ari: 0.1, acc: 0.3 }, {
      k: 5,
      ami: 0.22,
      nmi: 0.3,
      ari: 0.15,
      acc: 0.25,
    }];
    yield* writeLines(dir, lines);
    const { html, charts, series } = yield* render(dir);
    const metrics = lines as unknown as {
      epoch: number;
      lr: number;
      infoNce: number;
      accInst: number;
      protoNce: number[];
      accProto: number[];
    }[];

    for (const id of ["summary", "training", "evaluation", "clusterings", "config"]) {
      assert.match(html, new RegExp(`<section id="${id}">`), `section ${id}`);
    }
    assertSelfContained(html);
    assert.match(html, /Chart\.js v4\.6\.1/, "Chart.js is inlined");

    // Training curves: every epoch's value, ProtoNCE only after warm-up; fractions as percentages. A person reads
    // epochs from 1 (the files count from 0).
    const loss = series("chart-loss");
    assert.deepEqual(Object.keys(loss), ["InfoNCE", "ProtoNCE K=3", "ProtoNCE K=5"]);
    assert.deepEqual(loss["InfoNCE"], metrics.map((m) => ({ x: m.epoch + 1, y: m.infoNce })));
    assert.deepEqual(loss["ProtoNCE K=5"], [{ x: 2, y: metrics[1]!.protoNce[1] }]);
    const acc = series("chart-accuracy");
    assert.deepEqual(acc["Acc@Inst"], metrics.map((m) => ({ x: m.epoch + 1, y: 100 * m.accInst })));
    assert.deepEqual(acc["Acc@Proto K=3"], [{ x: 2, y: 100 * metrics[1]!.accProto[0]! }]);
    assert.deepEqual(series("chart-lr")["lr"], metrics.map((m) => ({ x: m.epoch + 1, y: m.lr })));

    // Evaluation: a series has a point only where the epoch has that number.
    const ev = series("chart-eval-accuracy");
    assert.deepEqual(ev["kNN k=20"], [{ x: 1, y: 41 }, { x: 2, y: 52 }]);
    assert.deepEqual(ev["linear"], [{ x: 2, y: 61 }]);
    assert.deepEqual(series("chart-eval-clustering")["AMI"], [{ x: 2, y: 33 }]);
    assert.deepEqual(series("chart-estep-ami"), { "K=3": [{ x: 2, y: 12 }], "K=5": [{ x: 2, y: 22 }] });
    assert.match(html, /Evaluation, epoch 2/);
    assert.match(html, /<td>kNN k=200<\/td><td>47\.00%<\/td>/);

    // Histograms and galleries against the epoch-1 concentration artifact, read independently.
    const { manifest } = yield* newestManifest(dir);
    const artifact = yield* readArtifact(
      `epoch-1/${manifest.configHash}/concentration`,
      BundleFromBytes(PrototypesSchema),
    ).pipe(Effect.provide(ArtifactStore.directory(`${dir}/artifacts`)));
    assert.ok(Option.isSome(artifact), "the run has an epoch-1 concentration artifact");
    const host: HostDataset = yield* readSource(tinyConfig.train as never);
    const rows = galleryRows(html);
    for (const [m, c] of artifact.value.clusterings.entries()) {
      const sizes = sizesOf(c.im2cluster, c.k);
      const hSizes = charts.get(`chart-sizes-${m}`)!.config.data.datasets[0]!.data as number[];
      const hPhi = charts.get(`chart-phi-${m}`)!.config.data.datasets[0]!.data as number[];
      assert.equal(hSizes.reduce((a, b) => a + b, 0), c.k, `K=${c.k}: every cluster in the size histogram`);
      assert.equal(hPhi.reduce((a, b) => a + b, 0), c.k, `K=${c.k}: every φ in the φ histogram`);
      assert.match(html, new RegExp(`sizes ${Math.min(...sizes)} to ${Math.max(...sizes)} `));

      // The largest clusters, largest first, each with its nearest members, nearest first.
      const expected = sizes.map((s, cl) => ({ s, cl })).filter((e) => e.s > 0)
        .sort((a, b) => b.s - a.s || a.cl - b.cl).slice(0, 8);
      const mine = rows.filter((r) => r.clustering === m);
      assert.deepEqual(mine.map((r) => r.cluster), expected.map((e) => e.cl), `K=${c.k}: clusters shown`);
      for (const r of mine) {
        const members = Array.from(c.im2cluster.keys()).filter((i) => c.im2cluster[i] === r.cluster)
          .sort((a, b) => c.distances[a]! - c.distances[b]! || a - b);
        assert.deepEqual(r.indices, members.slice(0, 8), `K=${c.k}, cluster ${r.cluster}: nearest members`);
        assert.equal(r.sources.length, Math.min(8, sizes[r.cluster]!));
      }
      // The first image is the training image itself (12x12 grey: no shrinking).
      const first = mine[0]!;
      const png = decodePng(Uint8Array.from(atob(first.sources[0]!), (ch) => ch.charCodeAt(0)));
      const side = host.info.width;
      assert.deepEqual([png.width, png.height, png.channels], [side, side, 1]);
      assert.deepEqual(
        [...png.data],
        [...host.images.subarray(first.indices[0]! * side * side, (first.indices[0]! + 1) * side * side)],
      );
    }
    assert.equal(rows.length, artifact.value.clusterings.reduce((n, c) => n + Math.min(8, c.k), 0));

    // The config and the adapter line.
    assert.match(html, /&quot;name&quot;: &quot;tiny&quot;/);
    assert.ok(html.includes(`adapter: <b>${manifest.adapter}</b>`), "the adapter line");
    assert.doesNotMatch(html, /class="notes"/, "nothing to report as missing");
  }),
);

effectTest(
  "report: without the E-step artifacts, histograms come from the checkpoint and the page says why no galleries",
  Effect.gen(function* () {
    const dir = yield* runCopy();
    yield* Effect.promise(() => Deno.remove(`${dir}/artifacts`, { recursive: true }));
    const { html, charts } = yield* render(dir);
    assert.match(html, /no E-step artifacts in .*: the histograms come from the newest checkpoint/);
    assert.doesNotMatch(html, /<img /);
    const { path } = yield* newestManifest(dir);
    const st = yield* readSafetensors(path.replace(/\.json$/, ".safetensors"));
    for (const m of [0, 1]) {
      const t = st.tensors.get(`prototypes.${m}.im2cluster`)!;
      const k = st.tensors.get(`prototypes.${m}.concentration`)!.data.length;
      const sizes = sizesOf(t.data as Int32Array, k);
      const h = histogram(sizes, true);
      assert.deepEqual(charts.get(`chart-sizes-${m}`)!.config.data.datasets[0]!.data, h.counts);
      assert.equal(h.counts.reduce((a, b) => a + b, 0), k);
    }
    assertSelfContained(html);
  }),
);

effectTest(
  "report: a run stopped after warm-up has InfoNCE curves only and says there are no clusterings yet",
  Effect.gen(function* () {
    const dir = yield* runCopy();
    yield* Effect.promise(async () => {
      await Deno.remove(`${dir}/artifacts`, { recursive: true });
      for await (const e of Deno.readDir(`${dir}/checkpoints`)) {
        if (e.name.startsWith("ckpt-0001-")) await Deno.remove(`${dir}/checkpoints/${e.name}`);
      }
    });
    yield* writeLines(dir, (yield* readLines(dir)).slice(0, 1));
    const { html, charts, series } = yield* render(dir);
    assert.match(html, /has not got past warm-up \(warmupEpochs: 1\)/);
    assert.match(html, /No clusterings to show/);
    assert.match(html, /No evaluation in metrics\.jsonl/);
    assert.deepEqual(Object.keys(series("chart-loss")), ["InfoNCE"]);
    assert.ok(![...charts.keys()].some((id) => id.startsWith("chart-sizes") || id.startsWith("chart-eval")));
    assert.doesNotMatch(html, /<img /);
    assertSelfContained(html);
  }),
);

effectTest(
  "report: without metrics.jsonl the curves come from the manifest; a malformed evaluation is noted, not fatal",
  Effect.gen(function* () {
    const dir = yield* runCopy();
    const lines = yield* readLines(dir);
    yield* Effect.promise(() => Deno.remove(`${dir}/metrics.jsonl`));
    const fromManifest = yield* render(dir);
    assert.match(fromManifest.html, /metrics\.jsonl is missing: the curves come from the newest checkpoint/);
    assert.deepEqual(
      fromManifest.series("chart-loss")["InfoNCE"],
      lines.map((m) => ({ x: (m.epoch as number) + 1, y: m.infoNce })),
    );

    lines[1]!.evaluation = { knn: "high" };
    lines[1]!.infoNce = null; // a NaN loss, as JSON writes it: a gap in the curve
    yield* writeLines(dir, lines);
    const odd = yield* render(dir);
    assert.match(odd.html, /metrics\.jsonl:2: its &quot;evaluation&quot; field has an unexpected shape/);
    assert.deepEqual(odd.series("chart-loss")["InfoNCE"], [{ x: 1, y: lines[0]!.infoNce }, { x: 2, y: null }]);
    assert.ok(!odd.charts.has("chart-eval-accuracy"));

    // Without reloading the images, elsewhere.
    const out = `${dir}/elsewhere.html`;
    assert.equal(yield* renderReport(dir, { images: false, out }), out);
    const plain = yield* Effect.promise(() => Deno.readTextFile(out));
    assert.match(plain, /prototype galleries were not asked for/);
    assert.match(plain, /id="chart-sizes-1"/);
    assert.doesNotMatch(plain, /<img /);
  }),
);

effectTest(
  "report: a directory without a run is a ReportError that names it",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-report-empty-");
    const error = yield* Effect.flip(renderReport(dir));
    assert.ok(error instanceof ReportError);
    assert.match(error.message, /holds no training run/);
    assert.ok(error.message.includes(dir));
    yield* Effect.promise(() => Deno.writeTextFile(`${dir}/metrics.jsonl`, "{not json\n"));
    assert.match((yield* Effect.flip(renderReport(dir))).message, /metrics\.jsonl:1: not JSON/);
  }),
);

effectTest(
  "report: the CLI prints the page's path, or one error line and exit code 1",
  Effect.gen(function* () {
    const dir = yield* runCopy();
    const cli = (arg: string) =>
      Effect.promise(() =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "--allow-read", "--allow-write", "--allow-env", "src/cli/report.ts", arg],
          cwd: new URL("../..", import.meta.url).pathname,
          stdout: "piped",
          stderr: "piped",
        }).output()
      );
    const ok = yield* cli(`${dir}/`);
    assert.equal(ok.code, 0, new TextDecoder().decode(ok.stderr));
    assert.equal(new TextDecoder().decode(ok.stdout).trim(), `${dir}/report.html`);
    const empty = `${dir}/empty`;
    yield* Effect.promise(() => Deno.mkdir(empty));
    const bad = yield* cli(empty);
    assert.equal(bad.code, 1);
    assert.match(new TextDecoder().decode(bad.stderr), /^error: .*holds no training run/m);
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// The pieces, on hand-made data.

Deno.test("report: histogram bins whole numbers one per value when they fit, else in equal ranges", () => {
  assert.deepEqual(histogram([3, 5, 5, 7], true), { labels: ["3", "4", "5", "6", "7"], counts: [1, 0, 2, 0, 1] });
  const wide = histogram(Array.from({ length: 100 }, (_, i) => i * 10), true);
  assert.equal(wide.counts.reduce((a, b) => a + b, 0), 100);
  assert.equal(wide.labels[0], "0–49"); // 20 bins (2√100) of 50 over 0..990
  assert.equal(wide.counts.length, 20);
  const phi = histogram([0.1, 0.2, 0.2, 0.3], false, 2);
  assert.deepEqual(phi, { labels: ["0.1–0.2", "0.2–0.3"], counts: [1, 3] }); // the maximum falls in the last bin
  assert.deepEqual(histogram([0.2, 0.2], false), { labels: ["0.2"], counts: [2] });
  assert.deepEqual(histogram([], false), { labels: [], counts: [] });
});

Deno.test("report: largest clusters and nearest members, ties broken by the smaller id", () => {
  assert.deepEqual(largestClusters([2, 0, 3, 2, 1], 3), [2, 0, 3]);
  assert.deepEqual(largestClusters([0, 1], 8), [1], "empty clusters are never shown");
  const im2cluster = [1, 0, 1, 1, 0, 1];
  const distances = [0.5, 0.1, 0.2, 0.5, 0.05, 0.9];
  assert.deepEqual(nearestMembers(im2cluster, distances, [1, 0], 3), [[2, 0, 3], [4, 1]]);
});

Deno.test("report: gallery PNGs hold the image's pixels, interleaved, and shrink by box averages", () => {
  // Two RGB 4x6 images, NCHW: value = 100 * channel + 10 * y + x (+1 for the second image).
  const [c, h, w] = [3, 4, 6];
  const images = new Uint8Array(2 * c * h * w);
  for (let n = 0; n < 2; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) images[((n * c + ch) * h + y) * w + x] = 100 * ch + 10 * y + x + n;
      }
    }
  }
  const host = {
    info: { name: "t", n: 2, channels: 3, height: h, width: w, classes: 1, classNames: ["a"], source: "t" },
    images,
    labels: new Int32Array(2),
  } as HostDataset;
  const full = decodePng(imagePng(host, 1, 64));
  assert.deepEqual([full.width, full.height, full.channels], [w, h, 3]);
  assert.deepEqual([...full.data.subarray(0, 6)], [1, 101, 201, 2, 102, 202], "HWC order, image 1");
  const half = decodePng(imagePng(host, 0, 3)); // factor 2: 3x2 output
  assert.deepEqual([half.width, half.height], [3, 2]);
  // Top-left 2x2 block of channel 0: (0 + 1 + 10 + 11) / 4 = 5.5, rounded to 6.
  assert.equal(half.data[0], 6);
  assert.equal(half.data[1], 106);
});
