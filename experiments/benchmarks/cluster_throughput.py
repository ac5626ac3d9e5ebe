#!/usr/bin/env python3
"""No-op trials per second: Tessera's cluster against Ray Tune and Optuna, in one run on
one machine.

Tessera: `tessera serve` plus WORKERS `tessera worker` processes on loopback; a sweep of
TRIALS no-op trials (program `synthetic`, one report each) is submitted and timed from
`tessera submit` until `tessera status` says complete. Every trial is checked to be in
Parquet exactly once.

Ray Tune: `tune.Tuner` over a function trainable that reports once, with
`num_samples=RAY_TRIALS` and `max_concurrent_trials=WORKERS` on a local Ray started with
`num_cpus=WORKERS`. Timed from `Tuner.fit()` to its return (Ray's start-up excluded).
Ray runs about one trial per second on a 2-core machine, so it gets fewer trials
(`--ray-trials`, default 200); trials per second are compared.

Optuna: `study.optimize` of a no-op objective, `n_trials=TRIALS`, `n_jobs=WORKERS`
threads, in-memory storage (Optuna has no cluster of its own; with a database it is
slower).

Usage (from the repository root, after `cargo build`):
  python3 -m venv .venv-bench && .venv-bench/bin/pip install "ray[tune]" optuna
  .venv-bench/bin/python experiments/benchmarks/cluster_throughput.py --trials 10000
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SECRET = "benchmark-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tessera(binary, trials, workers):
    tmp = tempfile.mkdtemp(prefix="tessera-bench-")
    env = dict(os.environ, TESSERA_SECRET=SECRET)
    env.pop("RUST_LOG", None)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    procs = [subprocess.Popen(
        [binary, "serve", "--listen", addr, "--state", f"{tmp}/state"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        for i in range(workers):
            procs.append(subprocess.Popen(
                [binary, "worker", "--join", addr, "--name", f"w{i:02}", "--slots", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def status(*args):
            out = subprocess.run([binary, "status", *args, "--json", "--coordinator", addr],
                                 env=env, capture_output=True, text=True, check=True).stdout
            return json.loads(out)

        while len(status()["workers"]) < workers:
            time.sleep(0.1)
        sweep = f"{tmp}/noop.yaml"
        with open(sweep, "w") as f:
            f.write("version: 1\nname: noop\nkind: random\nseed: 1\nprogram: synthetic\n"
                    "space:\n  x: { float: [0, 1] }\n"
                    "objective: { metric: loss, goal: minimize }\n"
                    f"budget: {{ trials: {trials}, max_attempts: 1 }}\n")
        start = time.perf_counter()
        out = subprocess.run([binary, "submit", sweep, "--coordinator", addr], env=env,
                             capture_output=True, text=True, check=True).stdout
        sweep_id = out.split()[1]
        while True:
            s = status(sweep_id)["sweeps"][0]
            if s["state"] == "complete":
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        import pyarrow.parquet as pq
        ids = pq.read_table(f"{tmp}/state/runs/{sweep_id}/trials").column("trial_id").to_pylist()
        assert sorted(ids) == list(range(trials)), "every trial exactly once"
        return elapsed
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def ray_tune(trials, workers):
    import ray
    from ray import tune

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)

    def noop(config):
        return {"loss": config["x"]}

    tuner = tune.Tuner(
        noop,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=workers,
                                    metric="loss", mode="min"),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="ray-bench-"),
                                  verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(results) == trials and not results.errors
    ray.shutdown()
    return elapsed


def optuna_run(trials, workers):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials, n_jobs=workers)
    elapsed = time.perf_counter() - start
    assert len(study.trials) == trials
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--ray-trials", type=int, default=200)
    ap.add_argument("--ray-concurrency", type=int, default=None,
                    help="Ray's CPUs and concurrent trials (default: --workers)")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--tessera", default=None, help="path of the tessera binary")
    ap.add_argument("--skip", action="append", default=[], choices=["ray", "optuna"])
    a = ap.parse_args()
    binary = a.tessera or shutil.which("tessera") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "tessera")
    rows = [("Tessera cluster", a.trials, tessera(binary, a.trials, a.workers))]
    if "optuna" not in a.skip:
        rows.append(("Optuna (threads, in memory)", a.trials, optuna_run(a.trials, a.workers)))
    if "ray" not in a.skip:
        rc = a.ray_concurrency or a.workers
        rows.append((f"Ray Tune ({rc} at once)", a.ray_trials, ray_tune(a.ray_trials, rc)))
    base = rows[0][1] / rows[0][2]
    print(f"no-op trials, {a.workers} workers, {os.cpu_count()} cores")
    print(f"{'tool':<30} {'trials':>7} {'seconds':>8} {'trials/s':>9} {'Tessera is':>11}")
    for name, n, t in rows:
        rate = n / t
        print(f"{name:<30} {n:7d} {t:8.2f} {rate:9.1f} {base / rate:10.1f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
