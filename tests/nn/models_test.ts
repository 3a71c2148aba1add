import assert from "node:assert/strict";
import { Effect } from "effect";
import { Gpu } from "../../src/gpu/gpu.ts";
import { runDispatches } from "../../src/gpu/kernel.ts";
import { bindEncoder, encoder, type EncoderSpec, flopsPerImage, residual } from "../../src/nn/models.ts";
import { ParamBuilder, StateDictError } from "../../src/nn/params.ts";
import { ShapeError } from "../../src/gpu/errors.ts";
import { batchNorm, conv2dLayer, linear, relu } from "../../src/nn/layers.ts";
import { sequential } from "../../src/nn/module.ts";
import { assertClose, gpuTest, randoms } from "../helpers.ts";
import * as ref from "./cpu_reference.ts";
import { checkGradients, state64, upload } from "./grad_check.ts";

/**
 * Binds `spec`'s encoder (seed 7) to seeded input of `xShape`, runs its forward and backward, and compares z with the
 * float64 reference `forward` (to `zTolerance`) and the parameter gradients with finite differences (4 coordinates of
 * every tensor); returns how many gradient coordinates were checked.
 */
const checkEncoder = (
  spec: EncoderSpec,
  xShape: readonly number[],
  seeds: readonly [number, number],
  forward: (s: ref.State, x: ref.T64) => ref.T64,
  zTolerance: number,
) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const enc = yield* encoder(spec, 7);
    const xData = randoms(xShape.reduce((a, b) => a * b, 1), seeds[0], 0, 1);
    const x = upload(gpu, xData, xShape, "x");
    const b = yield* bindEncoder(enc, x, { train: true, grad: true });
    const upstream = randoms(xShape[0]! * spec.dim, seeds[1]);
    // Read the parameters before the forward: in training mode it updates BN running statistics (not used here).
    const f = (s: ref.State) => forward(s, ref.t64(xData, xShape));
    const expected = f(yield* Effect.promise(() => state64(gpu, enc.params)));
    yield* runDispatches(b.forward);
    gpu.write(b.dz!, upstream);
    yield* runDispatches(b.backward);
    assertClose(yield* Effect.promise(() => gpu.read(b.z)), expected.data, { atol: zTolerance, rtol: 0, what: "z" });
    return yield* Effect.promise(() => checkGradients(gpu, enc.params, f, upstream));
  });

gpuTest(
  "nn: convnet + MLP head + L2 norm, forward equals the float64 reference and gradients equal finite differences",
  Effect.gen(function* () {
    const spec = { arch: "convnet", inChannels: 1, head: "mlp", hidden: 16, dim: 8 } as const;
    // z is unit-norm; f32 through three convs and BN stays well within 1e-4.
    const checked = yield* checkEncoder(spec, [3, 1, 8, 8], [1, 2], (s, x) => ref.convnetMlp(s, x), 1e-4);
    assert.equal(checked, 13 * 4); // 3 convs, 3 BN weights and biases, the head's 2 weights and 2 biases
  }),
);

gpuTest(
  "nn: convnet5 + MLP head + L2 norm, forward equals the float64 reference and gradients equal finite differences",
  Effect.gen(function* () {
    const spec = { arch: "convnet5", inChannels: 1, head: "mlp", hidden: 16, dim: 8 } as const;
    // 12x12 runs every layer on a real grid (12, 6, 3, 2, 2) and every stride-2 conv over an odd and an even side;
    // BN in the last two layers then normalises 3 x 2 x 2 = 12 values per channel, a small batch that any error in
    // its statistics' backward would show. (8x8 would leave conv4 and conv5 at 1x1, where padding is all they see.)
    // z: f32 rounding grows with each conv's fan-in (up to 1,152 terms) and each BN's division by a batch std, over
    // five layers instead of three; measured 4e-7 here, so 1e-4 has a wide margin while a wrong stride, padding or
    // channel index moves z by O(0.1). Gradients: checkGradients' tolerance (1e-3 of the tensor's largest gradient +
    // 2%), at 4 coordinates of each of the 19 tensors (5 convs, 5 BN weights and biases, the head's 2 weights and 2
    // biases). The largest |GPU - finite difference| measured was 0.04% of that tolerance.
    const forward = (s: ref.State, x: ref.T64) => ref.convnetMlp(s, x, [1, 2, 2, 2, 1]);
    const checked = yield* checkEncoder(spec, [3, 1, 12, 12], [21, 22], forward, 1e-4);
    assert.equal(checked, 19 * 4);
  }),
);

gpuTest(
  "nn: convnet5 at width 0.5 has the port's WIDTH=0.5 shapes (16, 32, 64, 64, 64 channels), 64 features, its FLOPs",
  Effect.gen(function* () {
    const spec = { arch: "convnet5", inChannels: 1, head: "mlp", hidden: 128, dim: 64, width: 0.5 } as const;
    const enc = yield* encoder(spec, 0);
    const convs = enc.params.parameters.filter((e) => e.name.startsWith("conv")).map((e) => [...e.shape]);
    assert.deepEqual(convs, [[16, 1, 3, 3], [32, 16, 3, 3], [64, 32, 3, 3], [64, 64, 3, 3], [64, 64, 3, 3]]);
    assert.deepEqual([...enc.params.parameters.find((e) => e.name === "fc.0.weight")!.shape], [128, 64]);
    assert.equal(enc.features, 64);
    // 28², 14², 7², 4², 4² positions; the head 64 → 128 → 64.
    const convFlops = 2 * 9 * (16 * 1 * 784 + 32 * 16 * 196 + 64 * 32 * 49 + 2 * 64 * 64 * 16);
    assert.equal(yield* flopsPerImage(enc, [1, 28, 28]), convFlops + 2 * (64 * 128 + 128 * 64));
  }),
);

gpuTest(
  "nn: convnet5 has the PyTorch port's parameter names, shapes and count, and gives 128 features on 28x28",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const enc = yield* encoder({ arch: "convnet5", inChannels: 1, head: "mlp", hidden: 128, dim: 64 }, 0);
    // The port's (ARCH=convnet5) named_parameters(), in order: conv1, bn1, ..., conv5, bn5, fc.0, fc.2.
    const channels = [[1, 32], [32, 64], [64, 128], [128, 128], [128, 128]];
    const expected = [
      ...channels.flatMap(([i, o], k) => [
        [`conv${k + 1}.weight`, [o, i, 3, 3]],
        [`bn${k + 1}.weight`, [o]],
        [`bn${k + 1}.bias`, [o]],
      ]),
      ["fc.0.weight", [128, 128]],
      ["fc.0.bias", [128]],
      ["fc.2.weight", [64, 128]],
      ["fc.2.bias", [64]],
    ];
    assert.deepEqual(enc.params.parameters.map((e) => [e.name, [...e.shape]]), expected);
    // 387,360 conv weights + 960 BN affine + 16,512 + 8,256 in the head: sum(p.numel()) in the port.
    assert.equal(enc.params.parameterCount, 413_088);
    assert.deepEqual(
      enc.params.bufferNames.map((e) => e.name),
      [1, 2, 3, 4, 5].flatMap((i) => [`bn${i}.running_mean`, `bn${i}.running_var`]),
    );
    // Kaiming fan-out by default, as the convnet: conv5's std is sqrt(2 / (128 * 9)) within 3% over 147,456 draws.
    const w = (yield* Effect.promise(() => enc.params.stateDict(gpu))).get("conv5.weight")!;
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    assert.ok(Math.abs(std / Math.sqrt(2 / (128 * 9)) - 1) < 0.03, `conv5 std ${std}`);
    // FLOPs on 28x28, 2 per multiply-add: the convnet's three convs (28², 14², 7² positions) and the head, plus
    // conv4 and conv5 at 4x4 (28 → 14 → 7 → 4): 128 · 128 · 9 · 16 · 2 = 4,718,592 each.
    const head = 2 * (128 * 128 + 128 * 64);
    const convnetFlops = 2 * 9 * (32 * 1 * 784 + 64 * 32 * 196 + 128 * 64 * 49) + head;
    const small = yield* encoder({ arch: "convnet", inChannels: 1, head: "mlp", hidden: 128, dim: 64 }, 0);
    assert.equal(yield* flopsPerImage(small, [1, 28, 28]), convnetFlops);
    assert.equal(yield* flopsPerImage(enc, [1, 28, 28]), convnetFlops + 2 * 4_718_592);
    const x = upload(gpu, randoms(2 * 784, 9, 0, 1), [2, 1, 28, 28], "x");
    const b = yield* bindEncoder(enc, x, { train: false, grad: false });
    assert.deepEqual(b.features.shape, [2, 128]);
    yield* runDispatches(b.forward);
    const z = yield* Effect.promise(() => gpu.read(b.z));
    for (let n = 0; n < 2; n++) {
      const norm = Math.hypot(...z.subarray(n * 64, (n + 1) * 64));
      assert.ok(Math.abs(norm - 1) < 1e-5, `row ${n} norm ${norm}`);
    }
  }),
);

gpuTest(
  "nn: a ResNet basic block with a strided downsample, input and parameter gradients against finite differences",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const p = ParamBuilder.create();
    const block = p.scope("block");
    const module = residual(
      sequential(
        conv2dLayer(block.scope("conv1"), 4, 6, { kernel: 3, stride: 2, padding: 1 }),
        batchNorm(block.scope("bn1"), 6),
        relu,
        conv2dLayer(block.scope("conv2"), 6, 6, { kernel: 3, stride: 1, padding: 1 }),
        batchNorm(block.scope("bn2"), 6),
      ),
      sequential(
        conv2dLayer(block.scope("downsample.0"), 4, 6, { kernel: 1, stride: 2 }),
        batchNorm(block.scope("downsample.1"), 6),
      ),
    );
    const params = yield* p.allocate(3);
    const xShape = [2, 4, 5, 5];
    const xData = randoms(2 * 4 * 25, 4);
    const x = upload(gpu, xData, xShape, "x");
    const dx = gpu.tensor(xShape, "f32", "dx");
    const b = yield* module.bind(x, dx, { train: true, grad: true });
    assert.deepEqual(b.y.shape, [2, 6, 3, 3]);
    const upstream = randoms(2 * 6 * 9, 5);
    const f = (s: ref.State) => ref.basicBlock(s, "block", ref.t64(s.get("x")?.data ?? xData, xShape), 2);
    yield* runDispatches(b.forward);
    gpu.write(b.dy!, upstream);
    yield* runDispatches(b.backward);
    yield* Effect.promise(() => checkGradients(gpu, params, f, upstream));
    // The input gradient: both branches contribute.
    const state = new Map([...yield* Effect.promise(() => state64(gpu, params)), ["x", ref.t64(xData, xShape)]]);
    const gx = yield* Effect.promise(() => gpu.read(dx));
    const scale = Math.max(...Array.from(gx, Math.abs));
    for (const i of [0, 17, 55, 99, 150, 199]) {
      const fd = ref.finiteDifference(f, state, "x", i, upstream);
      assert.ok(Math.abs(gx[i] - fd) <= 1e-3 * scale + 0.02 * Math.abs(fd), `dx[${i}]: GPU ${gx[i]}, fd ${fd}`);
    }
  }),
);

gpuTest(
  "nn: linear layers pass the input gradient down a chain",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const p = ParamBuilder.create();
    const module = sequential(linear(p.scope("a"), 7, 5), relu, linear(p.scope("b"), 5, 3, false));
    const params = yield* p.allocate(11);
    const xData = randoms(4 * 7, 12);
    const x = upload(gpu, xData, [4, 7], "x");
    const dx = gpu.tensor([4, 7], "f32", "dx");
    const b = yield* module.bind(x, dx, { train: true, grad: true });
    const upstream = randoms(4 * 3, 13);
    yield* runDispatches(b.forward);
    gpu.write(b.dy!, upstream);
    yield* runDispatches(b.backward);
    const f = (s: ref.State) => {
      const h = ref.relu(ref.linear(s.get("x") ?? ref.t64(xData, [4, 7]), s.get("a.weight")!, s.get("a.bias")));
      return ref.linear(h, s.get("b.weight")!, undefined);
    };
    const state = new Map([...yield* Effect.promise(() => state64(gpu, params)), ["x", ref.t64(xData, [4, 7])]]);
    assertClose(yield* Effect.promise(() => gpu.read(b.y)), f(state).data, { atol: 1e-5, rtol: 1e-5, what: "y" });
    yield* Effect.promise(() => checkGradients(gpu, params, f, upstream, 6));
    const gx = yield* Effect.promise(() => gpu.read(dx));
    const fd = Array.from({ length: 28 }, (_, i) => ref.finiteDifference(f, state, "x", i, upstream));
    assertClose(gx, fd, { atol: 1e-4, rtol: 1e-3, what: "dx" });
  }),
);

gpuTest(
  "nn: ResNet-18 has torchvision's parameter names, count and FLOPs, and both stems give 512 features",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    for (const [arch, side] of [["resnet18-cifar", 32], ["resnet18-imagenet", 64]] as const) {
      const enc = yield* encoder({ arch, inChannels: 3, head: "linear", dim: 128 }, 0);
      const names = enc.params.parameters.map((e) => e.name);
      const backbone = enc.params.parameters.filter((e) => !e.name.startsWith("fc."));
      // torchvision.models.resnet18(): 11,689,512 parameters, of which fc (512 x 1000 + 1000) is 513,000.
      const count = backbone.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
      assert.equal(count, arch === "resnet18-cifar" ? 11_176_512 - 64 * 3 * 49 + 64 * 3 * 9 : 11_176_512);
      for (const name of ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight"]) {
        assert.ok(names.includes(name), name);
      }
      assert.deepEqual(enc.params.bufferNames.at(-1)?.name, "layer4.1.bn2.running_var");
      if (arch === "resnet18-imagenet") {
        // torchvision lists resnet18 at 1.81 G multiply-adds on 224x224: its convolutions' 1,813,561,344, plus
        // here the linear head (512 x 128). Checks the FLOP count through residual blocks, shortcuts and the stem.
        assert.equal(yield* flopsPerImage(enc, [3, 224, 224]), 2 * (1_813_561_344 + 512 * 128));
      }
      const x = upload(gpu, randoms(2 * 3 * side * side, 9), [2, 3, side, side], "x");
      const b = yield* bindEncoder(enc, x, { train: false, grad: false });
      assert.deepEqual(b.features.shape, [2, 512]);
      yield* runDispatches(b.forward);
      const z = yield* Effect.promise(() => gpu.read(b.z));
      for (let n = 0; n < 2; n++) {
        const norm = Math.hypot(...z.subarray(n * 128, (n + 1) * 128));
        assert.ok(Math.abs(norm - 1) < 1e-5, `row ${n} norm ${norm}`);
      }
    }
  }),
);

gpuTest(
  "nn: initialisation follows PyTorch's defaults and is reproducible from the seed",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const spec = { arch: "convnet", inChannels: 1, head: "mlp", hidden: 128, dim: 64 } as const;
    const [a, b, c] = yield* Effect.all([encoder(spec, 1), encoder(spec, 1), encoder(spec, 2)]);
    const [sa, sb, sc] = yield* Effect.promise(() => Promise.all([a, b, c].map((e) => e.params.stateDict(gpu))));
    assert.deepEqual(sa, sb);
    assert.notDeepEqual(sa.get("conv2.weight"), sc.get("conv2.weight"));
    // Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (64 * 9)); 18,432 draws give the std within ~1%.
    const w = sa.get("conv2.weight")!;
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    assert.ok(Math.abs(std / Math.sqrt(2 / (64 * 9)) - 1) < 0.03, `conv2 std ${std}`);
    // nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    const fc = sa.get("fc.0.weight")!;
    const bound = 1 / Math.sqrt(128);
    assert.ok(fc.every((v) => Math.abs(v) <= bound) && Math.max(...fc) > 0.95 * bound);
    assert.ok(sa.get("bn1.weight")!.every((v) => v === 1) && sa.get("bn1.running_var")!.every((v) => v === 1));
    assert.ok(sa.get("bn1.bias")!.every((v) => v === 0) && sa.get("bn1.running_mean")!.every((v) => v === 0));
    // convInit uniform-fan-in (nn.Conv2d's own): U(±1/sqrt(32 * 9)), whose std is bound/sqrt(3).
    const uniform = yield* encoder({ ...spec, convInit: "uniform-fan-in" }, 1);
    const u = yield* Effect.promise(() => uniform.params.stateDict(gpu));
    const uw = u.get("conv2.weight")!, ub = 1 / Math.sqrt(32 * 9);
    const ustd = Math.sqrt(uw.reduce((s, v) => s + v * v, 0) / uw.length);
    assert.ok(uw.every((v) => Math.abs(v) <= ub) && Math.abs((ustd * Math.sqrt(3)) / ub - 1) < 0.03, `std ${ustd}`);
  }),
);

gpuTest(
  "nn: a shape a module cannot take and a state that does not fit the store are typed failures, not throws",
  Effect.gen(function* () {
    const gpu = yield* Gpu;
    const enc = yield* encoder({ arch: "convnet", inChannels: 1, head: "linear", dim: 8 }, 0);
    const wrongChannels = yield* Effect.flip(flopsPerImage(enc, [3, 28, 28]));
    assert.ok(wrongChannels instanceof ShapeError, String(wrongChannels));
    assert.match(wrongChannels.message, /conv2d: expects 1 input channels, got \[1,3,28,28\]/);
    const conv = conv2dLayer(ParamBuilder.create(), 1, 2, { kernel: 5 });
    const tooSmall = yield* Effect.flip(conv.outputShape([1, 1, 3, 3]));
    assert.match(tooSmall.message, /conv2d: a 5x5 window with padding 0 does not fit \[1,1,3,3\]/);
    const x = upload(gpu, randoms(2 * 3 * 28 * 28, 1), [2, 3, 28, 28], "x");
    const bound = yield* Effect.flip(bindEncoder(enc, x, { train: false, grad: false }));
    assert.ok(bound instanceof ShapeError, String(bound));

    const state = yield* Effect.promise(() => enc.params.stateDict(gpu));
    const before = yield* Effect.promise(() => gpu.read(enc.params.values));
    const partial = new Map(state);
    partial.delete("conv1.weight");
    const missing = yield* Effect.flip(enc.params.loadState(partial));
    assert.ok(missing instanceof StateDictError, String(missing));
    assert.match(missing.message, /state is missing conv1\.weight$/);
    const wrongSize = new Map(state).set("fc.weight", new Float32Array(3));
    const short = yield* Effect.flip(enc.params.loadState(wrongSize));
    assert.match(short.message, /'fc\.weight' has 3 values, expected \[8,128\] = 1024/);
    // Nothing was written by the refused loads; a whole state loads.
    assert.deepEqual(yield* Effect.promise(() => gpu.read(enc.params.values)), before);
    const ones = new Map([...state].map(([name, v]) => [name, new Float32Array(v.length).fill(1)]));
    yield* enc.params.loadState(ones);
    assert.ok((yield* Effect.promise(() => enc.params.stateDict(gpu))).get("conv1.weight")!.every((v) => v === 1));
  }),
);
