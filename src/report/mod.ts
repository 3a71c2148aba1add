/**
 * The run report: `renderReport(dir)` reads a training run directory and writes `dir/report.html`, one
 * self-contained page (curves, evaluation, cluster histograms, prototype galleries, config) that opens offline.
 */
import { Effect } from "effect";
import { loadRun, ReportError } from "./data.ts";
import type { GalleryOptions } from "./gallery.ts";
import { type ChartLibrary, reportHtml } from "./render.ts";
import { writeFileAtomic } from "../io/atomic.ts";

export { type LoadOptions, loadRun, ReportError, type RunData } from "./data.ts";
export { type ChartLibrary, type PageOptions, reportHtml, tablePage } from "./render.ts";
export { GALLERY_DEFAULTS, type GalleryOptions } from "./gallery.ts";

export const CHART_JS_VERSION = "4.6.1";

/**
 * Chart.js's UMD build (one file, no imports, defines the global `Chart`), read from the installed npm package. The
 * package does not export `dist/chart.umd.js`, so it is found beside the module its main entry resolves to.
 */
export const chartLibrary: Effect.Effect<ChartLibrary, ReportError> = Effect.tryPromise({
  try: async () => {
    // Installs the package under node_modules, so that it resolves to a file.
    await import("chart.js");
    const url = new URL("chart.umd.js", import.meta.resolve("chart.js"));
    const source = await Deno.readTextFile(url);
    if (!source.includes(`Chart.js v${CHART_JS_VERSION}`)) {
      throw new Error(`${url} is not Chart.js ${CHART_JS_VERSION}`);
    }
    return { source, name: `Chart.js ${CHART_JS_VERSION}` };
  },
  catch: (e) =>
    new ReportError({ path: "npm:chart.js", message: `cannot read Chart.js's UMD build: ${(e as Error).message}` }),
});

export interface ReportOptions {
  /** Where to write the page; default `<dir>/report.html`. */
  readonly out?: string;
  readonly gallery?: GalleryOptions;
  /** Reload the training images for the prototype galleries (default true; see `LoadOptions`). */
  readonly images?: boolean;
}

/** Writes the report of the run in `dir` and returns the page's path. */
export const renderReport = (dir: string, options: ReportOptions = {}): Effect.Effect<string, ReportError> =>
  Effect.gen(function* () {
    const run = yield* loadRun(dir, options.images === undefined ? {} : { images: options.images });
    const library = yield* chartLibrary;
    const html = reportHtml(run, library, options.gallery === undefined ? {} : { gallery: options.gallery });
    const out = options.out ?? `${dir}/report.html`;
    yield* Effect.tryPromise({
      try: () => writeFileAtomic(out, html),
      catch: (e) => new ReportError({ path: out, message: `cannot write ${out}: ${(e as Error).message}` }),
    });
    return out;
  });
