import type { GpuContext } from "./gpu.ts";
import { Tensor } from "./tensor.ts";

/**
 * GPU-side timing of compute passes with timestamp queries, where the adapter has them (`GpuTimer.create` gives
 * undefined otherwise: time on the host then). Each timed pass writes a begin and an end timestamp.
 */
export class GpuTimer {
  private readonly labels: string[] = [];
  private readonly resolved: Tensor<"u32">;

  private constructor(
    private readonly gpu: GpuContext,
    private readonly querySet: GPUQuerySet,
    readonly capacity: number,
  ) {
    const buffer = gpu.device.createBuffer({
      label: "timer resolve",
      size: capacity * 16,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    this.resolved = new Tensor(buffer, [capacity * 4], "u32");
  }

  static create(gpu: GpuContext, capacity = 64): GpuTimer | undefined {
    if (!gpu.adapter.timestamps) return undefined;
    const querySet = gpu.device.createQuerySet({ label: "timer", type: "timestamp", count: capacity * 2 });
    return new GpuTimer(gpu, querySet, capacity);
  }

  /** Begins a compute pass whose start and end are timestamped under `label`. */
  beginPass(enc: GPUCommandEncoder, label: string): GPUComputePassEncoder {
    const i = this.labels.length;
    if (i >= this.capacity) throw new RangeError(`GpuTimer: more than ${this.capacity} timed passes; call reset()`);
    this.labels.push(label);
    return enc.beginComputePass({
      label,
      timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
  }

  /** Resolves the timestamps into a buffer; record into the last encoder before submitting it. */
  resolve(enc: GPUCommandEncoder): void {
    const n = this.labels.length * 2;
    if (n > 0) enc.resolveQuerySet(this.querySet, 0, n, this.resolved.buffer, 0);
  }

  /** Milliseconds per timed pass, in the order they were begun. Clears the labels for the next round. */
  async read(): Promise<Array<{ readonly label: string; readonly ms: number }>> {
    const labels = this.labels.splice(0);
    const enc = this.gpu.device.createCommandEncoder({ label: "timer read" });
    const pending = this.gpu.readAfter(enc, this.resolved);
    this.gpu.device.queue.submit([enc.finish()]);
    const words = await pending();
    return labels.map((label, i) => {
      const t0 = BigInt(words[4 * i]) | (BigInt(words[4 * i + 1]) << 32n);
      const t1 = BigInt(words[4 * i + 2]) | (BigInt(words[4 * i + 3]) << 32n);
      return { label, ms: Number(t1 - t0) / 1e6 };
    });
  }
}
