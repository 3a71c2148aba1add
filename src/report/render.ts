/**
 * The report page: one HTML file with its CSS, Chart.js, the chart data (a JSON script element) and the gallery
 * images (PNG data: URIs) inside it, so that it opens offline and can be mailed or archived as is.
 */
import { trainingSeconds } from "../pcl/metrics.ts";
import { Buffer } from "node:buffer";
import type { HostDataset } from "../data/dataset.ts";
import {
  type ChartSpec,
  clusteringColor,
  evaluationCharts,
  histogram,
  histogramChart,
  trainingCharts,
} from "./charts.ts";
import type { ClusteringView, EpochRecord, RunData } from "./data.ts";
import { clusterSizes, GALLERY_DEFAULTS, type GalleryOptions, prototypeGallery } from "./gallery.ts";

export interface ChartLibrary {
  /** The UMD build's source (defines the global `Chart`). */
  readonly source: string;
  /** e.g. "Chart.js 4.6.1", for the footer. */
  readonly name: string;
}

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** Text to put inside a <script> element: nothing in it may end the element early. */
const scriptText = (s: string) => s.replace(/<\/(script)/gi, "<\\/$1").replace(/<!--/g, "<\\!--");

const pct = (v: number | null | undefined) =>
  v === null || v === undefined || !Number.isFinite(v) ? "–" : `${(100 * v).toFixed(2)}%`;
const num = (v: number | null | undefined, digits = 4) =>
  v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(digits);
const sig = (v: number | null | undefined) =>
  v === null || v === undefined || !Number.isFinite(v) ? "–" : Number(v.toPrecision(3)).toString();

const get = (o: unknown, path: string): unknown =>
  path.split(".").reduce<unknown>(
    (v, k) => (v !== null && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined),
    o,
  );

/** The K of each clustering: from the config, else from the E-step found. */
const clusterKs = (run: RunData): number[] => {
  const ks = get(run.manifest?.config, "pcl.clusters");
  if (Array.isArray(ks) && ks.every((k) => typeof k === "number")) return ks;
  return run.estep?.clusterings.map((c) => c.k) ?? [];
};

const chartBox = (c: ChartSpec) =>
  `<div class="chart"><h4>${esc(c.title)}</h4><div class="box"><canvas id="${esc(c.id)}" role="img" aria-label="${
    esc(c.title)
  }"></canvas></div></div>`;

const table = (head: readonly string[], rows: ReadonlyArray<readonly string[]>, cls = "") =>
  `<table${cls ? ` class="${cls}"` : ""}><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead>` +
  `<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("")}</tbody></table>`;

const kName = (ks: readonly number[], m: number) => (ks[m] !== undefined ? `K=${ks[m]}` : `clustering ${m}`);

/** The last epoch's numbers, the last evaluation, the last E-step scores. */
const summary = (metrics: ReadonlyArray<EpochRecord>, ks: readonly number[], epochs: unknown) => {
  const last = metrics.at(-1);
  if (last === undefined) return `<p class="none">metrics.jsonl holds no epoch yet.</p>`;
  const rows: string[][] = [
    ["epochs done", `${metrics.length}${typeof epochs === "number" ? ` of ${epochs}` : ""}`],
    ["InfoNCE", num(last.infoNce)],
    ["Acc@Inst", pct(last.accInst)],
    ...last.protoNce.map((v, m) => [`ProtoNCE ${kName(ks, m)}`, num(v)]),
    ...last.accProto.map((v, m) => [`Acc@Proto ${kName(ks, m)}`, pct(v)]),
    ["learning rate", sig(last.lr)],
    ["images / s", num(last.imagesPerSecond, 0)],
    ["training time", `${num(trainingSeconds(metrics), 1)} s`],
  ];
  let html = `<div class="tables"><div><h3>Training, epoch ${last.epoch + 1}</h3>${table(["", ""], rows, "kv")}</div>`;
  const evaluated = metrics.findLast((m) => m.evaluation !== undefined);
  if (evaluated?.evaluation !== undefined) {
    const e = evaluated.evaluation;
    const evRows: string[][] = [
      ["kNN k=20", pct(e.knn?.k20)],
      ["kNN k=200", pct(e.knn?.k200)],
      ["linear", pct(e.linear)],
      ["AMI", pct(e.clustering?.ami)],
      ["NMI", pct(e.clustering?.nmi)],
      ["ARI", pct(e.clustering?.ari)],
      ["ACC", pct(e.clustering?.acc)],
    ];
    html += `<div><h3>Evaluation, epoch ${evaluated.epoch + 1}</h3>${table(["", ""], evRows, "kv")}</div>`;
  }
  const scored = metrics.findLast((m) => m.estep !== undefined && m.estep.length > 0);
  if (scored?.estep !== undefined) {
    const esRows = scored.estep.map((s) => [`K=${s.k}`, pct(s.ami), pct(s.nmi), pct(s.ari), pct(s.acc)]);
    html += `<div><h3>E-step vs labels, epoch ${scored.epoch + 1}</h3>${
      table(["", "AMI", "NMI", "ARI", "ACC"], esRows)
    }</div>`;
  }
  return html + `</div>`;
};

/** Every epoch's record, folded away. */
const allEpochs = (metrics: ReadonlyArray<EpochRecord>, ks: readonly number[]) => {
  const m = Math.max(0, ...metrics.map((r) => r.protoNce.length));
  const head = [
    "epoch",
    "lr",
    "InfoNCE",
    "Acc@Inst",
    ...Array.from({ length: m }, (_, i) => `ProtoNCE ${kName(ks, i)}`),
    ...Array.from({ length: m }, (_, i) => `Acc@Proto ${kName(ks, i)}`),
    "kNN k=20",
    "linear",
    "AMI",
    "seconds",
    "images/s",
  ];
  const rows = metrics.map((r) => [
    String(r.epoch + 1),
    sig(r.lr),
    num(r.infoNce),
    pct(r.accInst),
    ...Array.from({ length: m }, (_, i) => num(r.protoNce[i])),
    ...Array.from({ length: m }, (_, i) => pct(r.accProto[i])),
    pct(r.evaluation?.knn?.k20),
    pct(r.evaluation?.linear),
    pct(r.evaluation?.clustering?.ami),
    num(r.seconds, 1),
    num(r.imagesPerSecond, 0),
  ]);
  return `<details><summary>All ${metrics.length} epochs</summary>${table(head, rows, "wide")}</details>`;
};

const dataUri = (png: Uint8Array) => `data:image/png;base64,${Buffer.from(png).toString("base64")}`;

/** One clustering: its statistics, the histograms of sizes and φ, and its gallery. */
const clusteringSection = (
  c: ClusteringView,
  m: number,
  host: HostDataset | undefined,
  options: GalleryOptions,
  charts: ChartSpec[],
) => {
  const sizes = clusterSizes(c.im2cluster, c.k);
  const sorted = Int32Array.from(sizes).sort();
  const phi = Float64Array.from(c.phi).sort();
  const phiMean = phi.reduce((a, b) => a + b, 0) / Math.max(1, phi.length);
  const sizeChart = histogramChart(
    `chart-sizes-${m}`,
    `Cluster sizes, K=${c.k}`,
    "images in the cluster",
    histogram(sizes, true),
    clusteringColor(m),
  );
  const phiChart = histogramChart(
    `chart-phi-${m}`,
    `Concentration φ, K=${c.k}`,
    "φ",
    histogram(c.phi, false),
    clusteringColor(m),
  );
  charts.push(sizeChart, phiChart);
  const stats = `${sizes.filter((s) => s > 0).length} of ${c.k} clusters non-empty; sizes ${sorted[0]} to ` +
    `${sorted.at(-1)} (median ${sorted[sorted.length >> 1]}); φ ${sig(phi[0])} to ${sig(phi.at(-1))} (mean ${
      sig(phiMean)
    })`;
  let gallery = "";
  if (host !== undefined && c.distances !== undefined) {
    const rows = prototypeGallery(host, c, options);
    const name = (label: number) => host.info.classNames[label] ?? String(label);
    gallery = `<p class="hint">The ${rows.length} largest clusters, each with its ${options.images} images nearest ` +
      `to the centroid, nearest first (index, label and squared distance on hover).</p><div class="gallery">` +
      rows.map((r) => {
        const majority = r.majority === undefined
          ? ""
          : ` · ${Math.round((100 * r.majority.count) / r.size)}% ${esc(name(r.majority.label))}`;
        const images = r.images.map((im) =>
          `<img src="${dataUri(im.png)}" alt="image ${im.index}" title="#${im.index} · ${esc(name(im.label))} · d²=${
            sig(im.distance)
          }" data-index="${im.index}">`
        ).join("");
        return `<div class="proto" data-clustering="${m}" data-cluster="${r.cluster}"><div class="cap">` +
          `<b>cluster ${r.cluster}</b><br>${r.size} images · φ ${sig(r.phi)}${majority}</div>` +
          `<div class="imgs">${images}</div></div>`;
      }).join("") + `</div>`;
  }
  return `<div class="clustering" id="clustering-${m}"><h3>Clustering ${m}: K = ${c.k}</h3>` +
    `<p>${esc(stats)}</p><div class="grid">${chartBox(sizeChart)}${chartBox(phiChart)}</div>${gallery}</div>`;
};

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
  max-width:1240px;margin:0 auto;padding:12px 24px 40px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px}.meta{color:#555;margin:0}.meta b{color:#222;font-weight:600}
.notes{background:#fff8e1;border:1px solid #ecd48a;padding:6px 8px 6px 28px;border-radius:4px}
.none,.hint{color:#666}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
.chart{border:1px solid #e3e3e3;border-radius:4px;padding:6px 8px;min-width:0}.chart h4{margin:0 0 4px;font-size:13px}
.box{position:relative;height:240px}.tables{display:flex;flex-wrap:wrap;gap:12px 40px;align-items:flex-start}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}th,td{padding:2px 10px;text-align:right;
  border-bottom:1px solid #eee}th:first-child,td:first-child{text-align:left}thead th{border-bottom:1px solid #bbb}
table.kv thead{display:none}table.wide{font-size:12px;margin-top:6px}
.proto{display:flex;align-items:center;gap:10px;padding:3px 0;border-bottom:1px solid #f0f0f0}
.proto .cap{width:210px;flex:none;font-size:12px;color:#444}.imgs{display:flex;gap:4px;flex-wrap:wrap}
.imgs img{height:52px;image-rendering:pixelated;border:1px solid #ccc;background:#000}
pre{background:#f6f6f6;border:1px solid #e3e3e3;padding:8px;overflow:auto;font-size:12px}
footer{margin-top:32px;color:#888;font-size:12px}`;

/** A table as plain text lines: columns padded to their widest cell, two spaces apart, each line after `indent`. */
export const textTable = (head: readonly string[], rows: readonly string[][], indent = ""): string[] => {
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  return [head, ...rows].map((r) => `${indent}${r.map((v, c) => v.padEnd(widths[c]!)).join("  ")}`.trimEnd());
};

/** A self-contained page of one table (a comparison over seeds), in the report's style. */
export const tablePage = (
  title: string,
  lines: readonly string[],
  head: readonly string[],
  rows: readonly string[][],
) =>
  `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>${
    esc(title)
  }</title>\n<style>${CSS}</style>\n` +
  `</head>\n<body>\n<h1>${esc(title)}</h1>\n${lines.map((l) => `<p class="meta">${esc(l)}</p>`).join("\n")}\n` +
  `${table(head, rows, "wide")}\n</body>\n</html>\n`;

/** Chart.js setup: no animation (the page is a document, and a screenshot must show finished charts). */
const INIT = `(() => {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  for (const c of data.charts) new Chart(document.getElementById(c.id), c.config);
})();`;

export interface PageOptions {
  readonly gallery?: GalleryOptions;
  /** Written in the header; default now. */
  readonly generated?: Date;
}

/** The report page of a run. */
export const reportHtml = (run: RunData, chartLib: ChartLibrary, options: PageOptions = {}): string => {
  const galleryOptions = options.gallery ?? GALLERY_DEFAULTS;
  const config = run.manifest?.config;
  const ks = clusterKs(run);
  const name = typeof config?.name === "string" ? config.name : "run";
  const charts: ChartSpec[] = [];

  const training = trainingCharts(run.metrics, ks);
  const evaluation = evaluationCharts(run.metrics, ks);
  charts.push(...training, ...evaluation);

  const info = run.dataset?.info;
  const dataset = info !== undefined
    ? `${info.name}, ${info.n} images ${info.channels}×${info.height}×${info.width}, ${info.classes} classes`
    : config?.train !== undefined
    ? JSON.stringify(config.train)
    : "–";
  const m = run.manifest;
  const meta = [
    ["directory", run.dir],
    ["dataset", dataset],
    ["adapter", m?.adapter ?? "–"],
    [
      "checkpoint",
      m === undefined || run.manifestPath === undefined
        ? "none"
        : `${run.manifestPath.split("/").at(-1)} (epoch ${m.epoch + 1}, step ${m.step}/${m.stepsPerEpoch}${
          m.createdAt ? `, ${m.createdAt}` : ""
        })`,
    ],
    ["generated", (options.generated ?? new Date()).toISOString()],
  ].map(([k, v]) => `<p class="meta">${esc(k!)}: <b>${esc(v!)}</b></p>`).join("");

  const notes = run.notes.length === 0
    ? ""
    : `<ul class="notes">${run.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>`;

  const estep = run.estep;
  const clusterings = estep === undefined
    ? `<p class="none">No clusterings to show: the run has no E-step artifacts and no prototypes in its newest ` +
      `checkpoint (it has not got past warm-up, or it trains without prototypes).</p>`
    : `<p>From ${esc(estep.source === "artifact" ? "the concentration artifact" : "the checkpoint")} <code>${
      esc(estep.file)
    }</code>: the E-step that opened epoch ${estep.epoch + 1}.</p>` +
      estep.clusterings.map((c, i) => clusteringSection(c, i, run.dataset, galleryOptions, charts)).join("");

  const evaluationHtml = evaluation.length === 0
    ? `<p class="none">No evaluation in metrics.jsonl (none was run, or the run predates evaluation).</p>`
    : `<div class="grid">${evaluation.map(chartBox).join("")}</div>`;

  const data = JSON.stringify({ charts }).replace(/</g, "\\u003c");
  const library = scriptText(chartLib.source.replace(/^\/\/# sourceMappingURL=.*$/gm, ""));
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(name)} — PCL run report</title>
<style>${CSS}</style>
</head>
<body>
<header>
<h1>PCL run report: ${esc(name)}</h1>
${meta}
</header>
${notes}
<section id="summary">
<h2>Final numbers</h2>
${summary(run.metrics, ks, config?.epochs)}
${run.metrics.length > 0 ? allEpochs(run.metrics, ks) : ""}
</section>
<section id="training">
<h2>Training</h2>
<p class="hint">Per-epoch means of the training steps; epochs are numbered from 1, as the progress line does
(the files metrics.jsonl, checkpoints/ and artifacts/ count from 0).</p>
<div class="grid">${training.map(chartBox).join("")}</div>
</section>
<section id="evaluation">
<h2>Evaluation</h2>
${evaluationHtml}
</section>
<section id="clusterings">
<h2>Clusterings and prototypes</h2>
${clusterings}
</section>
<section id="config">
<h2>Configuration</h2>
<p class="meta">adapter: <b>${esc(m?.adapter ?? "–")}</b></p>
<pre>${esc(config === undefined ? "(no checkpoint manifest)" : JSON.stringify(config, null, 2))}</pre>
</section>
<footer>Charts drawn by ${esc(chartLib.name)} (MIT licence), inlined in this page.</footer>
<script>${library}</script>
<script type="application/json" id="report-data">${data}</script>
<script>${INIT}</script>
</body>
</html>
`;
};
