#!/usr/bin/env bash
# How busy sweep keeps one device (issue 10): BMEnet training throughput of
#   (a) one plain PyTorch trial (bench/bmenet_pytorch.py, its own best
#       settings: cuDNN benchmark on, data on the device),
#   (b) one trial of ours (the real trainer, through train_bench),
#   (c) ours with K seeds fused into one model,
#   (d) ours with N trainings side by side on the device (N processes, each
#       as one `sweep-worker` would run: several workers per device),
#   (e) fused x side by side,
#   (f) the largest fused group at `[train] precision = "bf16"`,
# each as a ratio to (a), with GPU utilisation and memory (nvidia-smi) on a
# GPU, and the extrapolated wall time of the lecture's grid (48 cells x 1
# seed, 6 epochs of 50,000 images) for (a) one after the other vs our best.
# Prints a markdown table (for BENCHMARKS.md) on stdout, progress on stderr.
#
#   bench/gpu.sh                         # cuda:0, full sizes (about 6 min on an H100/H200)
#   bench/gpu.sh --device cpu --quick    # CI: tiny sizes, under 2 min on 2 cores
#
# Needs only the built binaries and a python with torch:
#   BENCH_BIN  train_bench binary (default target/release/examples/train_bench,
#              else target/debug/examples/train_bench)
#   PYTHON     python with torch (default: .venv/bin/python of the repo, else python3)
#   DATA       CIFAR-10 binary folder (default: ../shared/datasets/cifar-10-batches-bin
#              when present, else random records written to a temporary folder)
# The worker binary must find libtorch: with the PyPI wheel, put
# "$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib"
# on LD_LIBRARY_PATH.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE="cuda:0"
QUICK=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -z "${BENCH_BIN:-}" ]]; then
    for b in "$repo/target/release/examples/train_bench" "$repo/target/debug/examples/train_bench"; do
        if [[ -x "$b" ]]; then BENCH_BIN="$b"; break; fi
    done
fi
if [[ -z "${BENCH_BIN:-}" || ! -x "$BENCH_BIN" ]]; then
    echo "bench/gpu.sh: no train_bench binary; build it with: cargo build --release --example train_bench (or set BENCH_BIN)" >&2
    exit 2
fi

if [[ "$QUICK" == 1 ]]; then
    DEPTHS="${DEPTHS:-8}"; BATCHES="${BATCHES:-4}"; FUSES="${FUSES:-2}"; SLOTS="${SLOTS:-2}"
    IMAGES="${IMAGES:-64}"; EPOCHS="${EPOCHS:-2}"
else
    DEPTHS="${DEPTHS:-8 32}"; BATCHES="${BATCHES:-4 64}"; FUSES="${FUSES:-4 8 16}"; SLOTS="${SLOTS:-4}"
    IMAGES="${IMAGES:-2048}"; EPOCHS="${EPOCHS:-2}"
fi
on_gpu=0
[[ "$DEVICE" == cuda* ]] && on_gpu=1
THREADS="${THREADS:-$(nproc)}"
# Side-by-side processes on a CPU share its cores.
slot_threads() { if [[ "$on_gpu" == 1 ]]; then echo "$THREADS"; else echo $(( THREADS / $1 > 0 ? THREADS / $1 : 1 )); fi; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"; [[ -n "${smi_pid:-}" ]] && kill "$smi_pid" 2>/dev/null || true' EXIT
if [[ -z "${DATA:-}" ]]; then
    d="${SWEEP_CIFAR_DIR:-$repo/../shared/datasets/cifar-10-batches-bin}"
    if [[ -f "$d/data_batch_1.bin" ]]; then DATA="$(cd "$d" && pwd)"; fi
fi
if [[ -z "${DATA:-}" ]]; then
    DATA="$tmp/data"
    "$PYTHON" "$repo/bench/random_cifar.py" "$DATA" "$IMAGES"
fi

field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" | tail -1; }

# GPU utilisation (mean %) and peak memory (MiB) while a command runs.
gpu_watch_start() {
    [[ "$on_gpu" == 1 ]] && command -v nvidia-smi >/dev/null || return 0
    local idx="${DEVICE#cuda}"; idx="${idx#:}"; idx="${idx:-0}"
    nvidia-smi -i "$idx" --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 > "$tmp/smi" 2>/dev/null &
    smi_pid=$!
}
gpu_watch_stop() {
    if [[ -n "${smi_pid:-}" ]]; then
        kill "$smi_pid" 2>/dev/null || true; wait "$smi_pid" 2>/dev/null || true; smi_pid=""
        awk -F', *' '{ u += $1; n++; if ($2 > m) m = $2 } END { if (n) printf "%.0f%% / %d MiB", u / n, m; else print "-" }' "$tmp/smi"
    else
        echo "-"
    fi
}

ours() { # depth batch fuse threads [precision]
    "$BENCH_BIN" --depth "$1" --batch "$2" --fuse "$3" --images "$IMAGES" --epochs "$EPOCHS" \
        --threads "$4" --device "$DEVICE" --data "$DATA" --precision "${5:-fp32}" 2>"$tmp/err" | field images_per_sec \
        || { cat "$tmp/err" >&2; touch "$tmp/failed"; echo 0; }
}
side_by_side() { # depth batch fuse n: aggregate images/s of n concurrent runs
    local pids=() i total=0
    for ((i = 0; i < $4; i++)); do
        ( ours "$1" "$2" "$3" "$(slot_threads "$4")" > "$tmp/slot$i" ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    for ((i = 0; i < $4; i++)); do total="$(awk -v t="$total" -v v="$(cat "$tmp/slot$i")" 'BEGIN { print t + v }')"; done
    echo "$total"
}
ratio() { awk -v r="$1" -v p="$2" 'BEGIN { if (p > 0) printf "%.2f", r / p; else print "-" }'; }
hours() { awk -v ips="$1" 'BEGIN { if (ips > 0) { s = 48 * 6 * 50000 / ips; if (s >= 3600) printf "%.1f h", s / 3600; else printf "%.0f min", s / 60 } else print "-" }'; }

device_name="$DEVICE"
if [[ "$on_gpu" == 1 ]] && command -v nvidia-smi >/dev/null; then
    device_name="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
elif [[ "$on_gpu" == 0 ]]; then
    device_name="$(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
fi
torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')"
echo "Device: $device_name; PyTorch $torch_version; $IMAGES training images per epoch, $EPOCHS epochs, last epoch timed."
echo
echo "| depth | batch | variant | images/s | vs (a) | GPU util / peak memory |"
echo "|------:|------:|:--------|---------:|-------:|:-----------------------|"
summary=()
for depth in $DEPTHS; do
    for batch in $BATCHES; do
        echo "depth $depth batch $batch: (a) pytorch..." >&2
        gpu_watch_start
        a="$("$PYTHON" "$repo/bench/bmenet_pytorch.py" --depth "$depth" --batch "$batch" --images "$IMAGES" \
              --epochs "$EPOCHS" --threads "$THREADS" --device "$DEVICE" --data "$DATA" 2>/dev/null | field images_per_sec)"
        if [[ -z "$a" ]]; then echo "PyTorch reference failed" >&2; touch "$tmp/failed"; a=0; fi
        printf '| %s | %s | (a) PyTorch, one trial | %s | 1.00 | %s |\n' "$depth" "$batch" "$a" "$(gpu_watch_stop)"
        best="$a"; best_name="(a)"
        row() { # name value [fp32|bf16]: only fp32 rows compete for "ours, best" (a) is fp32
            printf '| %s | %s | %s | %s | %s | %s |\n' "$depth" "$batch" "$1" "$2" "$(ratio "$2" "$a")" "$(gpu_watch_stop)"
            if [[ "${3:-fp32}" == fp32 ]] && awk -v v="$2" -v b="$best" 'BEGIN { exit !(v > b) }'; then
                best="$2"; best_name="$1"
            fi
        }
        echo "depth $depth batch $batch: (b) ours..." >&2
        gpu_watch_start; row "(b) ours, one trial" "$(ours "$depth" "$batch" 1 "$THREADS")"
        for k in $FUSES; do
            echo "depth $depth batch $batch: (c) fused K=$k..." >&2
            gpu_watch_start; row "(c) ours, $k seeds fused" "$(ours "$depth" "$batch" "$k" "$THREADS")"
        done
        k="${FUSES##* }"
        echo "depth $depth batch $batch: (f) fused K=$k at bf16..." >&2
        gpu_watch_start; row "(f) ours, $k seeds fused, bf16" "$(ours "$depth" "$batch" "$k" "$THREADS" bf16)" bf16
        for n in $SLOTS; do
            echo "depth $depth batch $batch: (d) $n side by side..." >&2
            gpu_watch_start; row "(d) ours, $n trainings side by side" "$(side_by_side "$depth" "$batch" 1 "$n")"
            k="${FUSES##* }"
            echo "depth $depth batch $batch: (e) $n x fused K=$k..." >&2
            gpu_watch_start; row "(e) ours, $n side by side x $k fused" "$(side_by_side "$depth" "$batch" "$k" "$n")"
        done
        summary+=("| $depth | $batch | $(hours "$a") | $(hours "$best") ($best_name) |")
    done
done
echo
echo "The lecture's grid (48 cells x 1 seed, 6 epochs of 50,000 images), extrapolated from the figures above as if every cell had this depth and batch:"
echo
echo "| depth | batch | (a) one after the other | ours, best |"
echo "|------:|------:|------------------------:|-----------:|"
printf '%s\n' "${summary[@]}"
if [[ -f "$tmp/failed" ]]; then
    echo "bench/gpu.sh: some runs failed (see above)" >&2
    exit 1
fi
