import assert from "node:assert/strict";
import { Effect, Logger } from "effect";
import { encode as encodePng } from "fast-png";
import jpeg from "jpeg-js";
import { classCounts, type HostDataset } from "../../src/data/dataset.ts";
import { DataError } from "../../src/data/errors.ts";
import { readSource, type Source } from "../../src/data/source.ts";
import { FASHION_MNIST_DIR } from "../../src/data/mnist.ts";
import { effectTest, tempDir } from "../helpers.ts";

// ---------------------------------------------------------------------------------------------------------------
// Writing small files of each format

const idxBytes = (dims: number[], data: Uint8Array): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, (0x08 << 8) | dims.length);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  out.set(data, 4 + 4 * dims.length);
  return out;
};

const gzip = async (bytes: Uint8Array<ArrayBuffer>) =>
  new Uint8Array(
    await new Response(new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );

/** n images of h x w where pixel (i, y, x) = (i * 31 + y * 7 + x) % 256, labels i % classes. */
const pattern = (n: number, h: number, w: number, classes = 10) => ({
  images: Uint8Array.from({ length: n * h * w }, (_, k) => {
    const i = Math.floor(k / (h * w)), y = Math.floor((k % (h * w)) / w), x = k % w;
    return (i * 31 + y * 7 + x) % 256;
  }),
  labels: Uint8Array.from({ length: n }, (_, i) => i % classes),
});

/** The DataError `self` fails with, checked to name `path` and to match `what`. */
const failsWith = <A>(self: Effect.Effect<A, DataError>, path: string, what: RegExp) =>
  Effect.gen(function* () {
    const e = yield* Effect.flip(self);
    assert.ok(e instanceof DataError, `expected a DataError, got ${e}`);
    assert.equal(e.path, path);
    assert.match(e.message, what);
    assert.ok(e.message.includes(path), `the message names the file: ${e.message}`);
  });

const read = (s: Source) => readSource(s);

// ---------------------------------------------------------------------------------------------------------------
// IDX

effectTest(
  "idx: plain and gzip files decode to the same images and labels",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    const { images, labels } = pattern(7, 5, 3);
    const img = idxBytes([7, 5, 3], images), lab = idxBytes([7], labels);
    yield* Effect.promise(async () => {
      await Deno.writeFile(`${dir}/i`, img);
      await Deno.writeFile(`${dir}/l`, lab);
      await Deno.writeFile(`${dir}/i.gz`, await gzip(img));
      await Deno.writeFile(`${dir}/l.gz`, await gzip(lab));
    });
    for (const [i, l] of [["i", "l"], ["i.gz", "l.gz"], ["i.gz", "l"]]) {
      const ds = yield* read({ kind: "idx", images: `${dir}/${i}`, labels: `${dir}/${l}`, name: "t" });
      assert.deepEqual(
        { ...ds.info, source: "" },
        {
          name: "t",
          n: 7,
          channels: 1,
          height: 5,
          width: 3,
          classes: 7,
          classNames: ["0", "1", "2", "3", "4", "5", "6"],
          source: "",
        },
      );
      assert.deepEqual(ds.images, images);
      assert.deepEqual(Array.from(ds.labels), Array.from(labels));
    }
    const limited = yield* read({ kind: "idx", images: `${dir}/i`, labels: `${dir}/l`, limit: 3 });
    assert.equal(limited.info.n, 3);
    assert.deepEqual(limited.images, images.subarray(0, 3 * 15));
  }),
);

effectTest(
  "idx: every kind of bad input is a DataError naming the file",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    const { images, labels } = pattern(4, 2, 2);
    const good = idxBytes([4, 2, 2], images), lab = idxBytes([4], labels);
    const files: Record<string, Uint8Array<ArrayBuffer>> = {
      images: good,
      labels: lab,
      short_labels: idxBytes([3], labels.subarray(0, 3)),
      cut: good.subarray(0, good.length - 5),
      header_only: good.subarray(0, 10),
      tiny: good.subarray(0, 2),
      extra: Uint8Array.from([...good, 1, 2]),
      not_gz: good,
    };
    yield* Effect.promise(async () => {
      for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${dir}/${name}`, bytes);
      await Deno.writeFile(`${dir}/cut.gz`, (await gzip(good)).subarray(0, 20));
      await Deno.writeFile(`${dir}/not.gz`, good);
    });
    const pair = (i: string, l: string) => read({ kind: "idx", images: `${dir}/${i}`, labels: `${dir}/${l}` });
    yield* failsWith(pair("missing", "labels"), `${dir}/missing`, /file not found/);
    yield* failsWith(pair("labels", "labels"), `${dir}/labels`, /wrong magic number 0x00000801.*labels file/);
    yield* failsWith(pair("images", "images"), `${dir}/images`, /wrong magic number 0x00000803.*images file/);
    yield* failsWith(pair("cut", "labels"), `${dir}/cut`, /truncated: the header says 4 x 2 x 2 = 16 bytes.*11/);
    yield* failsWith(pair("header_only", "labels"), `${dir}/header_only`, /truncated.*header alone needs 16/);
    yield* failsWith(pair("tiny", "labels"), `${dir}/tiny`, /truncated: 2 bytes/);
    yield* failsWith(pair("extra", "labels"), `${dir}/extra`, /2 unexpected bytes/);
    yield* failsWith(pair("images", "short_labels"), `${dir}/short_labels`, /3 labels, but .*images holds 4 images/);
    yield* failsWith(pair("cut.gz", "labels"), `${dir}/cut.gz`, /not a valid gzip file/);
    yield* failsWith(pair("not.gz", "labels"), `${dir}/not.gz`, /not a valid gzip file/);
    yield* failsWith(
      read({ kind: "fashion-mnist", split: "train", dir }),
      dir,
      /no train images file \(looked for train-images-idx3-ubyte/,
    );
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// MNIST (embedded) and Fashion-MNIST (Debian package)

const MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

const checkSet = (ds: HostDataset, n: number, counts: number[]) => {
  assert.equal(ds.info.n, n);
  assert.deepEqual([ds.info.channels, ds.info.height, ds.info.width, ds.info.classes], [1, 28, 28, 10]);
  assert.equal(ds.images.length, n * 784);
  assert.equal(ds.labels.length, n);
  assert.deepEqual(classCounts(ds.labels, 10), counts);
};

effectTest(
  "idx: labels outside the class count, or not class indices at all, are DataErrors naming the labels file",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    const { images } = pattern(4, 2, 2);
    yield* Effect.promise(async () => {
      await Deno.writeFile(`${dir}/i`, idxBytes([4, 2, 2], images));
      await Deno.writeFile(`${dir}/l`, idxBytes([4], Uint8Array.from([0, 1, 200, 2])));
      await Deno.writeFile(`${dir}/ok`, idxBytes([4], Uint8Array.from([0, 1, 2, 1])));
    });
    const idx = (labels: string, classes?: number) =>
      read({ kind: "idx", images: `${dir}/i`, labels: `${dir}/${labels}`, ...(classes ? { classes } : {}) });
    yield* failsWith(idx("l", 10), `${dir}/l`, /label 200 at index 2 is outside 0\.\.9 \(10 classes\)/);
    yield* failsWith(idx("l"), `${dir}/l`, /labels run to 200 but 197 of the values 0\.\.200 never occur/);
    assert.equal((yield* idx("ok")).info.classes, 3);
    assert.equal((yield* idx("ok", 5)).info.classes, 5); // declared: classes may be absent
    // Fashion-MNIST's layout names its ten classes: a label of 200 is refused the same way.
    yield* Effect.promise(async () => {
      await Deno.writeFile(`${dir}/train-images-idx3-ubyte`, idxBytes([4, 2, 2], images));
      await Deno.writeFile(`${dir}/train-labels-idx1-ubyte`, idxBytes([4], Uint8Array.from([0, 1, 200, 2])));
    });
    yield* failsWith(
      read({ kind: "fashion-mnist", split: "train", dir }),
      `${dir}/train-labels-idx1-ubyte`,
      /label 200 at index 2 is outside 0\.\.9/,
    );
  }),
);

effectTest(
  "mnist: the embedded package loads 60,000 + 10,000 images with MNIST's per-class counts",
  Effect.gen(function* () {
    const train = yield* read({ kind: "mnist", split: "train" });
    checkSet(train, 60000, MNIST_TRAIN_COUNTS);
    assert.deepEqual(Array.from(train.labels.subarray(0, 5)), [5, 0, 4, 1, 9]); // the famous first five
    const test = yield* read({ kind: "mnist", split: "test" });
    checkSet(test, 10000, MNIST_TEST_COUNTS);
    assert.equal(test.labels[0], 7);
    // digits are dark background with bright strokes: about 19% of MNIST pixels are non-zero
    const nonzero = test.images.reduce((a, v) => a + (v > 0 ? 1 : 0), 0) / test.images.length;
    assert.ok(nonzero > 0.17 && nonzero < 0.21, `non-zero fraction ${nonzero}`);
    const limited = yield* read({ kind: "mnist", split: "train", limit: 20000 });
    assert.equal(limited.info.n, 20000);
    assert.deepEqual(limited.labels, train.labels.subarray(0, 20000));
  }),
);

const hasFashion = (() => {
  try {
    return Deno.statSync(`${FASHION_MNIST_DIR}/train-images-idx3-ubyte.gz`).isFile;
  } catch {
    return false;
  }
})();
if (!hasFashion) {
  console.warn(
    `skipping the Fashion-MNIST test: ${FASHION_MNIST_DIR} is absent (Debian: apt-get install dataset-fashion-mnist)`,
  );
}

effectTest(
  "fashion-mnist: the Debian package's gzip IDX files load with 6,000 / 1,000 images per class",
  Effect.gen(function* () {
    const train = yield* read({ kind: "fashion-mnist", split: "train" });
    checkSet(train, 60000, new Array(10).fill(6000));
    assert.equal(train.info.classNames[9], "Ankle boot");
    checkSet(yield* read({ kind: "fashion-mnist", split: "test" }), 10000, new Array(10).fill(1000));
  }),
  { ignore: !hasFashion },
);

// ---------------------------------------------------------------------------------------------------------------
// CIFAR-10 binary

const cifarRecords = (n: number, seed: number) => {
  const out = new Uint8Array(n * 3073);
  for (let i = 0; i < n; i++) {
    out[i * 3073] = (i + seed) % 10;
    for (let k = 1; k < 3073; k++) out[i * 3073 + k] = (i * 13 + k * 7 + seed) % 256;
  }
  return out;
};

effectTest(
  "cifar10: batches concatenate in order, records copied as CHW, labels kept",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    const sizes = [3, 1, 2, 2, 1];
    yield* Effect.promise(async () => {
      for (const [i, n] of sizes.entries()) await Deno.writeFile(`${dir}/data_batch_${i + 1}.bin`, cifarRecords(n, i));
      await Deno.writeFile(`${dir}/test_batch.bin`, cifarRecords(4, 9));
    });
    const train = yield* read({ kind: "cifar10", dir, split: "train" });
    assert.deepEqual([train.info.n, train.info.channels, train.info.height, train.info.width], [9, 3, 32, 32]);
    let row = 0;
    for (const [i, n] of sizes.entries()) {
      const recs = cifarRecords(n, i);
      for (let r = 0; r < n; r++, row++) {
        assert.equal(train.labels[row], recs[r * 3073]);
        assert.deepEqual(
          train.images.subarray(row * 3072, (row + 1) * 3072),
          recs.subarray(r * 3073 + 1, (r + 1) * 3073),
        );
      }
    }
    const test = yield* read({ kind: "cifar10", dir, split: "test" });
    assert.equal(test.info.n, 4);
    assert.equal(test.info.classNames[0], "airplane");
  }),
);

effectTest(
  "cifar10: a missing batch, a cut file and a label over 9 are DataErrors naming the file",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    yield* Effect.promise(async () => {
      await Deno.writeFile(`${dir}/test_batch.bin`, cifarRecords(2, 0).subarray(0, 5000));
      for (let i = 1; i <= 4; i++) await Deno.writeFile(`${dir}/data_batch_${i}.bin`, cifarRecords(1, 0));
    });
    yield* failsWith(
      read({ kind: "cifar10", dir, split: "test" }),
      `${dir}/test_batch.bin`,
      /truncated.*1 records and 1927 bytes over/,
    );
    yield* failsWith(
      read({ kind: "cifar10", dir, split: "train" }),
      dir,
      /no CIFAR-10 train batch file.*data_batch_5\.bin/,
    );
    const bad = cifarRecords(2, 0);
    bad[3073] = 57;
    yield* Effect.promise(() => Deno.writeFile(`${dir}/data_batch_5.bin`, bad));
    yield* failsWith(
      read({ kind: "cifar10", dir, split: "train" }),
      `${dir}/data_batch_5.bin`,
      /record 1 has label 57/,
    );
    yield* failsWith(read({ kind: "cifar10", dir: `${dir}/nope`, split: "test" }), `${dir}/nope`, /no CIFAR-10/);
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// Image folder

const png = (width: number, height: number, channels: number, data: ArrayLike<number>, depth: 8 | 16 = 8) =>
  encodePng({
    width,
    height,
    channels,
    depth,
    data: depth === 16 ? Uint16Array.from(data) : Uint8Array.from(data),
  });

effectTest(
  "imagefolder: classes sorted, PNG (grey, RGB, RGBA, 16-bit) and JPEG decoded, shorter side + centre crop",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    // 6 wide x 4 high grey ramp: the centre 4 x 4 square is columns 1..4, taken as is at side 4 (scale 1)
    const ramp = Array.from({ length: 24 }, (_, k) => (k % 6) * 40 + Math.floor(k / 6));
    // 4 x 4 RGB: each channel constant
    const rgb = Array.from({ length: 48 }, (_, k) => [200, 100, 50][k % 3]!);
    const rgba = Array.from({ length: 64 }, (_, k) => [10, 20, 30, 128][k % 4]!);
    const deep = Array.from({ length: 16 }, (_, k) => k * 4096 + 255); // 16-bit grey: high byte k * 16
    const jpg = jpeg.encode({
      width: 8,
      height: 8,
      data: new Uint8Array(8 * 8 * 4).map((_, k) => [90, 160, 220, 255][k % 4]!),
    }, 95);
    yield* Effect.promise(async () => {
      await Deno.mkdir(`${dir}/b_cats`);
      await Deno.mkdir(`${dir}/a_dogs`);
      await Deno.writeFile(`${dir}/a_dogs/2.png`, png(6, 4, 1, ramp));
      await Deno.writeFile(`${dir}/a_dogs/1.PNG`, png(4, 4, 3, rgb));
      await Deno.writeFile(`${dir}/a_dogs/notes.txt`, new TextEncoder().encode("not an image"));
      await Deno.writeFile(`${dir}/b_cats/x.png`, png(4, 4, 4, rgba));
      await Deno.writeFile(`${dir}/b_cats/y.png`, png(4, 4, 1, deep, 16));
      await Deno.writeFile(`${dir}/b_cats/z.jpg`, jpg.data);
    });
    const ds = yield* read({ kind: "imagefolder", dir, side: 4 });
    assert.deepEqual(ds.info.classNames, ["a_dogs", "b_cats"]);
    assert.deepEqual(Array.from(ds.labels), [0, 0, 1, 1, 1]); // files sorted: 1.PNG, 2.png | x, y, z
    assert.deepEqual([ds.info.n, ds.info.channels, ds.info.height], [5, 3, 4]);
    const img = (i: number, c: number) => Array.from(ds.images.subarray((i * 3 + c) * 16, (i * 3 + c + 1) * 16));
    for (let c = 0; c < 3; c++) assert.deepEqual(img(0, c), new Array(16).fill([200, 100, 50][c]));
    const ramp4 = Array.from({ length: 16 }, (_, k) => ((k % 4) + 1) * 40 + Math.floor(k / 4));
    for (let c = 0; c < 3; c++) assert.deepEqual(img(1, c), ramp4, "grey replicated to RGB, centre columns");
    for (let c = 0; c < 3; c++) assert.deepEqual(img(2, c), new Array(16).fill([10, 20, 30][c]), "alpha dropped");
    for (let c = 0; c < 3; c++) assert.deepEqual(img(3, c), Array.from({ length: 16 }, (_, k) => k * 16), "16-bit");
    for (let c = 0; c < 3; c++) {
      // JPEG at quality 95 of a flat colour: within 3 levels
      for (const v of img(4, c)) assert.ok(Math.abs(v - [90, 160, 220][c]!) <= 3, `jpeg channel ${c}: ${v}`);
    }
    // grey output: luma of the RGB image, rounded
    const grey = yield* read({ kind: "imagefolder", dir, side: 4, channels: 1, limit: 1 });
    assert.deepEqual(Array.from(grey.images), new Array(16).fill(Math.round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)));
  }),
);

effectTest(
  "imagefolder: shrinking averages with a widened triangle filter (Pillow's bilinear)",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    const row = [0, 40, 80, 120];
    yield* Effect.promise(async () => {
      await Deno.mkdir(`${dir}/only`);
      await Deno.writeFile(`${dir}/only/a.png`, png(4, 4, 1, [...row, ...row, ...row, ...row]));
    });
    const ds = yield* read({ kind: "imagefolder", dir, side: 2, channels: 1 });
    // output 0: centre 1, support 2 -> taps 0, 1, 2 weighted 0.75, 0.75, 0.25 (normalised by 1.75)
    const left = (0.75 * 0 + 0.75 * 40 + 0.25 * 80) / 1.75, right = (0.25 * 40 + 0.75 * 80 + 0.75 * 120) / 1.75;
    assert.deepEqual(Array.from(ds.images), [left, right, left, right].map(Math.round));
  }),
);

effectTest(
  "imagefolder: no classes, an empty class and an undecodable file are DataErrors; skipping is counted and logged",
  Effect.gen(function* () {
    const dir = yield* tempDir("pcl-data-");
    yield* failsWith(read({ kind: "imagefolder", dir, side: 4 }), dir, /no class sub-folders/);
    yield* failsWith(
      read({ kind: "imagefolder", dir: `${dir}/absent`, side: 4 }),
      `${dir}/absent`,
      /directory not found/,
    );
    yield* Effect.promise(async () => {
      await Deno.mkdir(`${dir}/a`);
      await Deno.mkdir(`${dir}/b`);
      await Deno.writeFile(`${dir}/a/ok.png`, png(2, 2, 1, [1, 2, 3, 4]));
      await Deno.writeFile(`${dir}/b/readme.md`, new Uint8Array([35]));
    });
    yield* failsWith(read({ kind: "imagefolder", dir, side: 2 }), `${dir}/b`, /empty class folder/);
    yield* Effect.promise(async () => {
      await Deno.writeFile(`${dir}/b/broken.jpg`, new Uint8Array([0xff, 0xd8, 1, 2, 3]));
      await Deno.writeFile(`${dir}/b/fake.png`, new TextEncoder().encode("hello"));
      await Deno.writeFile(`${dir}/b/good.png`, png(2, 2, 1, [9, 9, 9, 9]));
    });
    yield* failsWith(
      read({ kind: "imagefolder", dir, side: 2 }),
      `${dir}/b/broken.jpg`,
      /cannot decode image: .*\(to skip files that do not decode, set skipUndecodable: true/,
    );
    const logs: string[] = [];
    const capture = Logger.layer([Logger.make(({ message }) => logs.push(String(message)))]);
    const ds = yield* read({ kind: "imagefolder", dir, side: 2, channels: 1, skipUndecodable: true }).pipe(
      Effect.provide(capture),
    );
    assert.equal(ds.info.n, 2);
    assert.deepEqual(Array.from(ds.labels), [0, 1]);
    assert.deepEqual(Array.from(ds.images.subarray(4)), [9, 9, 9, 9]);
    assert.equal(logs.length, 1);
    assert.match(logs[0]!, /skipped 2 undecodable image\(s\).*broken\.jpg.*fake\.png/);
  }),
);

// ---------------------------------------------------------------------------------------------------------------
// Synthetic

effectTest(
  "synthetic: seeded, labelled, every class present, different seeds differ",
  Effect.gen(function* () {
    const a = yield* read({ kind: "synthetic", n: 200, side: 16, channels: 3, seed: 1 });
    const b = yield* read({ kind: "synthetic", n: 200, side: 16, channels: 3, seed: 1 });
    const c = yield* read({ kind: "synthetic", n: 200, side: 16, channels: 3, seed: 2 });
    assert.deepEqual(a.images, b.images);
    assert.deepEqual(a.labels, b.labels);
    assert.notDeepEqual(a.images, c.images);
    assert.deepEqual([a.info.n, a.info.channels, a.info.height, a.info.classes], [200, 3, 16, 10]);
    const counts = classCounts(a.labels, 10);
    assert.ok(counts.every((k) => k >= 8), `every class drawn: ${counts}`);
    // the shape is there: each image has bright pixels (coverage x level >= 0.6 x 0.3) and a faint background
    for (let i = 0; i < 200; i++) {
      const img = a.images.subarray(i * 768, (i + 1) * 768);
      assert.ok(Math.max(...img) >= 0.6 * 0.3 * 255 && Math.min(...img) <= 0.08 * 255 + 1, `image ${i}`);
    }
    const grey = yield* read({ kind: "synthetic", n: 10, side: 9, classes: 3, limit: 4 });
    assert.deepEqual([grey.info.n, grey.info.channels, grey.info.classes], [4, 1, 3]);
    assert.ok(Array.from(grey.labels).every((l) => l < 3));
  }),
);
