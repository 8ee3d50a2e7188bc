#!/usr/bin/env bash
# The lecture's three "why" analyses on real CIFAR-10, on this machine's
# CPUs (docs/science.md has the figures this printed): BMEnet at depth 32,
# skip connections on and off, the default and the Kaiming-normal init,
# batch norm on, 2 seeds; every trial also runs
#   - the lesion study (Veit et al.): test accuracy with blocks removed,
#   - the variance analysis (Glorot & Bengio, the lecture's Eqs. 5 and 6),
#   - a 2-D loss landscape (Li et al.), 11 x 11 points on 256 images.
#
# A SUBSET trains (2,048 training and 512 test images, 2 epochs, Adam):
# about 25 minutes on 2 CPU cores. Data: $SWEEP_CIFAR_DIR, or
# ../shared/datasets/cifar-10-batches-bin next to this repo (read only).
# Output: .sweep/science/report (pictures, CSV), report.html, report.txt.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ensure_cargo
ensure_torch

say "building sweep and sweep-worker"
cargo build --bins --locked

data="$(cifar_dir)"
if [ ! -f "$data/test_batch.bin" ]; then
    echo "science.sh: CIFAR-10 (binary version) not found at $data; set SWEEP_CIFAR_DIR" >&2
    exit 2
fi
data="$(cd "$data" && pwd)"
mkdir -p .sweep/science

cat > .sweep/science/grid.toml <<TOML
# The lecture's analyses at depth 32 on a CIFAR-10 subset.
name = "science"
seeds = 2

[grid]
depth = 32
skip = [true, false]
init = ["default", "kaiming_normal"]
batchnorm = true

[train]
epochs = 2
batch_size = 16
optimizer = "adam"
lr = 1e-3
log_every = 16

[analysis]
lesion = true
variance = true
landscape = true
landscape_resolution = 11
landscape_images = 256

[data]
dataset = "cifar10"
path = "$data"
train_subset = 2048
test_subset = 512
TOML

say "running the sweep (2 local workers; logs in .sweep/logs)"
target/debug/sweep run .sweep/science/grid.toml --workers 2 --state-dir .sweep \
    --out .sweep/science/report --html .sweep/science/report.html | tee .sweep/science/report.txt
say "pictures and tables: .sweep/science/report/ and .sweep/science/report.html"
