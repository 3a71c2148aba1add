/**
 * Writes `path` through `path.tmp`, flushed to disk, then renamed over `path`: a crash leaves the old file or the new
 * one, never half of one. Every file the project writes for later (checkpoints, artifacts, exports, reports) goes
 * through here.
 */
export const writeFileAtomic = async (path: string, data: Uint8Array | string): Promise<void> => {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const file = await Deno.open(`${path}.tmp`, { write: true, create: true, truncate: true });
  try {
    for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(`${path}.tmp`, path);
};
