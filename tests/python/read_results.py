"""Reads a Tessera run directory with pandas/pyarrow, polars and DuckDB, as a user would.

usage: read_results.py RUN_DIR EXPECTED_TRIALS EXPECTED_METRIC_ROWS OBJECTIVE
"""
import sys

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds

run, n_trials, n_metrics, objective = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

# pandas (pyarrow engine) reads each folder as one dataset.
trials = pd.read_parquet(f"{run}/trials")
metrics = pd.read_parquet(f"{run}/metrics")
assert len(trials) == n_trials, (len(trials), n_trials)
assert trials["trial_id"].is_unique, "a trial recorded twice"
assert sorted(trials["trial_id"]) == list(range(n_trials))
assert len(metrics) == n_metrics, (len(metrics), n_metrics)
assert not metrics.duplicated(["trial_id", "attempt", "step", "metric"]).any()
assert str(trials["started_at"].dtype).startswith("datetime64"), trials["started_at"].dtype
for col in ["status", "attempt", "worker", "seed", "finished_at", "steps", objective]:
    assert col in trials.columns, col

# pyarrow datasets and polars agree with pandas.
assert ds.dataset(f"{run}/trials", format="parquet").count_rows() == n_trials
pl_trials = pl.read_parquet(f"{run}/trials/*.parquet")
pl_metrics = pl.scan_parquet(f"{run}/metrics/*.parquet").collect()
assert pl_trials.height == n_trials and pl_metrics.height == n_metrics

# The objective column is the last value of that metric each trial reported.
last = (
    pl_metrics.filter(pl.col("metric") == objective)
    .sort("step")
    .group_by("trial_id")
    .agg(pl.col("value").last().alias("last"))
)
joined = pl_trials.join(last, on="trial_id")
assert joined.height == n_trials
assert (joined[objective] - joined["last"]).abs().max() < 1e-12
# DuckDB queries the folders in place.
con = duckdb.connect()
[(count,)] = con.execute(f"select count(distinct trial_id) from '{run}/trials/*.parquet'").fetchall()
assert count == n_trials, count
[(rows,)] = con.execute(f"select count(*) from '{run}/metrics/*.parquet'").fetchall()
assert rows == n_metrics, rows
print(f"python readers: {n_trials} trials and {n_metrics} metric rows read by pandas, pyarrow, polars and DuckDB")
