#!/usr/bin/env bash
# Sets up everything (PyTorch venv, build) and runs a real demo sweep:
# a coordinator on a local SQLite file, two local workers training BMEnet
# with libtorch, then the ablation report.
#
# Data: the CIFAR-10 copy at $SWEEP_CIFAR_DIR, or ../shared/datasets/
# cifar-10-batches-bin next to this repo; otherwise a small generated
# dataset in the same format (and the report says so).
#
# The demo (examples/demo.toml) trains on a SUBSET (1,024 training and 512
# test images, 2 epochs, 4 seeds) so it finishes in about 4 minutes on 2 CPU
# cores: skip on/off at depth 8 and 32 without batch norm. Its report shows
# the depth-32 skip effect with a paired interval above zero, and its
# gradient-flow picture the vanishing gradients of the plain network; what
# it leaves out is in the README. Edit .sweep/demo/grid.toml for more.
set -euo pipefail
# shellcheck source=scripts/env.sh
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
else
    data="$ROOT/.sweep/demo/synthetic-cifar"
    say "CIFAR-10 not found; generating a small synthetic dataset in $data"
    say "(on synthetic data the demo shows the machinery, not the lecture's result)"
    target/debug/sweep-worker synth-data --out "$data" --train 1024 --test 512
fi

# The demo grid is examples/demo.toml (checked by cli/tests/demo.rs), with
# the data folder found above.
sed "s|^path = .*|path = \"$data\"|" examples/demo.toml > .sweep/demo/grid.toml

say "running the demo sweep: 16 trials on 2 local workers, about 4 minutes (logs in .sweep/logs)"
target/debug/sweep run .sweep/demo/grid.toml --workers 2 --state-dir .sweep \
    --out .sweep/demo/report --html .sweep/demo/report.html
say "pictures and tables: .sweep/demo/report/ (PNG, SVG, CSV) and .sweep/demo/report.html"

