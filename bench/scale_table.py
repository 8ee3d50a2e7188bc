"""Prints bench/scale.sh's results (one JSON object per line) as the
Markdown tables of BENCHMARKS.md: medians over runs, and ratios."""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = defaultdict(list)
    for r in rows:
        by[r["step"]].append(r)

    names = {"sqlite": "SQLite", "postgres": "PostgreSQL", "local": "local"}
    ours = defaultdict(list)
    for r in by["throughput"]:
        ours[r["backend"]].append(r)
    theirs = defaultdict(list)
    for r in by["alternative"]:
        theirs[(r["tool"], r["backend"])].append(r)

    print("| tool | storage | workers | runs | trials/s (median) | points/s (median) | errors | sweep / tool |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    # Ours on the same storage is the reference (SQLite for Ray Tune, which
    # keeps its state in local files).
    best = {}
    for backend, rs in ours.items():
        tps = statistics.median(r["trials_per_sec"] for r in rs)
        pps = statistics.median(r["points_per_sec"] for r in rs)
        best[backend] = tps
        print(f"| sweep | {names[backend]} | {rs[0]['workers']} | {len(rs)} | {tps:,.0f} | {pps:,.0f} | 0 | 1 |")
    for (tool, backend), rs in theirs.items():
        tps = statistics.median(r["trials_per_sec"] for r in rs)
        errors = sum(r["errors"] for r in rs)
        ref = best.get(backend, best.get("sqlite"))
        ratio = f"{ref / tps:,.0f}x" if ref and tps else "n/a"
        print(f"| {tool} | {names[backend]} | {rs[0]['workers']} | {len(rs)} | {tps:,.2f} | {tps * 10:,.1f} | {errors} | {ratio} |")
    print()

    if by["points"]:
        groups = defaultdict(list)
        for r in by["points"]:
            groups[(r["backend"], r["metrics"])].append(r)
        print("| storage | points per trial | sent | runs | trials/s (median) | points/s (median) |")
        print("|---|---:|---|---:|---:|---:|")
        for (b, path), rs in groups.items():
            how = "with the result (`Complete.last_batch`)" if path == "complete" else "on a long-lived `PushMetrics` stream"
            tps = statistics.median(r["trials_per_sec"] for r in rs)
            pps = statistics.median(r["points_per_sec"] for r in rs)
            print(f"| {names[b]} | {rs[0]['points_per_trial']} | {how} | {len(rs)} | {tps:,.0f} | {pps:,.0f} |")
        print()

    if by["latency"]:
        print("| storage | workers | trials finished | Lease p50 | Lease p99 | Heartbeat p50 | Heartbeat p99 | Complete p50 | Complete p99 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in by["latency"]:
            def ms(k, q):
                s = r.get(k)
                return f"{s[q]:.2f} ms" if s else "n/a"
            print(
                f"| {names[r['backend']]} | {r['workers']} | {r['trials']:,} | {ms('lease', 'p50_ms')} | {ms('lease', 'p99_ms')} "
                f"| {ms('heartbeat', 'p50_ms')} | {ms('heartbeat', 'p99_ms')} | {ms('complete', 'p50_ms')} | {ms('complete', 'p99_ms')} |"
            )
        print()

    if by["memory"]:
        reports = defaultdict(list)
        for r in by["report"]:
            reports[(r["backend"], r["kind"])].append(r["ms"] / 1000)
        print("| storage | trials | workers | trials/s | coordinator peak RSS | report (table) | report (pictures) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in by["memory"]:
            b = r["backend"]
            t = reports.get((b, "table"))
            p = reports.get((b, "pictures"))
            fmt = lambda v: f"{statistics.median(v):.2f} s" if v else "n/a"
            print(
                f"| {names[b]} | {r['trials']:,} | {r['workers']} | {r['trials_per_sec']:,.0f} "
                f"| {r['coordinator_peak_rss_mib']:.0f} MiB | {fmt(t)} | {fmt(p)} |"
            )


if __name__ == "__main__":
    main(sys.argv[1])
