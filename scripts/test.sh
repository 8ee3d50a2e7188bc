#!/usr/bin/env bash
# The whole test suite: unit, property, store conformance (SQLite and
# PostgreSQL), orchestration (real worker processes), CLI end-to-end and
# libtorch training tests. `.ci/run` calls exactly this.
#
# PostgreSQL: SWEEP_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test);
# the suite fails if it cannot connect.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ensure_cargo
ensure_torch

export SWEEP_TEST_POSTGRES_URL="${SWEEP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export SWEEP_REQUIRE_POSTGRES=1
# The Slurm test fails, instead of skipping, when no cluster can be started.
export SWEEP_REQUIRE_SLURM=1
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    say "PostgreSQL is not answering on 127.0.0.1:5432; trying to start it"
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)" main start || true
    fi
fi

# The dashboard's browser test (cli/tests/dashboard.rs) drives headless
# Chromium over WebDriver: installed here when missing (Debian packages
# chromium and chromium-driver, as root), and the test fails rather than
# skips without them. Its screenshot lands in target/artifacts/.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing chromium and chromium-driver (apt-get)"
        apt_log="$(mktemp)"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >"$apt_log" 2>&1 \
            && ! { apt-get update -q >>"$apt_log" 2>&1 \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >>"$apt_log" 2>&1; }; then
            tail -n 20 "$apt_log" >&2
        fi
    fi
fi
export SWEEP_REQUIRE_BROWSER=1
export SWEEP_ARTIFACTS="$ROOT/target/artifacts"

# `cargo test --workspace` builds every member's binaries before any test
# runs, so the CLI tests find `sweep-worker` next to `sweep`. (A separate
# `cargo build --bins` first would compile libtorch's bindings twice: dev-
# dependencies change the feature set.)
# Style first: one format (rustfmt.toml) and no lint warnings (the
# [workspace.lints] table in Cargo.toml), so a failure says so before the
# long build.
say "checking the format (cargo fmt --check)"
cargo fmt --all --check
say "linting (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "building and running the tests"
cargo test --workspace --locked -- --test-threads="${SWEEP_TEST_THREADS:-2}"

# The GPU benchmark's script on the CPU at tiny sizes (about a minute), so
# it cannot rot between the sessions that have a GPU (issue 10).
say "bench/scale.sh --quick (no-op trials/s through a real coordinator; fails below half the targets)"
bench/scale.sh --quick

say "bench/gpu.sh --device cpu --quick"
BENCH_BIN="$ROOT/target/debug/examples/train_bench" bench/gpu.sh --device cpu --quick

# The deployment files and every shell script, validated statically (no
# container daemon or Kubernetes cluster here; issue 12).
scripts/validate-deploy.sh
