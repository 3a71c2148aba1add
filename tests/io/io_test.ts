import assert from "node:assert/strict";
import { Effect } from "effect";
import { formatNpy, NpyError, parseNpy, readNpy, readNpyMatrix, writeNpy } from "../../src/io/npy.ts";
import {
  formatSafetensors,
  parseSafetensors,
  readSafetensors,
  type SafeTensor,
  SafetensorsError,
  writeSafetensors,
} from "../../src/io/safetensors.ts";
import { effectTest, randoms, tempDir } from "../helpers.ts";

const ascii = (s: string) => new TextEncoder().encode(s);

/** A .npy file written the way NumPy writes it, for dtypes our writer does not produce ('<i8'). */
const handMadeNpy = (descr: string, shape: string, data: Uint8Array, version = 1) => {
  const prefix = version === 1 ? 10 : 12;
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
  const header = dict.padEnd(total - prefix - 1) + "\n";
  const out = new Uint8Array(total + data.length);
  out.set([0x93, ...ascii("NUMPY"), version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  out.set(ascii(header), prefix);
  out.set(data, total);
  return out;
};

Deno.test("npy: float32, int32 and uint8 round-trip, header aligned to 64 bytes as NumPy writes it", () => {
  const f = { shape: [3, 5], data: randoms(15, 1) };
  const bytes = formatNpy(f);
  const headerEnd = new DataView(bytes.buffer).getUint16(8, true) + 10;
  assert.equal(headerEnd % 64, 0);
  assert.equal(bytes[headerEnd - 1], 0x0a); // the header ends in a newline
  const back = parseNpy(bytes, "f.npy");
  assert.equal(back.dtype, "<f4");
  assert.deepEqual(back.shape, [3, 5]);
  assert.deepEqual(back.data, f.data);
  const i = parseNpy(formatNpy({ shape: [4], data: Int32Array.of(-1, 0, 7, 2 ** 31 - 1) }), "i.npy");
  assert.equal(i.dtype, "<i4");
  assert.deepEqual(i.shape, [4]);
  assert.deepEqual(i.data, Int32Array.of(-1, 0, 7, 2 ** 31 - 1));
  const u = parseNpy(formatNpy({ shape: [2, 1, 3], data: Uint8Array.of(0, 1, 2, 253, 254, 255) }), "u.npy");
  assert.equal(u.dtype, "|u1");
  assert.deepEqual(u.shape, [2, 1, 3]);
  assert.deepEqual(u.data, Uint8Array.of(0, 1, 2, 253, 254, 255));
  const scalar = parseNpy(formatNpy({ shape: [], data: Float32Array.of(2.5) }), "s.npy");
  assert.deepEqual(scalar.shape, []);
  assert.deepEqual(scalar.data, Float32Array.of(2.5));
});

Deno.test("npy: reads int64 and version 2.0 headers", () => {
  const values = BigInt64Array.of(-3n, 0n, 2n ** 40n);
  const v1 = parseNpy(handMadeNpy("<i8", "(3,)", new Uint8Array(values.buffer)), "a.npy");
  assert.equal(v1.dtype, "<i8");
  assert.deepEqual(v1.data, values);
  const f = Float32Array.of(1, 2, 3, 4);
  const v2 = parseNpy(handMadeNpy("<f4", "(2, 2)", new Uint8Array(f.buffer), 2), "b.npy");
  assert.deepEqual(v2.shape, [2, 2]);
  assert.deepEqual(v2.data, f);
});

const npyFails = (bytes: Uint8Array, pattern: RegExp) => {
  assert.throws(() => parseNpy(bytes, "bad.npy"), (e: unknown) => {
    assert.ok(e instanceof NpyError, `not an NpyError: ${e}`);
    assert.equal(e.file, "bad.npy");
    assert.match(e.message, /^bad\.npy: /);
    assert.match(e.message, pattern);
    return true;
  });
};

Deno.test("npy: truncated, wrong magic, wrong dtype, Fortran order and trailing bytes are typed errors", () => {
  const good = formatNpy({ shape: [2, 3], data: randoms(6, 2) });
  npyFails(good.subarray(0, good.length - 1), /truncated: .*needs 24 data bytes, found 23/);
  npyFails(good.subarray(0, 40), /truncated: the header needs 128 bytes/);
  npyFails(good.subarray(0, 4), /too short/);
  npyFails(Uint8Array.from([0x50, 0x4b, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]), /wrong magic/);
  npyFails(handMadeNpy("<f8", "(2,)", new Uint8Array(16)), /unsupported dtype '<f8'/);
  npyFails(handMadeNpy(">f4", "(2,)", new Uint8Array(8)), /unsupported dtype '>f4'/);
  const fortran = handMadeNpy("<f4", "(2, 2)", new Uint8Array(16));
  fortran.set(ascii("True, "), fortran.indexOf(0x46)); // 'F' of False (same length header)
  npyFails(fortran, /Fortran-order/);
  const extra = new Uint8Array(good.length + 4);
  extra.set(good);
  npyFails(extra, /4 bytes after the data/);
});

effectTest(
  "npy: files on disk; a missing file and a non-matrix are typed errors naming the file",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-");
    const file = `${dir}/x.npy`;
    yield* writeNpy(file, { shape: [2, 2], data: Float32Array.of(1, 2, 3, 4) });
    const m = yield* readNpyMatrix(file);
    assert.deepEqual(m.shape, [2, 2]);
    assert.deepEqual(m.data, Float32Array.of(1, 2, 3, 4));
    const missing = yield* Effect.flip(readNpy(`${dir}/none.npy`));
    assert.ok(missing instanceof NpyError);
    assert.match(missing.message, /none\.npy: cannot read/);
    yield* writeNpy(`${dir}/v.npy`, { shape: [3], data: Float32Array.of(1, 2, 3) });
    const notMatrix = yield* Effect.flip(readNpyMatrix(`${dir}/v.npy`));
    assert.match(notMatrix.message, /v\.npy: expected a 2-D float32 array, found <f4 \(3\)/);
  }),
);

const sample = (): Map<string, SafeTensor> =>
  new Map<string, SafeTensor>([
    ["k3.labels", { dtype: "U8", shape: [5], data: Uint8Array.of(1, 2, 3, 4, 5) }],
    ["k3.centroids", { dtype: "F32", shape: [3, 2], data: randoms(6, 3) }],
    ["k3.im2cluster", { dtype: "I32", shape: [4], data: Int32Array.of(0, 2, 1, 2) }],
    ["big", { dtype: "I64", shape: [2], data: BigInt64Array.of(-1n, 2n ** 50n) }],
    ["empty", { dtype: "F32", shape: [0, 4], data: new Float32Array(0) }],
    ["wide", { dtype: "F64", shape: [1, 2], data: Float64Array.of(Math.PI, -0) }],
    ["indices", { dtype: "U32", shape: [2], data: Uint32Array.of(0, 2 ** 32 - 1) }],
    ["short", { dtype: "I16", shape: [3], data: Int16Array.of(-3, 0, 3) }],
    ["ushort", { dtype: "U16", shape: [1], data: Uint16Array.of(65535) }],
    ["byte", { dtype: "I8", shape: [2], data: Int8Array.of(-128, 127) }],
  ]);

Deno.test("safetensors: round-trip of every dtype (F64 to U8) and metadata; layout as the format requires", () => {
  const bytes = formatSafetensors(sample(), { format: "test", json: '{"a":1}' });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0); // header padded with spaces to 8 bytes
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.deepEqual(header.__metadata__, { format: "test", json: '{"a":1}' });
  assert.deepEqual(header["k3.centroids"].shape, [3, 2]);
  const sizes = { "k3.centroids": 4, "k3.im2cluster": 4, big: 8, wide: 8, indices: 4, short: 2, ushort: 2 };
  for (const [name, size] of Object.entries(sizes)) {
    assert.equal(header[name].data_offsets[0] % size, 0, `${name} is aligned to its element size`);
  }
  const back = parseSafetensors(bytes, "t.safetensors");
  assert.deepEqual([...back.tensors.keys()], [...sample().keys()]);
  for (const [name, t] of sample()) assert.deepEqual(back.tensors.get(name), t, name);
  assert.deepEqual(back.metadata, { format: "test", json: '{"a":1}' });
});

const stFails = (bytes: Uint8Array, pattern: RegExp) => {
  assert.throws(() => parseSafetensors(bytes, "bad.safetensors"), (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `not a SafetensorsError: ${e}`);
    assert.equal(e.file, "bad.safetensors");
    assert.match(e.message, /^bad\.safetensors: /);
    assert.match(e.message, pattern);
    return true;
  });
};

/** A file with this header text (padded) and `data` bytes. */
const withHeader = (header: string, data = new Uint8Array(0)) => {
  const h = ascii(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
};

Deno.test("safetensors: truncated files, bad headers, bad offsets and dtypes are typed errors naming the file", () => {
  const good = formatSafetensors(sample());
  stFails(good.subarray(0, 5), /truncated: 5 bytes/);
  stFails(good.subarray(0, 30), /truncated: the header needs/);
  stFails(good.subarray(0, good.length - 3), /truncated: the tensors need \d+ data bytes/);
  stFails(withHeader("[1, 2]"), /bad header: not a JSON object/);
  stFails(withHeader("{not json"), /bad header/);
  stFails(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]), /over the format's limit/);
  stFails(withHeader('{"x": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}', new Uint8Array(2)), /F16/);
  stFails(
    withHeader('{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', new Uint8Array(4)),
    /do not hold F32 \[2\]/,
  );
  stFails(
    withHeader('{"x": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}', new Uint8Array(6)),
    /out of range: tensor 'x' starts at 4, expected 0/,
  );
  stFails(
    withHeader('{"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}', new Uint8Array(5)),
    /out of range: 3 bytes after the last tensor/,
  );
  stFails(withHeader('{"__metadata__": {"a": 1}}'), /__metadata__ must map names to strings/);
  stFails(withHeader('{"x": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}'), /shape \[-1\]/);
});

effectTest(
  "safetensors: files on disk, written atomically; a missing file is a typed error",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-");
    const file = `${dir}/p.safetensors`;
    yield* writeSafetensors(file, sample(), { a: "b" });
    const back = yield* readSafetensors(file);
    assert.deepEqual(back.tensors.get("k3.im2cluster"), sample().get("k3.im2cluster"));
    assert.deepEqual(back.metadata, { a: "b" });
    const entries = [];
    for (const e of Deno.readDirSync(dir)) entries.push(e.name);
    assert.deepEqual(entries, ["p.safetensors"]); // no temporary file left behind
    const missing = yield* Effect.flip(readSafetensors(`${dir}/nope.safetensors`));
    assert.ok(missing instanceof SafetensorsError);
    assert.match(missing.message, /nope\.safetensors: cannot read/);
  }),
);
