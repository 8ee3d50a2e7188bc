#!/usr/bin/env bash
# Orchestration overhead: no-op trials per second through real gRPC, SQLite
# and PostgreSQL side by side in one run, plus report aggregation time.
# Usage: bench/overhead.sh [TRIALS] [WORKERS]   (default 10000 16)
set -euo pipefail
cd "$(dirname "$0")/.."
export SWEEP_BENCH_POSTGRES_URL="${SWEEP_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo run --quiet --release --locked -p sweep-coordinator --example overhead_bench -- "${1:-10000}" "${2:-16}"
