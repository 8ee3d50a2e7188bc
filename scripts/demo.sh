#!/usr/bin/env bash
# Sets up everything (PyTorch venv, build) and runs a real demo sweep:
# a coordinator on a local SQLite file, two local workers training BMEnet
# with libtorch, then the ablation report.
#
# Data: the CIFAR-10 copy at $SWEEP_CIFAR_DIR, or ../shared/datasets/
# cifar-10-batches-bin next to this repo; otherwise a small generated
# dataset in the same format (and the report says so).
#
# The demo trains on a SUBSET (1,024 training and 512 test images, 2 epochs)
# so it finishes in a few minutes on 2 CPU cores; it shows the machinery,
# not the lecture's final accuracies. Edit .sweep/demo/grid.toml for more.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ensure_cargo
ensure_torch

say "building sweep and sweep-worker"
cargo build --bins --locked

data="$(cifar_dir)"
mkdir -p .sweep/demo
if [ -f "$data/test_batch.bin" ]; then
    data="$(cd "$data" && pwd)"
    say "using CIFAR-10 from $data (read-only)"
    kind="CIFAR-10 (subset)"
else
    data="$ROOT/.sweep/demo/synthetic-cifar"
    say "CIFAR-10 not found; generating a small synthetic dataset in $data"
    target/debug/sweep-worker synth-data --out "$data" --train 1024 --test 512
    kind="synthetic data"
fi

cat > .sweep/demo/grid.toml <<TOML
# Demo: skip connections on/off at depth 8 and 32, on $kind.
name = "demo"
seeds = 2

[grid]
depth = [8, 32]
skip = [true, false]
init = "default"
batchnorm = true

[train]
epochs = 2
batch_size = 16
optimizer = "adam"
lr = 1e-3
log_every = 8

[data]
dataset = "cifar10"
path = "$data"
train_subset = 1024
test_subset = 512
TOML

say "running the demo sweep (2 local workers; logs in .sweep/logs)"
target/debug/sweep run .sweep/demo/grid.toml --workers 2 --state-dir .sweep \
    --out .sweep/demo/report --html .sweep/demo/report.html
say "pictures and tables: .sweep/demo/report/ (PNG, SVG, CSV) and .sweep/demo/report.html"

