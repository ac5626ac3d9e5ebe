"""Reads a Tessera results lake from an S3-compatible server with pyarrow and pandas,
and checks it: one row per trial, metric rows as Tessera reported, the Hive partition
column `sweep`, and the schema version beside the tables.

Usage: read_lake.py ENDPOINT ACCESS_KEY SECRET BUCKET/PREFIX TRIALS METRIC_ROWS
"""

import json
import sys

import pyarrow.dataset as ds
import pyarrow.fs as pafs

endpoint, key, secret, root = sys.argv[1:5]
trials, metric_rows = int(sys.argv[5]), int(sys.argv[6])
scheme, host = endpoint.split("://", 1)
s3 = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=host,
                       scheme=scheme, region="us-east-1")

sweeps = [i.path for i in s3.get_file_info(pafs.FileSelector(root))
          if i.type == pafs.FileType.Directory]
assert len(sweeps) == 1 and sweeps[0].rsplit("/", 1)[1].startswith("sweep="), sweeps
with s3.open_input_stream(f"{sweeps[0]}/_tessera.json") as f:
    meta = json.loads(f.read())
assert meta["schema_version"] == 1 and meta["name"] == "lake", meta

files = [i.path for i in s3.get_file_info(pafs.FileSelector(root, recursive=True))
         if i.type == pafs.FileType.File]


def table(name):
    """Every sweep's part files of one table, with the `sweep` column from the path."""
    paths = sorted(p for p in files if f"/{name}/" in p and p.endswith(".parquet"))
    return ds.dataset(paths, filesystem=s3, format="parquet",
                      partitioning=ds.partitioning(flavor="hive"),
                      partition_base_dir=root).to_table().to_pandas()


t = table("trials")
m = table("metrics")
assert len(t) == trials, len(t)
assert t["trial_id"].is_unique
assert sorted(t["trial_id"]) == list(range(trials))
assert set(t["status"]) == {"finished"}
assert (t["sweep"] == sweeps[0].rsplit("=", 1)[1]).all(), t["sweep"].unique()
assert len(m) == metric_rows, len(m)
assert not m.duplicated(["trial_id", "attempt", "step", "metric"]).any()
# The objective column equals the last reported loss of each trial.
last = m[m["metric"] == "loss"].sort_values("step").groupby("trial_id")["value"].last()
assert (t.set_index("trial_id")["loss"] - last).abs().max() < 1e-12
print(f"read {len(t)} trials and {len(m)} metric rows from s3://{root}")
