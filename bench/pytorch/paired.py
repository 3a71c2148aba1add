"""
Paired PCL vs InfoNCE-only summary of mnist_reference.py runs: reads the final JSON line ({"knn20", "linear", "ami",
"nmi"}) of each log and prints every seed, mean ± sd per method (sample sd, n − 1) and the paired difference
PCL − InfoNCE over the seeds both finished: mean ± standard error (sd of the differences / sqrt(n)).

    python3 bench/pytorch/paired.py 'LOGDIR/convnet5-pcl-s{seed}.log' 'LOGDIR/convnet5-infonce-s{seed}.log' 0,1,2

Standard library only.
"""
import json, math, os, statistics, sys

pcl_pattern, info_pattern = sys.argv[1], sys.argv[2]
seeds = [int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "0,1,2").split(",")]
METRICS = [("knn20", 100, "kNN %"), ("linear", 100, "linear %"), ("ami", 1, "AMI"), ("nmi", 1, "NMI")]

def final(path):
    if not os.path.exists(path): return None
    for line in reversed(open(path).read().splitlines()):
        if line.startswith("{") and "knn20" in line: return json.loads(line)
    return None

runs = {m: {s: final(p.format(seed=s)) for s in seeds} for m, p in [("PCL", pcl_pattern), ("InfoNCE", info_pattern)]}
fmt = lambda v, scale: f"{v * scale:.2f}" if scale == 100 else f"{v:.3f}"
print("seed  method   " + "  ".join(f"{name:>9}" for _, _, name in METRICS))
for s in seeds:
    for m in runs:
        r = runs[m][s]
        cells = [fmt(r[k], sc) if r else "-" for k, sc, _ in METRICS]
        print(f"{s:<5} {m:<8} " + "  ".join(f"{c:>9}" for c in cells))
def mean_sd(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else float("nan"))
print()
for m in runs:
    done = [r for r in runs[m].values() if r]
    if not done: continue
    cells = []
    for k, sc, _ in METRICS:
        mu, sd = mean_sd([r[k] * sc for r in done])
        cells.append(f"{mu:.3f} ± {sd:.3f}" if sc == 1 else f"{mu:.2f} ± {sd:.2f}")
    print(f"{m:<8} mean ± sd over {len(done)} seeds: " + ", ".join(f"{name} {c}" for (_, _, name), c in zip(METRICS, cells)))
paired = [s for s in seeds if runs["PCL"][s] and runs["InfoNCE"][s]]
if paired:
    cells = []
    for k, sc, name in METRICS:
        d = [(runs["PCL"][s][k] - runs["InfoNCE"][s][k]) * sc for s in paired]
        mu = statistics.mean(d); se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        cells.append(f"{name} {mu:+.3f} ± {se:.3f}" if sc == 1 else f"{name} {mu:+.2f} ± {se:.2f}")
    print(f"PCL − InfoNCE, paired over seeds {paired}, mean ± SE: " + ", ".join(cells))
