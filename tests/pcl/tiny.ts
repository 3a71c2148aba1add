/** A PCL run small enough for llvmpipe: 8 steps per epoch, one warm-up epoch, checkpoints every 3 steps. */
export const tinyConfig = {
  name: "tiny",
  seed: 4,
  train: { kind: "synthetic", n: 128, side: 12, seed: 2 },
  augment: { preset: "mnist", side: 12 },
  model: { arch: "convnet", head: "mlp", hidden: 16, dim: 8 },
  epochs: 2,
  warmupEpochs: 1,
  batchSize: 16,
  optimizer: { lr: 0.05 },
  moco: { queueSize: 32, bnGroups: 2 },
  pcl: { clusters: [3, 5], negatives: 2, kmeans: { iterations: 5, restarts: 2 } },
  checkpoint: { everySteps: 3, keep: 20 },
};
