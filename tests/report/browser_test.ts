/**
 * The report in a real browser: headless Chromium (Debian's `chromium`), driven over the DevTools protocol through
 * a pipe. The page must load offline with no console error, draw every chart, show every gallery
 * image, and fetch nothing but itself and its data: URIs. A full-page screenshot is written beside the report.
 */
import assert from "node:assert/strict";
import { Effect, References } from "effect";
import { decode as decodePng } from "fast-png";
import { decodeConfig } from "../../src/config.ts";
import { Gpu } from "../../src/gpu/gpu.ts";
import { train } from "../../src/pcl/train.ts";
import { renderReport } from "../../src/report/mod.ts";
import { tinyConfig } from "../pcl/tiny.ts";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = await Deno.stat(CHROMIUM).then((s) => s.isFile, () => false);

type Message = { id?: number; method?: string; params?: Record<string, unknown>; sessionId?: string } & {
  result?: Record<string, unknown>;
  error?: { message: string };
};

/**
 * Chromium with a throw-away profile, spoken to over `--remote-debugging-pipe`: DevTools-protocol messages as JSON
 * ended by a NUL byte, read from its fd 3 and written to its fd 4 (a shell maps them onto our stdin and stdout).
 * No port is opened, so the test needs no network permission. Flat mode: the page's session id rides on each message.
 */
class Chromium {
  #next = 0;
  #pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #waiters: Array<{ method: string; resolve: () => void }> = [];
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reading: Promise<void>;
  readonly events: Message[] = [];
  sessionId: string | undefined;

  private constructor(private readonly child: Deno.ChildProcess, private readonly profile: string) {
    this.#writer = child.stdin.getWriter();
    this.#reading = (async () => {
      let buffered = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        const parts = (buffered + chunk).split("\0");
        buffered = parts.pop()!;
        for (const part of parts) this.#dispatch(JSON.parse(part) as Message);
      }
    })();
  }

  static async launch(): Promise<Chromium> {
    const profile = await Deno.makeTempDir({ prefix: "pcl-chromium-" });
    const flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
      .concat(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
      .concat(["--remote-debugging-pipe", `--user-data-dir=${profile}`, "about:blank"]);
    const child = new Deno.Command("/bin/sh", {
      args: ["-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', CHROMIUM, ...flags],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    return new Chromium(child, profile);
  }

  #dispatch(m: Message) {
    if (m.id !== undefined) {
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if (m.error) p?.reject(new Error(`CDP: ${m.error.message}`));
      else p?.resolve(m.result ?? {});
      return;
    }
    this.events.push(m);
    this.#waiters = this.#waiters.filter((w) => (w.method === m.method ? (w.resolve(), false) : true));
  }

  send(method: string, params: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const id = ++this.#next;
    const message = { id, method, params, ...(this.sessionId ? { sessionId: this.sessionId } : {}) };
    this.#writer.write(new TextEncoder().encode(JSON.stringify(message) + "\0"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CDP ${method}: no answer in ${timeoutMs} ms`)), timeoutMs);
      this.#pending.set(id, {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  /** Resolves on the next event named `method`. Register before the command that causes it. */
  next(method: string, timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CDP: no ${method} in ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({ method, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }

  /** Closing the pipe ends the browser; SIGKILL after 10 s if it hangs. */
  async close() {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await this.child.status;
    clearTimeout(timer);
    await this.#reading.catch(() => {});
    await Deno.remove(this.profile, { recursive: true }).catch(() => {});
  }
}

/** What the page reports about itself once loaded. */
const PROBE = `(async () => {
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const canvases = [...document.querySelectorAll("canvas")].map((c) => {
    const chart = typeof Chart === "undefined" ? undefined : Chart.getChart(c);
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let painted = 0, data = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
    if (chart) {
      // Pixels of a dataset's colour inside the plot area (the legend's swatches lie outside it).
      const colours = chart.data.datasets.map((s) => rgb(s.borderColor));
      const a = chart.chartArea, r = devicePixelRatio;
      for (let y = Math.ceil(a.top * r); y < Math.floor(a.bottom * r); y++) {
        for (let x = Math.ceil(a.left * r); x < Math.floor(a.right * r); x++) {
          const i = 4 * (y * c.width + x);
          if (d[i + 3] > 128 && colours.some((k) => Math.abs(d[i] - k[0]) + Math.abs(d[i + 1] - k[1]) + Math.abs(d[i + 2] - k[2]) < 40)) data++;
        }
      }
    }
    return { id: c.id, pixels: c.width * c.height, painted, data, chart: !!chart };
  });
  const images = [...document.images].map((i) => ({ complete: i.complete, width: i.naturalWidth }));
  const charts = JSON.parse(document.getElementById("report-data").textContent).charts.map((c) => c.id);
  return { canvases, images, charts, height: document.documentElement.scrollHeight };
})()`;

Deno.test({
  name: "report: the page loads offline in Chromium, draws every chart and gallery image, logs no error" +
    (hasChromium ? "" : ` (skipped: ${CHROMIUM} is missing; apt-get install chromium)`),
  ignore: !hasChromium,
  fn: async () => {
    const config = await Effect.runPromise(decodeConfig(tinyConfig));
    const dir = await Deno.makeTempDir({ prefix: "pcl-report-browser-" });
    await Effect.runPromise(
      train(config, { out: dir }).pipe(
        Effect.provide(Gpu.layer),
        Effect.provideService(References.MinimumLogLevel, "Error"),
      ),
    );
    // An evaluation and E-step scores on the last epoch, so that their charts are drawn too.
    const lines = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
    lines.at(-1).evaluation = {
      knn: { k20: 0.5, k200: 0.45 },
      linear: 0.6,
      clustering: { ami: 0.3, nmi: 0.35, ari: 0.2, acc: 0.4 },
    };
    lines.at(-1).estep = [3, 5].map((k) => ({ k, ami: 0.2, nmi: 0.25, ari: 0.1, acc: 0.3 }));
    await Deno.writeTextFile(`${dir}/metrics.jsonl`, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    const page = await Effect.runPromise(renderReport(dir));
    const html = await Deno.readTextFile(page);
    const galleryImages = html.match(/<img src="data:image\/png;base64,/g)?.length ?? 0;
    assert.ok(galleryImages > 0, "the report has gallery images");

    const browser = await Chromium.launch();
    try {
      const { targetId } = await browser.send("Target.createTarget", { url: "about:blank" });
      const { sessionId } = await browser.send("Target.attachToTarget", { targetId, flatten: true });
      browser.sessionId = sessionId as string;
      for (const domain of ["Page", "Runtime", "Log", "Network"]) await browser.send(`${domain}.enable`);
      await browser.send("Emulation.setDeviceMetricsOverride", {
        width: 1280,
        height: 900,
        deviceScaleFactor: 1,
        mobile: false,
      });
      const loaded = browser.next("Page.loadEventFired");
      await browser.send("Page.navigate", { url: `file://${page}` });
      await loaded;
      const probe = await browser.send("Runtime.evaluate", {
        expression: PROBE,
        awaitPromise: true,
        returnByValue: true,
      });
      const state = (probe.result as { value: Record<string, unknown> }).value as {
        canvases: { id: string; pixels: number; painted: number; data: number; chart: boolean }[];
        images: { complete: boolean; width: number }[];
        charts: string[];
        height: number;
      };

      const errors = browser.events.filter((e) =>
        e.method === "Runtime.exceptionThrown" ||
        (e.method === "Runtime.consoleAPICalled" && ["error", "assert"].includes(e.params?.type as string)) ||
        (e.method === "Log.entryAdded" && (e.params?.entry as { level: string }).level === "error")
      );
      assert.deepEqual(errors.map((e) => JSON.stringify(e.params).slice(0, 300)), [], "console errors");
      const requested = browser.events.filter((e) => e.method === "Network.requestWillBeSent")
        .map((e) => (e.params?.request as { url: string }).url);
      assert.deepEqual(
        requested.filter((u) => !/^(file|data):/.test(u)),
        [],
        "the page fetches nothing from a network",
      );

      assert.deepEqual(state.canvases.map((c) => c.id), state.charts, "one canvas per chart, in order");
      assert.ok(state.charts.includes("chart-eval-accuracy") && state.charts.includes("chart-estep-ami"));
      for (const c of state.canvases) {
        assert.ok(c.chart, `${c.id}: a Chart is attached`);
        // Axes and labels colour a few percent of a canvas, the data's colours show inside the plot area.
        assert.ok(c.painted > 0.01 * c.pixels, `${c.id}: ${c.painted} of ${c.pixels} pixels painted`);
        assert.ok(c.data >= 5, `${c.id}: ${c.data} pixels of the data's colours in the plot area`);
      }
      assert.equal(state.images.length, galleryImages);
      for (const [i, im] of state.images.entries()) assert.ok(im.complete && im.width > 0, `image ${i} decoded`);

      await browser.send("Emulation.setDeviceMetricsOverride", {
        width: 1280,
        height: Math.min(state.height, 12_000),
        deviceScaleFactor: 1,
        mobile: false,
      });
      await browser.send("Runtime.evaluate", {
        expression: "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))",
        awaitPromise: true,
      });
      const shot = await browser.send("Page.captureScreenshot", { format: "png" });
      const png = Uint8Array.from(atob(shot.data as string), (c) => c.charCodeAt(0));
      await Deno.writeFile(`${dir}/report.png`, png);
      assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature");
      const decoded = decodePng(png);
      assert.equal(decoded.width, 1280);
      assert.equal(decoded.height, Math.min(state.height, 12_000));
      console.log(`screenshot: ${dir}/report.png`);
    } finally {
      await browser.close();
    }
  },
});

if (!hasChromium) console.warn(`${CHROMIUM} is missing: the browser test is skipped (apt-get install chromium)`);
