"""The no-op workload of bench/scale.sh, run by Optuna and by Ray Tune.

Each trial reports 10 metric values (steps 1..10) and finishes, nothing is
trained: the time is the tool's own per-trial cost, as in our load
generator (`sweep-loadgen`). Prints one JSON line:
{"tool", "backend", "trials", "workers", "seconds", "trials_per_sec",
 "errors", "first_error"}.

  python bench/alternatives.py optuna --storage sqlite:///PATH --trials 400 --workers 4
  python bench/alternatives.py optuna --storage postgresql+psycopg2://... --trials 400 --workers 4
  python bench/alternatives.py ray --trials 100 --workers 4

Optuna: WORKERS processes share one RDB storage (its documented way to run
a study on several workers); each process optimizes its share of the
trials. A trial that raises (for example SQLite's "database is locked") is
counted in `errors` and does not stop the run. Ray Tune: one Tuner over a
grid of TRIALS points, each trial a function trainable that reserves
1/WORKERS of a CPU, so up to WORKERS trials run at once per core.
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time

POINTS = 10


def optuna_storage(url, schema):
    """Optuna's RDB storage at `url`; on PostgreSQL inside `schema`, so
    Optuna's tables (one is called `trials`) never mix with others."""
    import optuna

    kwargs = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def optuna_worker(url, schema, study_name, n_trials, out):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=optuna_storage(url, schema))
    errors = 0
    first = ""

    def objective(trial):
        cell = trial.suggest_int("cell", 0, 99)
        for step in range(1, POINTS + 1):
            trial.report(1.0 / step, step)
        return 0.5 + cell / 1000.0

    done = 0
    while done < n_trials:
        try:
            study.optimize(objective, n_trials=1, catch=())
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors += 1
            first = first or f"{type(e).__name__}: {e}"[:200]
        done += 1
    out.put((errors, first))


def run_optuna(args):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = f"noop-{os.getpid()}-{time.time_ns()}"
    schema = ""
    if args.storage.startswith("postgresql"):
        schema = f"optuna_bench_{os.getpid()}"
        pg("CREATE SCHEMA " + schema, args.storage)
    try:
        optuna.create_study(
            study_name=name, storage=optuna_storage(args.storage, schema), sampler=optuna.samplers.RandomSampler(seed=0)
        )
        run_optuna_workers(args, name, schema)
    finally:
        if schema:
            pg(f"DROP SCHEMA {schema} CASCADE", args.storage)


def pg(statement, url):
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sqlalchemy.text(statement))
    engine.dispose()


def run_optuna_workers(args, name, schema):
    per = [args.trials // args.workers + (1 if i < args.trials % args.workers else 0) for i in range(args.workers)]
    q = mp.Queue()
    procs = [mp.Process(target=optuna_worker, args=(args.storage, schema, name, n, q)) for n in per]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t
    errors = sum(e for e, _ in results)
    first = next((f for _, f in results if f), "")
    backend = "SQLite" if args.storage.startswith("sqlite") else "PostgreSQL"
    emit("Optuna", backend, args.trials, args.workers, seconds, errors, first)


def run_ray(args):
    import ray
    from ray import tune

    def trainable(config):
        for step in range(1, POINTS + 1):
            tune.report({"loss": 1.0 / step, "step": step})

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    storage = tempfile.mkdtemp(prefix="ray-noop-")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1.0 / args.workers}),
        param_space={"cell": tune.grid_search(list(range(args.trials)))},
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    )
    t = time.perf_counter()
    results = tuner.fit()
    seconds = time.perf_counter() - t
    errors = sum(1 for r in results if r.error is not None)
    first = next((str(r.error)[:200] for r in results if r.error is not None), "")
    ray.shutdown()
    emit("Ray Tune", "local", args.trials, args.workers, seconds, errors, first)


def emit(tool, backend, trials, workers, seconds, errors, first):
    print(
        json.dumps(
            {
                "tool": tool,
                "backend": backend,
                "trials": trials,
                "workers": workers,
                "seconds": round(seconds, 3),
                "trials_per_sec": round(trials / seconds, 2),
                "errors": errors,
                "first_error": first,
            }
        ),
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tool", choices=["optuna", "ray"])
    p.add_argument("--storage", default="", help="Optuna RDB URL (sqlite:///... or postgresql+psycopg2://...)")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()
    if args.trials < 1 or args.workers < 1:
        sys.exit("--trials and --workers must be at least 1")
    if args.tool == "optuna":
        if not args.storage:
            sys.exit("optuna needs --storage")
        run_optuna(args)
    else:
        run_ray(args)


if __name__ == "__main__":
    main()
