#!/usr/bin/env bash
# Training speed of BMEnet: our Rust trainer (tch/libtorch) next to a plain
# PyTorch script of the same network and settings, side by side in one go.
# Prints a markdown table (for BENCHMARKS.md) on stdout; progress on stderr.
#
#   bench/train_speed.sh                      # defaults below
#   THREADS=4 DEPTHS="8 32" BATCHES="4 64" bench/train_speed.sh
#
# Environment:
#   PYTHON   python with torch (default: .venv/bin/python of the repo)
#   DATA     CIFAR-10 binary folder (default: ../shared/datasets/cifar-10-batches-bin
#            when present, else generated synthetic data)
#   THREADS  torch intra-op threads for both sides (default: nproc)
#   DEPTHS, BATCHES   configurations (default "8 32" and "4 64")
#   IMAGES   training images per epoch (default 1024); EPOCHS (default 2: the
#            first is warm-up, the last epoch's images/second is reported)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
THREADS="${THREADS:-$(nproc)}"
DEPTHS="${DEPTHS:-8 32}"
BATCHES="${BATCHES:-4 64}"
IMAGES="${IMAGES:-1024}"
EPOCHS="${EPOCHS:-2}"
if [[ -z "${DATA:-}" ]]; then
    for d in "$repo/../shared/datasets/cifar-10-batches-bin" /work/shared/datasets/cifar-10-batches-bin; do
        if [[ -f "$d/data_batch_1.bin" ]]; then DATA="$(cd "$d" && pwd)"; break; fi
    done
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ -z "${DATA:-}" ]]; then
    echo "no CIFAR-10 copy found: generating synthetic data" >&2
    DATA="$tmp/data"
fi

PATH="$(dirname "$PYTHON"):$PATH"
export PATH LIBTORCH_USE_PYTORCH=1
echo "building (release)..." >&2
cargo build --release -q -p sweep-worker --example train_bench >&2
bench_bin="$repo/target/release/examples/train_bench"

# Without CIFAR-10, random records (speed does not depend on content), written
# once so both sides read the same files.
if [[ ! -f "$DATA/data_batch_1.bin" ]]; then
    "$PYTHON" "$repo/bench/random_cifar.py" "$DATA" "$IMAGES"
fi

field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
echo "Machine: $(nproc) CPU cores ($cpu), no GPU used; torch threads: $THREADS; PyTorch $torch_version (libtorch of the same wheel for Rust)."
echo "Data: $DATA; $IMAGES training images per epoch, $EPOCHS epochs, last epoch timed."
echo
echo "| depth | batch | Rust tch (images/s) | PyTorch (images/s) | Rust / PyTorch |"
echo "|------:|------:|--------------------:|-------------------:|---------------:|"
for depth in $DEPTHS; do
    for batch in $BATCHES; do
        echo "depth $depth batch $batch: rust..." >&2
        r="$("$bench_bin" --depth "$depth" --batch "$batch" --images "$IMAGES" --epochs "$EPOCHS" \
              --threads "$THREADS" --data "$DATA" | tail -1 | field images_per_sec)"
        echo "depth $depth batch $batch: pytorch..." >&2
        p="$("$PYTHON" "$repo/bench/bmenet_pytorch.py" --depth "$depth" --batch "$batch" \
              --images "$IMAGES" --epochs "$EPOCHS" --threads "$THREADS" --data "$DATA" 2>/dev/null \
              | tail -1 | field images_per_sec)"
        ratio="$(awk -v r="$r" -v p="$p" 'BEGIN { if (p > 0) printf "%.2f", r / p; else print "-" }')"
        printf '| %5s | %5s | %19s | %18s | %14s |\n' "$depth" "$batch" "$r" "$p" "$ratio"
    done
done
