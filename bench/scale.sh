#!/usr/bin/env bash
# Orchestration at scale, ours and the alternatives side by side in one run
# (BENCHMARKS.md, "Orchestration at scale"):
#
#   1. no-op trials per second: a real `sweep serve` (SQLite, then
#      PostgreSQL) and `sweep-loadgen` with 64 simulated workers, each trial
#      10 metric points; RUNS runs each, medians; then metric points per
#      second with 100 points per trial (in `Complete`, or streamed);
#   2. Lease round trips with 1,000 connected workers (trials of 5 s,
#      heartbeats every 2 s), p50 and p99;
#   3. 100,000 trials through 1,000 workers: the coordinator's peak memory,
#      then `sweep report` of the 100,000 trials, table and pictures (RUNS
#      runs each, medians);
#   4. the same no-op workload on Optuna (RDB storage: SQLite and
#      PostgreSQL, 4 worker processes) and Ray Tune, installed into the
#      bench's own virtualenv (bench/.venv) from the package index.
#
# Usage: bench/scale.sh [--quick]
#   --quick   what CI runs (under a minute after the build): step 1 only,
#             debug build, one run of 10,000 trials per backend; fails when
#             throughput is below half the targets (1,000 trials/s on
#             SQLite, 500 on PostgreSQL).
# Knobs: RUNS (default 3), TRIALS (default 20000), SWEEP_BENCH_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/test; empty: SQLite only),
# ALTERNATIVES=0 to skip step 4, OUT (default target/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_cargo

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
RUNS="${RUNS:-3}"
TRIALS="${TRIALS:-20000}"
PG_URL="${SWEEP_BENCH_POSTGRES_URL-${SWEEP_TEST_POSTGRES_URL-postgres://postgres@127.0.0.1:5432/test}}"
OUT="${OUT:-$ROOT/target/bench}"
mkdir -p "$OUT"
RESULTS="$OUT/scale-$(date +%Y%m%d-%H%M%S).jsonl"
: > "$RESULTS"

if [ "$QUICK" = 1 ]; then
    RUNS=1
    TRIALS=10000
    say "building sweep and sweep-loadgen (debug)"
    cargo build --quiet --locked -p sweep -p sweep-bench
    BIN="$ROOT/target/debug"
else
    say "building sweep and sweep-loadgen (release)"
    cargo build --quiet --locked --release -p sweep -p sweep-bench
    BIN="$ROOT/target/release"
fi

WORK="$(mktemp -d)"
COORD_PID=""
PG_SCHEMAS=()
cleanup() {
    if [ -n "$COORD_PID" ]; then kill "$COORD_PID" 2>/dev/null || true; wait "$COORD_PID" 2>/dev/null || true; fi
    for s in "${PG_SCHEMAS[@]+"${PG_SCHEMAS[@]}"}"; do pg_exec "DROP SCHEMA IF EXISTS $s CASCADE" || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Runs one SQL statement on $PG_URL (psql when present, else Python).
pg_exec() {
    if command -v psql >/dev/null 2>&1; then
        psql -q -X "$PG_URL" -c "$1" >/dev/null
    else
        "$BENCH_PY" -c 'import sys, psycopg2; c = psycopg2.connect(sys.argv[1]); c.autocommit = True; c.cursor().execute(sys.argv[2])' "$PG_URL" "$1"
    fi
}

# The value of one SQL query on $PG_URL.
pg_value() {
    if command -v psql >/dev/null 2>&1; then
        psql -qAtX "$PG_URL" -c "$1"
    else
        "$BENCH_PY" -c 'import sys, psycopg2; c = psycopg2.connect(sys.argv[1]); k = c.cursor(); k.execute(sys.argv[2]); print(k.fetchone()[0])' "$PG_URL" "$1"
    fi
}

# A fresh database for one run, its URL in DB_URL (set here, not in a
# subshell, so the cleanup knows every schema made).
fresh_db() {
    case "$1" in
    sqlite) DB_URL="sqlite://$(mktemp -u "$WORK/run-XXXXXX.db")" ;;
    postgres)
        local schema="scale_$$_$RANDOM$RANDOM"
        pg_exec "CREATE SCHEMA $schema"
        PG_SCHEMAS+=("$schema")
        local sep='?'
        case "$PG_URL" in *\?*) sep='&' ;; esac
        DB_URL="$PG_URL${sep}options=-c%20search_path%3D$schema"
        ;;
    esac
}

start_coordinator() {
    local port
    port="$(free_port)"
    COORD_URL="http://127.0.0.1:$port"
    "$BIN/sweep" serve --database-url "$1" --listen "127.0.0.1:$port" >"$WORK/serve.log" 2>&1 &
    COORD_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$COORD_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/serve.log" >&2
    echo "the coordinator did not start" >&2
    exit 1
}

stop_coordinator() {
    kill "$COORD_PID" 2>/dev/null || true
    wait "$COORD_PID" 2>/dev/null || true
    COORD_PID=""
}

# record STEP BACKEND JSON: appends one result line.
record() { python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d["step"]=sys.argv[1]; d["backend"]=sys.argv[2]; print(json.dumps(d))' "$1" "$2" "$3" >>"$RESULTS"; }

# measure STEP BACKEND [--keep] LOADGEN-ARGS...: a fresh database and
# coordinator, one sweep-loadgen run recorded under STEP (--keep leaves the
# coordinator running for what follows).
measure() {
    local step="$1" backend="$2" keep=0 json
    shift 2
    if [ "${1:-}" = --keep ]; then keep=1; shift; fi
    fresh_db "$backend"
    start_coordinator "$DB_URL"
    json="$("$BIN/sweep-loadgen" --coordinator "$COORD_URL" --coordinator-pid "$COORD_PID" --json "$@")"
    [ "$keep" = 1 ] || stop_coordinator
    record "$step" "$backend" "$json"
    echo "$json"
}

BACKENDS=(sqlite)
[ -n "$PG_URL" ] && BACKENDS+=(postgres)
if [ -n "$PG_URL" ] && ! command -v psql >/dev/null 2>&1; then
    BENCH_PY="$ROOT/bench/.venv/bin/python"
    [ -x "$BENCH_PY" ] || { python3 -m venv "$ROOT/bench/.venv" && "$BENCH_PY" -m pip install -q psycopg2-binary; }
fi

# 1. Throughput.
for backend in "${BACKENDS[@]}"; do
    for run in $(seq "$RUNS"); do
        say "throughput: $backend, run $run of $RUNS ($TRIALS no-op trials, 64 workers)"
        floor=()
        if [ "$QUICK" = 1 ]; then
            floor=(--min-trials-per-sec "$([ "$backend" = sqlite ] && echo 1000 || echo 500)")
        fi
        measure throughput "$backend" --submit "$TRIALS" --workers 64 "${floor[@]+"${floor[@]}"}"
    done
done

if [ "$QUICK" = 0 ]; then
    # 1b. Metric points per second: 100 points per trial, handed in with
    # the result or streamed on each worker's long-lived metric stream.
    for backend in "${BACKENDS[@]}"; do
        for path in complete stream; do
            for run in $(seq "$RUNS"); do
                say "points: $backend, 100 points per trial via $path, run $run of $RUNS (10,000 trials, 64 workers)"
                measure points "$backend" --submit 10000 --workers 64 --points 100 --metrics "$path"
            done
        done
    done

    # 2. Lease latency with 1,000 connected workers.
    for backend in "${BACKENDS[@]}"; do
        say "lease latency: $backend, 1,000 workers, trials of 5 s, heartbeats every 2 s, 30 s"
        measure latency "$backend" --submit 20000 --workers 1000 --trial-ms 5000 --heartbeat-ms 2000 --seconds 30
    done

    # 3. 100,000 trials: memory, then the report.
    for backend in "${BACKENDS[@]}"; do
        say "100,000 trials: $backend, 1,000 workers"
        measure memory "$backend" --keep --submit 100000 --workers 1000
        if [ "$backend" = postgres ] && [ "$(pg_value 'SHOW autovacuum')" = off ]; then
            # A server with autovacuum off (this machine's) never gathers
            # the planner's statistics, and the report's curve query then
            # walks the trials one index probe at a time (1.7 s instead of
            # 0.35 s for 100,000 trials): gather them, as autovacuum (on by
            # default) would have.
            say "autovacuum is off on this server: ANALYZE, as autovacuum would"
            pg_exec "ANALYZE ${PG_SCHEMAS[-1]}.trials; ANALYZE ${PG_SCHEMAS[-1]}.metrics"
        fi
        for run in $(seq "$RUNS"); do
            for kind in table pictures; do
                args=()
                [ "$kind" = pictures ] && args=(--out "$WORK/report-$backend")
                t0="$(date +%s%N)"
                "$BIN/sweep" report loadgen --coordinator "$COORD_URL" "${args[@]+"${args[@]}"}" >"$WORK/report.txt"
                t1="$(date +%s%N)"
                record report "$backend" "{\"kind\": \"$kind\", \"trials\": 100000, \"ms\": $(((t1 - t0) / 1000000))}"
            done
        done
        stop_coordinator
    done

    # 4. The alternatives.
    if [ "${ALTERNATIVES:-1}" = 1 ]; then
        BENCH_PY="$ROOT/bench/.venv/bin/python"
        if ! "$BENCH_PY" -c 'import optuna, psycopg2' 2>/dev/null; then
            say "installing Optuna and Ray Tune into bench/.venv (from the package index; once)"
            [ -x "$BENCH_PY" ] || python3 -m venv "$ROOT/bench/.venv"
            "$BENCH_PY" -m pip install -q --disable-pip-version-check optuna psycopg2-binary
            "$BENCH_PY" -m pip install -q --disable-pip-version-check "ray[tune]" || say "Ray Tune did not install: skipped"
        fi
        # A tool that fails is reported and skipped: the table still prints.
        alternative() {
            local backend="$1" out
            shift
            if out="$("$BENCH_PY" bench/alternatives.py "$@" 2>"$WORK/alternative.log" | tail -n 1)" && [ -n "$out" ]; then
                record alternative "$backend" "$out"
                echo "$out"
            else
                say "$* failed:"
                tail -n 5 "$WORK/alternative.log" >&2
            fi
        }
        for run in $(seq "$RUNS"); do
            say "Optuna, SQLite storage, run $run of $RUNS (400 no-op trials, 4 processes)"
            alternative sqlite optuna --storage "sqlite:///$WORK/optuna-$run.db" --trials 400 --workers 4
            if [ -n "$PG_URL" ]; then
                say "Optuna, PostgreSQL storage, run $run of $RUNS"
                alternative postgres optuna --storage "${PG_URL/postgres:/postgresql+psycopg2:}" --trials 400 --workers 4
            fi
        done
        if "$BENCH_PY" -c 'import ray.tune' 2>/dev/null; then
            say "Ray Tune, one run (100 no-op trials, 4 at once)"
            alternative local ray --trials 100 --workers 4
        fi
    fi
fi

say "results: $RESULTS"
python3 bench/scale_table.py "$RESULTS"
