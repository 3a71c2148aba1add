/**
 * The report's charts as Chart.js configurations: plain JSON (no callbacks), embedded in the page as data and handed
 * to `new Chart(canvas, config)` there. Curves are {x: epoch, y} points, so a series that starts late (ProtoNCE after
 * warm-up) or has holes (evaluation every few epochs, a NaN written as null) needs no padding. Fractions are shown as
 * percentages.
 */
import type { EpochRecord } from "./data.ts";

export interface ChartSpec {
  /** The canvas id (unique in the page). */
  readonly id: string;
  readonly title: string;
  readonly config: ChartConfig;
}

export interface ChartConfig {
  readonly type: "line" | "bar";
  readonly data: {
    readonly labels?: ReadonlyArray<string>;
    readonly datasets: ReadonlyArray<Dataset>;
  };
  readonly options: Record<string, unknown>;
}

export interface Dataset {
  readonly label: string;
  readonly data: ReadonlyArray<Point> | ReadonlyArray<number>;
  readonly borderColor: string;
  readonly backgroundColor: string;
  readonly [option: string]: unknown;
}

export interface Point {
  readonly x: number;
  readonly y: number | null;
}

/** Tableau 10: distinct, and readable on white. Series of the same clustering share a colour across charts. */
export const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];

const color = (i: number) => PALETTE[i % PALETTE.length]!;

/** The colour of clustering m (index 0 is InfoNCE's / the instance task's). */
export const clusteringColor = (m: number) => color(m + 1);

export const percent = (v: number | null | undefined): number | null =>
  v === null || v === undefined || !Number.isFinite(v) ? null : 100 * v;

const finite = (v: number | null | undefined): number | null =>
  v === null || v === undefined || !Number.isFinite(v) ? null : v;

interface Series {
  readonly label: string;
  readonly color: string;
  readonly points: ReadonlyArray<Point>;
  readonly dashed?: boolean;
}

/** Points of `value` over the epochs where it is defined (undefined: no point; null: a gap). */
const over = (metrics: ReadonlyArray<EpochRecord>, value: (m: EpochRecord) => number | null | undefined): Point[] =>
  metrics.flatMap((m) => {
    const y = value(m);
    return y === undefined ? [] : [{ x: m.epoch + 1, y: finite(y) }];
  });

/** The epochs of the run, so that every curve chart spans the same x range (one epoch: Chart.js's default). */
const epochRange = (metrics: ReadonlyArray<EpochRecord>) => {
  const first = metrics[0]?.epoch, last = metrics.at(-1)?.epoch;
  return first !== undefined && last !== undefined && last > first ? { min: first + 1, max: last + 1 } : {};
};

const lineChart = (
  id: string,
  title: string,
  yTitle: string,
  x: Record<string, unknown>,
  series: ReadonlyArray<Series>,
  y: Record<string, unknown> = {},
): ChartSpec => ({
  id,
  title,
  config: {
    type: "line",
    data: {
      datasets: series.filter((s) => s.points.length > 0).map((s) => ({
        label: s.label,
        data: s.points,
        borderColor: s.color,
        backgroundColor: s.color,
        borderWidth: 1.5,
        pointRadius: 2.5,
        clip: 5, // whole points at the first and last epoch, not halves cut by the plot area
        ...(s.dashed ? { borderDash: [5, 3] } : {}),
      })),
    },
    options: {
      scales: {
        x: { type: "linear", title: { display: true, text: "epoch" }, ticks: { precision: 0 }, ...x },
        y: { title: { display: true, text: yTitle }, ...y },
      },
      plugins: { legend: { labels: { boxWidth: 12 } } },
    },
  },
});

const kLabel = (ks: readonly number[], m: number) => (ks[m] !== undefined ? `K=${ks[m]}` : `clustering ${m}`);

/** The number of clusterings the records mention (ProtoNCE values, E-step scores). */
const clusteringsIn = (metrics: ReadonlyArray<EpochRecord>) =>
  Math.max(0, ...metrics.map((m) => Math.max(m.protoNce.length, m.accProto.length)));

/** Losses, accuracies, learning rate and throughput per epoch. `ks`: the K of each clustering, for the legends. */
export const trainingCharts = (metrics: ReadonlyArray<EpochRecord>, ks: readonly number[]): ChartSpec[] => {
  const clusterings = Array.from({ length: clusteringsIn(metrics) }, (_, m) => m);
  const x = epochRange(metrics);
  return [
    lineChart("chart-loss", "Losses", "loss", x, [
      { label: "InfoNCE", color: color(0), points: over(metrics, (e) => e.infoNce) },
      ...clusterings.map((m) => ({
        label: `ProtoNCE ${kLabel(ks, m)}`,
        color: clusteringColor(m),
        points: over(metrics, (e) => e.protoNce[m]),
      })),
    ]),
    lineChart("chart-accuracy", "Training accuracies", "accuracy (%)", x, [
      { label: "Acc@Inst", color: color(0), points: over(metrics, (e) => percent(e.accInst)) },
      ...clusterings.map((m) => ({
        label: `Acc@Proto ${kLabel(ks, m)}`,
        color: clusteringColor(m),
        points: over(metrics, (e) => (e.accProto[m] === undefined ? undefined : percent(e.accProto[m]))),
      })),
    ], { min: 0, max: 100 }),
    lineChart("chart-lr", "Learning rate", "lr", x, [
      { label: "lr", color: color(0), points: over(metrics, (e) => e.lr) },
    ], { min: 0 }),
    lineChart("chart-throughput", "Throughput", "images / s", x, [
      { label: "images/s", color: color(4), points: over(metrics, (e) => e.imagesPerSecond) },
    ], { min: 0 }),
  ];
};

/** kNN / linear accuracy and clustering scores of the evaluations, and the E-step's AMI; none when absent. */
export const evaluationCharts = (metrics: ReadonlyArray<EpochRecord>, ks: readonly number[]): ChartSpec[] => {
  const charts: ChartSpec[] = [];
  const x = epochRange(metrics);
  const ev = (f: (e: NonNullable<EpochRecord["evaluation"]>) => number | null | undefined) =>
    over(metrics, (m) => {
      if (m.evaluation === undefined) return undefined;
      const v = f(m.evaluation);
      return v === undefined ? undefined : percent(v);
    });
  const accuracy = [
    { label: "kNN k=20", color: color(0), points: ev((e) => e.knn?.k20) },
    { label: "kNN k=200", color: color(1), points: ev((e) => e.knn?.k200) },
    { label: "linear", color: color(2), points: ev((e) => e.linear) },
  ];
  if (accuracy.some((s) => s.points.length > 0)) {
    charts.push(lineChart("chart-eval-accuracy", "Evaluation: kNN and linear accuracy", "accuracy (%)", x, accuracy, {
      min: 0,
      max: 100,
    }));
  }
  const scores = (["ami", "nmi", "ari", "acc"] as const).map((s, i) => ({
    label: s.toUpperCase(),
    color: color(3 + i),
    points: ev((e) => e.clustering?.[s]),
  }));
  if (scores.some((s) => s.points.length > 0)) {
    charts.push(lineChart("chart-eval-clustering", "Evaluation: clustering vs labels", "score (%)", x, scores, {
      min: 0,
      max: 100,
    }));
  }
  const estepKs = [...new Set(metrics.flatMap((m) => (m.estep ?? []).map((s) => s.k)))].sort((a, b) => a - b);
  if (estepKs.length > 0) {
    charts.push(lineChart(
      "chart-estep-ami",
      "E-step clusterings: AMI vs labels",
      "AMI (%)",
      x,
      estepKs.map((k) => {
        const m = ks.indexOf(k);
        return {
          label: `K=${k}`,
          color: m >= 0 ? clusteringColor(m) : color(estepKs.indexOf(k) + 1),
          points: over(metrics, (e) => {
            const s = e.estep?.find((s) => s.k === k);
            return s === undefined ? undefined : percent(s.ami);
          }),
        };
      }),
      { min: 0, max: 100 },
    ));
  }
  return charts;
};

export interface Histogram {
  /** Each bin's range as text. */
  readonly labels: string[];
  readonly counts: number[];
}

/** Bins for K values: about 2√K of them, between 5 and `maxBins`. */
export const binCount = (n: number, maxBins = 30) => Math.min(maxBins, Math.max(5, Math.ceil(2 * Math.sqrt(n))));

const fmt = (v: number) => Number(v.toPrecision(3)).toString();

/**
 * A histogram of `values` over [min, max] in equal bins (the last one closed). `integer`: bins hold whole numbers
 * (cluster sizes), one value per bin when the range allows it.
 */
export const histogram = (values: ArrayLike<number>, integer: boolean, bins = binCount(values.length)): Histogram => {
  const xs = Array.from(values).filter(Number.isFinite);
  if (xs.length === 0) return { labels: [], counts: [] };
  const lo = xs.reduce((a, b) => Math.min(a, b)), hi = xs.reduce((a, b) => Math.max(a, b)); // K may be 100k: no spread
  if (integer) {
    const width = Math.max(1, Math.ceil((hi - lo + 1) / bins));
    const n = Math.ceil((hi - lo + 1) / width);
    const counts = new Array<number>(n).fill(0);
    for (const v of xs) counts[Math.floor((v - lo) / width)]! += 1;
    const labels = counts.map((_, i) => {
      const a = lo + i * width, b = Math.min(hi, a + width - 1);
      return a === b ? `${a}` : `${a}–${b}`;
    });
    return { labels, counts };
  }
  if (hi === lo) return { labels: [fmt(lo)], counts: [xs.length] };
  const width = (hi - lo) / bins;
  const counts = new Array<number>(bins).fill(0);
  for (const v of xs) counts[Math.min(bins - 1, Math.floor((v - lo) / width))]! += 1;
  return { labels: counts.map((_, i) => `${fmt(lo + i * width)}–${fmt(lo + (i + 1) * width)}`), counts };
};

/** A histogram as a bar chart. */
export const histogramChart = (
  id: string,
  title: string,
  xTitle: string,
  h: Histogram,
  barColor: string,
): ChartSpec => ({
  id,
  title,
  config: {
    type: "bar",
    data: {
      labels: h.labels,
      datasets: [{
        label: "clusters",
        data: h.counts,
        borderColor: barColor,
        backgroundColor: barColor,
        categoryPercentage: 1,
        barPercentage: 0.95,
      }],
    },
    options: {
      scales: {
        x: { title: { display: true, text: xTitle } },
        y: { title: { display: true, text: "clusters" }, beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: { display: false } },
    },
  },
});
