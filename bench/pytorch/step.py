"""
The training step of bench:encoder's networks in PyTorch, to read our images/s against on the same machine: the
convnet and convnet5 with the MLP head (128 -> 128 -> 64) on 1x28x28 at batch 256, and ResNet-18 with the CIFAR stem
and a linear head (512 -> 128) on 3x32x32 at batch 64; each ends in the L2 normalisation, as ours. A step is a
train-mode forward, a backward of a loss over the features, and one SGD update with momentum and weight decay;
"forward" is an eval-mode forward under no_grad. Figures are images per second, best of REPS timed runs of STEPS
steps each, after warm-up, synchronised on CUDA. Runs on CUDA when there is one, else on the CPU (THREADS threads).

    python3 bench/pytorch/step.py [name filter]        # e.g. convnet5; STEPS=20 REPS=3 THREADS=2 DEVICE=cpu
"""
import os, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

device = os.environ.get("DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
torch.set_num_threads(int(os.environ.get("THREADS", str(os.cpu_count() or 1))))
STEPS = int(os.environ.get("STEPS", "20")); REPS = int(os.environ.get("REPS", "3"))
only = sys.argv[1] if len(sys.argv) > 1 else ""

class ConvNet(nn.Module):  # src/nn/models.ts `convnet` / `convnet5` (conv3x3 + BN + ReLU, global mean, MLP head)
    def __init__(self, layers):
        super().__init__()
        self.body = nn.Sequential(*[m for i, o, s in layers
                                    for m in (nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())])
        self.fc = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64))
    def forward(self, x): return F.normalize(self.fc(self.body(x).mean(dim=(2, 3))), dim=1)

class Basic(nn.Module):  # torchvision's BasicBlock
    def __init__(self, i, o, s):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.down = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)) if s != 1 or i != o else None
    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))

class ResNet18Cifar(nn.Module):  # `resnet18-cifar`: 3x3 stem at stride 1, no max-pool, linear head
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        blocks, c = [], 64
        for o, s in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks += [Basic(c, o, s), Basic(o, o, 1)]; c = o
        self.blocks = nn.Sequential(*blocks); self.fc = nn.Linear(512, 128)
    def forward(self, x): return F.normalize(self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3))), dim=1)

CONVNET = [(1, 32, 1), (32, 64, 2), (64, 128, 2)]
NETS = [("convnet + MLP head", lambda: ConvNet(CONVNET), (256, 1, 28, 28)),
        ("convnet5 + MLP head", lambda: ConvNet(CONVNET + [(128, 128, 2), (128, 128, 1)]), (256, 1, 28, 28)),
        ("resnet18-cifar + linear head", ResNet18Cifar, (64, 3, 32, 32))]

def sync():
    if device == "cuda": torch.cuda.synchronize()

def rate(fn, batch):
    for _ in range(3): fn()
    sync(); best = float("inf")
    for _ in range(REPS):
        t0 = time.perf_counter()
        for _ in range(STEPS): fn()
        sync(); best = min(best, time.perf_counter() - t0)
    return STEPS * batch / best

name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
print(f"PyTorch {torch.__version__} on {device} ({name}); best of {REPS} runs of {STEPS} steps")
print(f"{'network':32} {'batch':>5} {'forward img/s':>14} {'step img/s':>11}")
for label, make, shape in NETS:
    if only not in label: continue
    torch.manual_seed(0)
    net = make().to(device); x = torch.randn(shape, device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    def step():
        opt.zero_grad(set_to_none=True); net(x).square().sum().backward(); opt.step()
    def forward():
        with torch.no_grad(): net(x)
    net.train(); s = rate(step, shape[0])
    net.eval(); f = rate(forward, shape[0])
    print(f"{label:32} {shape[0]:>5} {f:>14.0f} {s:>11.0f}")
