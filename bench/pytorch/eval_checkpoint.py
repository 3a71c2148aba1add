"""
One of our checkpoints evaluated in PyTorch with the port's protocol (bench/pytorch/mnist_reference.py, docs/algorithm.md
section 7): the convnet or convnet5 rebuilt from the checkpoint's tensors (BN in eval mode), weighted kNN (k = 20,
T = 0.07) on the backbone features of the first BANK training images (default all 60,000), a logistic-regression probe
on the first 10,000 images' standardised backbone features, k-means (K = 10) AMI on the test set's head features.
An independent reading of our own evaluation, and a way to compare our runs with the port's on its 60,000-image bank.

    python3 bench/pytorch/eval_checkpoint.py runs/mnist/checkpoints/ckpt-0004-000156.safetensors [encoder_q] [BANK]

Needs torch, numpy and scikit-learn. DATA=fashion reads Fashion-MNIST as the port does.
"""
import json, os, struct, sys
import numpy as np, torch, torch.nn.functional as F
from protocol import evaluate, load

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
path, prefix = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "encoder_q"
bank_size = int(sys.argv[3]) if len(sys.argv) > 3 else 60000
Xtr, Ytr, Xte, Yte = load(os.environ.get("DATA", "mnist"))
MEAN, STD = 0.1307, 0.3081  # the mnist augmentation preset's normalisation (also used for Fashion-MNIST)

raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
W = {k: torch.tensor(np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"]))
     for k, v in header.items() if k != "__metadata__"}
strides = [1, 2, 2, 2, 1][:5 if f"{prefix}.conv5.weight" in W else 3]  # convnet5, or the convnet

def encode(x, head=False):
    for i, s in enumerate(strides, 1):
        x = F.conv2d(x, W[f"{prefix}.conv{i}.weight"], stride=s, padding=1)
        x = F.relu(F.batch_norm(x, W[f"{prefix}.bn{i}.running_mean"], W[f"{prefix}.bn{i}.running_var"],
                                W[f"{prefix}.bn{i}.weight"], W[f"{prefix}.bn{i}.bias"], False, 0.0, 1e-5))
    f = x.mean(dim=(2, 3))
    if not head:
        return f
    z = F.linear(F.relu(F.linear(f, W[f"{prefix}.fc.0.weight"], W[f"{prefix}.fc.0.bias"])),
                 W[f"{prefix}.fc.2.weight"], W[f"{prefix}.fc.2.bias"])
    return F.normalize(z, dim=1)

with torch.no_grad():
    features = lambda X, head=False: torch.cat([encode((X[i:i + 1000] - MEAN) / STD, head) for i in range(0, len(X), 1000)])
    bank, test, head = features(Xtr[:bank_size]), features(Xte), features(Xte, True)
print(json.dumps({"checkpoint": path, "encoder": prefix, "bank": bank_size,
                  **evaluate(bank, test, head, Ytr[:bank_size], Yte)}))
