// ResNet-50 (src/nn/models.ts `resnet50`, `bottleneck`): torchvision's names, shapes, count and FLOPs; one Bottleneck
// block's forward and backward against the float64 reference; the whole net's output shape for both stems.
import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { runDispatches } from "../../src/gpu/kernel.ts";
import { bindEncoder, bottleneck, encoder, flopsPerImage } from "../../src/nn/models.ts";
import { ParamBuilder } from "../../src/nn/params.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";
import * as ref from "./cpu_reference.ts";
import { checkGradients, state64, upload } from "./grad_check.ts";

/**
 * torchvision.models.resnet50()'s named_parameters() without fc, derived from torchvision/models/resnet.py: conv1,
 * bn1, then `_make_layer(Bottleneck, planes, blocks)` for (64, 3), (128, 4), (256, 6), (512, 3), each block
 * conv1 1x1 (inplanes → planes), bn1, conv2 3x3 (planes → planes), bn2, conv3 1x1 (planes → 4·planes), bn3, and
 * downsample.0 (1x1) + downsample.1 in the first block of each layer (`stride != 1 or inplanes != planes * 4`
 * holds there: layer1's stride is 1 but 64 != 256).
 */
const torchvisionResnet50 = (stemKernel: number) => {
  const list: [string, number[]][] = [];
  const conv = (name: string, o: number, i: number, k: number) => list.push([`${name}.weight`, [o, i, k, k]]);
  const bn = (name: string, c: number) => list.push([`${name}.weight`, [c]], [`${name}.bias`, [c]]);
  conv("conv1", 64, 3, stemKernel);
  bn("bn1", 64);
  let inplanes = 64;
  for (const [i, [planes, blocks]] of [[64, 3], [128, 4], [256, 6], [512, 3]].entries()) {
    for (let j = 0; j < blocks; j++) {
      const b = `layer${i + 1}.${j}`;
      conv(`${b}.conv1`, planes, inplanes, 1);
      bn(`${b}.bn1`, planes);
      conv(`${b}.conv2`, planes, planes, 3);
      bn(`${b}.bn2`, planes);
      conv(`${b}.conv3`, planes * 4, planes, 1);
      bn(`${b}.bn3`, planes * 4);
      if (j === 0) {
        conv(`${b}.downsample.0`, planes * 4, inplanes, 1);
        bn(`${b}.downsample.1`, planes * 4);
      }
      inplanes = planes * 4;
    }
  }
  return list;
};

gpuTest(
  "nn: ResNet-50 has torchvision's parameter names, shapes, count and FLOPs, and both stems give 2048 features",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    for (const [arch, side] of [["resnet50-cifar", 32], ["resnet50-imagenet", 64]] as const) {
      const enc = yield* encoder({ arch, inChannels: 3, head: "linear", dim: 128 }, 0);
      assert.equal(enc.features, 2048);
      const expected = torchvisionResnet50(arch === "resnet50-cifar" ? 3 : 7);
      const actual = enc.params.parameters.map((e) => [e.name, [...e.shape]]);
      // 159 tensors: 53 convolutions and 53 BNs' weight and bias (161 with torchvision's fc.weight and fc.bias).
      assert.equal(expected.length, 159);
      assert.deepEqual(actual, [...expected, ["fc.weight", [128, 2048]], ["fc.bias", [128]]]);
      // torchvision.models.resnet50(): 25,557,032 parameters, of which fc (2048 x 1000 + 1000) is 2,049,000. The
      // CIFAR stem's conv1 is 3x3 instead of 7x7.
      const backbone = enc.params.parameterCount - (128 * 2048 + 128);
      assert.equal(backbone, arch === "resnet50-cifar" ? 23_508_032 - 64 * 3 * 49 + 64 * 3 * 9 : 23_508_032);
      // The stride-1 downsample of layer1 and the v1.5 layout's 3x3 conv2 of a strided block, by name.
      assert.deepEqual(actual.find(([n]) => n === "layer1.0.downsample.0.weight")?.[1], [256, 64, 1, 1]);
      assert.deepEqual(actual.find(([n]) => n === "layer4.0.conv2.weight")?.[1], [512, 512, 3, 3]);
      // Buffers: each BN's running_mean and running_var, in the BNs' order (torchvision's num_batches_tracked is
      // not kept).
      const bns = expected.filter(([n, s]) => n.endsWith(".weight") && s.length === 1).map(([n]) => n.slice(0, -7));
      assert.deepEqual(
        enc.params.bufferNames.map((e) => e.name),
        bns.flatMap((b) => [`${b}.running_mean`, `${b}.running_var`]),
      );
      assert.equal(enc.params.bufferNames.at(-1)?.name, "layer4.2.bn3.running_var");
      if (arch === "resnet50-imagenet") {
        // torchvision lists resnet50 at 4.09 G multiply-adds on 224x224: its convolutions' 4,087,136,256 plus its
        // fc's 2,048,000. Here the head is 2048 x 128. With the stride in conv1 (v1) the convolutions would be
        // 231,211,008 fewer (3.86 G), so this also checks where the stride is.
        const flops = yield* flopsPerImage(enc, [3, 224, 224]);
        assert.equal(flops, 2 * (4_087_136_256 + 2048 * 128));
        assert.equal(((flops / 2 - 2048 * 128 + 2048 * 1000) / 1e9).toFixed(2), "4.09");
      }
      const x = upload(gpu, randoms(2 * 3 * side * side, 9), [2, 3, side, side], "x");
      const b = yield* bindEncoder(enc, x, { train: false, grad: false });
      assert.deepEqual(b.features.shape, [2, 2048]);
      yield* runDispatches(b.forward);
      const features = yield* Effect.promise(() => gpu.read(b.features));
      assert.ok(features.every(Number.isFinite), `${arch}: non-finite features`);
      const z = yield* Effect.promise(() => gpu.read(b.z));
      for (let n = 0; n < 2; n++) {
        const norm = Math.hypot(...z.subarray(n * 128, (n + 1) * 128));
        assert.ok(Math.abs(norm - 1) < 1e-5, `${arch} row ${n} norm ${norm}`);
      }
    }
  }),
);

gpuTest(
  "nn: a ResNet Bottleneck block, with a strided downsample and with the identity shortcut, forward equals the " +
    "float64 reference and input and parameter gradients equal finite differences",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    // [inC, width, stride, side]: a strided block whose shortcut is downsample.0/.1 (4 → 12 channels, 5x5 → 3x3:
    // an odd side under stride 2), and one whose shortcut is the identity (8 in, width 2, 8 out, stride 1).
    const cases = [[4, 3, 2, 5], [8, 2, 1, 4]] as const;
    for (const [k, [inC, width, stride, side]] of cases.entries()) {
      const p = ParamBuilder.create();
      const module = bottleneck(p.scope("block"), inC, width, stride);
      const params = yield* p.allocate(30 + k);
      const names = params.parameters.map((e) => e.name);
      assert.deepEqual(names.slice(0, 9), [
        "block.conv1.weight",
        "block.bn1.weight",
        "block.bn1.bias",
        "block.conv2.weight",
        "block.bn2.weight",
        "block.bn2.bias",
        "block.conv3.weight",
        "block.bn3.weight",
        "block.bn3.bias",
      ]);
      assert.deepEqual(
        names.slice(9),
        stride === 2 ? ["block.downsample.0.weight", "block.downsample.1.weight", "block.downsample.1.bias"] : [],
      );
      const xShape = [2, inC, side, side];
      const xn = xShape.reduce((a, b) => a * b, 1);
      const xData = randoms(xn, 40 + k);
      const x = upload(gpu, xData, xShape, "x");
      const dx = gpu.tensor(xShape, "f32", "dx");
      const b = yield* module.bind(x, dx, { train: true, grad: true });
      const out = Math.floor((side - 1) / stride) + 1;
      assert.deepEqual(b.y.shape, [2, width * 4, out, out]);
      const upstream = randoms(b.y.shape.reduce((a, c) => a * c, 1), 50 + k);
      const f = (s: ref.State) => ref.bottleneck(s, "block", s.get("x") ?? ref.t64(xData, xShape), stride);
      const state = new Map([...yield* Effect.promise(() => state64(gpu, params)), ["x", ref.t64(xData, xShape)]]);
      yield* runDispatches(b.forward);
      gpu.write(b.dy!, upstream);
      yield* runDispatches(b.backward);
      // The output is O(1) after BN and the final ReLU; f32 through three convs and BNs stays well within 1e-4.
      assertClose(yield* Effect.promise(() => gpu.read(b.y)), f(state).data, { atol: 1e-4, rtol: 1e-4, what: "y" });
      const checked = yield* Effect.promise(() => checkGradients(gpu, params, f, upstream));
      // Four coordinates of each tensor, all of those with fewer: case 0, three convs and the downsample conv 4 each,
      // bn1/bn2 (width 3) 3 per weight and bias, bn3 and downsample.1 (12 channels) 4 each: 44; case 1, convs 12,
      // bn1/bn2 (width 2) 8, bn3 8: 28.
      assert.equal(checked, k === 0 ? 44 : 28);
      // The input gradient: through the body and, identity or downsample, the shortcut.
      const gx = yield* Effect.promise(() => gpu.read(dx));
      const scale = gx.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
      for (let j = 0; j < 8; j++) {
        const i = Math.floor(((j + 0.5) / 8) * xn);
        const fd = ref.finiteDifference(f, state, "x", i, upstream);
        assert.ok(Math.abs(gx[i] - fd) <= 1e-3 * scale + 0.02 * Math.abs(fd), `case ${k} dx[${i}]: ${gx[i]}, fd ${fd}`);
      }
    }
  }),
);
