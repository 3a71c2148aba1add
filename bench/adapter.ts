// The WebGPU adapter this machine gives Deno: its description, features and every limit (the adapter's maxima),
// and the kernel choices the project makes for it. bench/device.sh records it first.
// Run: deno run --allow-read --allow-env bench/adapter.ts
import { Effect, References } from "effect";
import { Gpu } from "../src/gpu/gpu.ts";

const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
if (adapter === null) {
  console.log("no WebGPU adapter");
  Deno.exit(1);
}
const { vendor, architecture, device, description } = adapter.info;
console.log(`adapter: ${description || device} (vendor ${vendor}, architecture ${architecture})`);
console.log(`features: ${[...adapter.features].sort().join(", ")}`);
const limits = adapter.limits as unknown as Record<string, number>;
const names: string[] = [];
for (const name in limits) names.push(name); // WebIDL attributes: enumerable getters on the prototype
for (const name of names.sort()) console.log(`  ${name.padEnd(44)} ${limits[name]}`);
await Effect.runPromise(
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    console.log(`the project's device: ${JSON.stringify(gpu.adapter)}; tuning ${JSON.stringify(gpu.tuning)}`);
  }).pipe(Effect.provide(Gpu.layer), Effect.provideService(References.MinimumLogLevel, "Warn")),
);
