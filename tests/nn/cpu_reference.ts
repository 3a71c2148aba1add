// Float64 CPU references of the modules, composed the way src/nn/models.ts composes them, for gradient checks by
// central finite differences. Plain loops, written for clarity, not speed: used on tiny shapes only.

export type Shape = readonly number[];
export interface T64 {
  readonly data: Float64Array;
  readonly shape: Shape;
}

export const t64 = (data: ArrayLike<number>, shape: Shape): T64 => ({ data: Float64Array.from(data), shape });

export const conv2d = (x: T64, w: T64, bias: T64 | undefined, stride: number, pad: number): T64 => {
  const [N, C, H, W] = x.shape, [O, , K] = w.shape;
  const OH = Math.floor((H + 2 * pad - K) / stride) + 1, OW = Math.floor((W + 2 * pad - K) / stride) + 1;
  const y = new Float64Array(N * O * OH * OW);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          let s = bias ? bias.data[o] : 0;
          for (let c = 0; c < C; c++) {
            for (let kh = 0; kh < K; kh++) {
              for (let kw = 0; kw < K; kw++) {
                const ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += w.data[((o * C + c) * K + kh) * K + kw] * x.data[((n * C + c) * H + ih) * W + iw];
              }
            }
          }
          y[((n * O + o) * OH + oh) * OW + ow] = s;
        }
      }
    }
  }
  return { data: y, shape: [N, O, OH, OW] };
};

/** Training-mode batch norm (biased variance, eps 1e-5) over N, H, W; 2-D inputs are [N, C] with H = W = 1. */
export const batchNorm = (x: T64, gamma: T64, beta: T64, eps = 1e-5): T64 => {
  const [N, C] = x.shape, HW = x.shape.length === 4 ? x.shape[2] * x.shape[3] : 1;
  const y = new Float64Array(x.data.length);
  for (let c = 0; c < C; c++) {
    let mean = 0, sq = 0;
    for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) mean += x.data[(n * C + c) * HW + i];
    mean /= N * HW;
    for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) sq += (x.data[(n * C + c) * HW + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(sq / (N * HW) + eps);
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < HW; i++) {
        const j = (n * C + c) * HW + i;
        y[j] = gamma.data[c] * (x.data[j] - mean) * inv + beta.data[c];
      }
    }
  }
  return { data: y, shape: x.shape };
};

export const relu = (x: T64): T64 => ({ data: x.data.map((v) => Math.max(v, 0)), shape: x.shape });

export const add = (a: T64, b: T64): T64 => ({ data: a.data.map((v, i) => v + b.data[i]), shape: a.shape });

export const globalAvgPool = (x: T64): T64 => {
  const [N, C, H, W] = x.shape;
  const y = new Float64Array(N * C);
  for (let i = 0; i < N * C; i++) {
    let s = 0;
    for (let j = 0; j < H * W; j++) s += x.data[i * H * W + j];
    y[i] = s / (H * W);
  }
  return { data: y, shape: [N, C] };
};

export const linear = (x: T64, w: T64, b: T64 | undefined): T64 => {
  const [N, I] = x.shape, [O] = w.shape;
  const y = new Float64Array(N * O);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      let s = b ? b.data[o] : 0;
      for (let i = 0; i < I; i++) s += x.data[n * I + i] * w.data[o * I + i];
      y[n * O + o] = s;
    }
  }
  return { data: y, shape: [N, O] };
};

export const l2Normalize = (x: T64): T64 => {
  const [N, D] = x.shape;
  const y = new Float64Array(x.data.length);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += x.data[n * D + d] ** 2;
    const norm = Math.max(Math.sqrt(s), 1e-12);
    for (let d = 0; d < D; d++) y[n * D + d] = x.data[n * D + d] / norm;
  }
  return { data: y, shape: x.shape };
};

export type State = ReadonlyMap<string, T64>;
const get = (s: State, name: string) => {
  const t = s.get(name);
  if (t === undefined) throw new Error(`reference: no tensor '${name}'`);
  return t;
};

/**
 * src/nn/models.ts `convnet` (strides 1, 2, 2) or `convnet5` (strides 1, 2, 2, 2, 1): conv3x3 `convI` + BN `bnI` +
 * ReLU per stride, global average pool, MLP head (`fc.0`, ReLU, `fc.2`) + L2 normalisation, in training mode.
 */
export const convnetMlp = (s: State, x: T64, strides: readonly number[] = [1, 2, 2]): T64 => {
  let h = x;
  for (const [k, stride] of strides.entries()) {
    const i = k + 1;
    h = conv2d(h, get(s, `conv${i}.weight`), undefined, stride, 1);
    h = relu(batchNorm(h, get(s, `bn${i}.weight`), get(s, `bn${i}.bias`)));
  }
  h = globalAvgPool(h);
  h = relu(linear(h, get(s, "fc.0.weight"), get(s, "fc.0.bias")));
  return l2Normalize(linear(h, get(s, "fc.2.weight"), get(s, "fc.2.bias")));
};

/** A residual block's shortcut: `downsample` (1x1 conv + BN) when the block has one, else the identity. */
const shortcut = (s: State, prefix: string, x: T64, stride: number): T64 =>
  s.has(`${prefix}.downsample.0.weight`)
    ? batchNorm(
      conv2d(x, get(s, `${prefix}.downsample.0.weight`), undefined, stride, 0),
      get(s, `${prefix}.downsample.1.weight`),
      get(s, `${prefix}.downsample.1.bias`),
    )
    : x;

/** torchvision's BasicBlock under `prefix`, in training mode. */
export const basicBlock = (s: State, prefix: string, x: T64, stride: number): T64 => {
  const p = (n: string) => get(s, `${prefix}.${n}`);
  let h = relu(batchNorm(conv2d(x, p("conv1.weight"), undefined, stride, 1), p("bn1.weight"), p("bn1.bias")));
  h = batchNorm(conv2d(h, p("conv2.weight"), undefined, 1, 1), p("bn2.weight"), p("bn2.bias"));
  return relu(add(h, shortcut(s, prefix, x, stride)));
};

/** torchvision's Bottleneck (v1.5, stride in conv2) under `prefix`, in training mode. */
export const bottleneck = (s: State, prefix: string, x: T64, stride: number): T64 => {
  const p = (n: string) => get(s, `${prefix}.${n}`);
  let h = relu(batchNorm(conv2d(x, p("conv1.weight"), undefined, 1, 0), p("bn1.weight"), p("bn1.bias")));
  h = relu(batchNorm(conv2d(h, p("conv2.weight"), undefined, stride, 1), p("bn2.weight"), p("bn2.bias")));
  h = batchNorm(conv2d(h, p("conv3.weight"), undefined, 1, 0), p("bn3.weight"), p("bn3.bias"));
  return relu(add(h, shortcut(s, prefix, x, stride)));
};

/** d(Σ f(state)·R)/d(state[name][index]) by central differences. */
export const finiteDifference = (
  f: (s: State) => T64,
  state: State,
  name: string,
  index: number,
  upstream: ArrayLike<number>,
  h = 1e-5,
): number => {
  const loss = (delta: number) => {
    const t = get(state, name);
    const data = Float64Array.from(t.data);
    data[index] += delta;
    const out = f(new Map([...state, [name, { data, shape: t.shape }]]));
    let l = 0;
    for (let i = 0; i < out.data.length; i++) l += out.data[i] * upstream[i];
    return l;
  };
  return (loss(h) - loss(-h)) / (2 * h);
};
