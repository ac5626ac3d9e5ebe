#!/usr/bin/env bash
# tests/libtorch.sh: LibTorch 2.9.0 for the `tch` backend (burn 0.22.x's burn-tch, tch /
# torch-sys 0.22 pin exactly 2.9.0) from the PyPI torch wheel: libtorch archives cannot be
# downloaded here, the wheel carries the same libraries.
#
# Usage: bash tests/libtorch.sh [DIR=./.libtorch] [MODE=cpu|cuda]
#   cpu  (default): pip install --no-deps torch==2.9.0 + nvidia-cuda-runtime-cu12 + nvidia-cuda-cupti-cu12
#                   (~2 GB on disk), then a link farm DIR/libtorch/{include,lib} WITHOUT the CUDA-only
#                   libs, so torch-sys does not link libtorch_cuda and nothing needs a GPU driver.
#   cuda          : pip install --no-deps torch==2.9.0 + every nvidia-*-cu12 wheel torch pins (~3 GB
#                   download, ~4+ GB disk), same link farm but including libtorch_cuda*, libc10_cuda
#                   and all nvidia/*/lib libs (not run here: too big for this box).
# Idempotent: re-running skips pip when the right versions are installed and rebuilds the link farm.
# Env overrides: PYTHON (interpreter used to create the venv, default python3), PIP_EXTRA_ARGS,
#   LIBTORCH_TRIM=1 (cpu only: delete the unused CUDA libs from the venv, 1.8 GB -> ~0.6 GB),
#   WITH_PYTHON=1 (also install torch's Python dependencies, so `DIR/venv/bin/python -c
#   "import torch"` works: the PyTorch side of the backend benchmark).
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=${1:-./.libtorch}
MODE=${2:-cpu}
TORCH_VERSION=2.9.0
CUDART_VERSION=12.8.90   # versions pinned by the torch 2.9.0 (cu128) wheel metadata
CUPTI_VERSION=12.8.90
PY=${PYTHON:-python3}

case "$MODE" in cpu|cuda) ;; *) echo "mode must be cpu or cuda, got '$MODE'" >&2; exit 2;; esac

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
VENV="$DIR/venv"
VPY="$VENV/bin/python"

# ---- 1. venv -------------------------------------------------------------------------
if [ ! -x "$VPY" ]; then
  "$PY" -m venv "$VENV"
fi
"$VPY" - <<'EOF' || { echo "torch 2.9.0 wheels need CPython >= 3.10 (x86_64/aarch64 Linux)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF

pkg_version() {  # prints installed version of a distribution in the venv, or nothing
  "$VPY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}

# ---- 2. pip install (skipped when already satisfied) ---------------------------------------
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# --no-cache-dir: the torch wheel is ~900 MB; caching it as well would double the disk it needs.
PIP=("$VPY" -m pip install --disable-pip-version-check --no-cache-dir ${PIP_EXTRA_ARGS:-})

# torch itself, always --no-deps: its Python deps (sympy, networkx, jinja2, fsspec, triton, ...)
# are useless for LibTorch/C++ use. Consequence: `import torch` does NOT work in this venv.
if [ "$(pkg_version torch)" != "$TORCH_VERSION" ]; then
  "${PIP[@]}" --no-deps "torch==$TORCH_VERSION"
elif [ "$MODE" = cuda ] && [ ! -e "$SITE/torch/lib/libtorch_cuda.so" ]; then
  # an earlier LIBTORCH_TRIM=1 cpu run deleted the CUDA libs: restore the wheel's files
  "${PIP[@]}" --no-deps --force-reinstall "torch==$TORCH_VERSION"
fi

if [ "$MODE" = cpu ]; then
  # In the CUDA-default PyPI wheel, libtorch_cpu.so has DT_NEEDED libcudart.so.12 and
  # libcupti.so.12, so those two small wheels (~11 MB) are required even for CPU-only use.
  [ "$(pkg_version nvidia-cuda-runtime-cu12)" = "$CUDART_VERSION" ] &&
  [ "$(pkg_version nvidia-cuda-cupti-cu12)" = "$CUPTI_VERSION" ] ||
    "${PIP[@]}" --no-deps "nvidia-cuda-runtime-cu12==$CUDART_VERSION" \
                          "nvidia-cuda-cupti-cu12==$CUPTI_VERSION"
else
  # Every nvidia-* pin from torch's own metadata (cudnn, cublas, nccl, ... ~3 GB); pip no-ops
  # quickly when they are already installed.
  mapfile -t NV < <("$VPY" -c '
import importlib.metadata as m
from pip._vendor.packaging.requirements import Requirement
for r in m.requires("torch") or []:
    req = Requirement(r)
    if req.name.startswith("nvidia-") and (req.marker is None or req.marker.evaluate({"extra": ""})):
        print(f"{req.name}{req.specifier}")
')
  [ "${#NV[@]}" -gt 0 ] || { echo "no nvidia-* requirements found in torch metadata" >&2; exit 1; }
  "${PIP[@]}" --no-deps "${NV[@]}"
fi

if [ "${WITH_PYTHON:-0}" = 1 ]; then
  # PyPI's Linux torch is the CUDA build: importing it needs every NVIDIA wheel it pins
  # (about 4 GB), so this is for the benchmark machine, not for CI.
  "$VPY" -c "import torch" 2>/dev/null ||
    "${PIP[@]}" --force-reinstall "torch==$TORCH_VERSION"
fi

TORCH="$SITE/torch"
[ -f "$TORCH/lib/libtorch_cpu.so" ] || { echo "no $TORCH/lib/libtorch_cpu.so" >&2; exit 1; }

# Optional: LIBTORCH_TRIM=1 (cpu mode) deletes the CUDA-only libs from the venv's torch/lib
# (libtorch_cuda*.so, libc10_cuda, libtorch_nvshmem, libcaffe2_nvrtc, libtorch_python: ~1.2 GB).
if [ "$MODE" = cpu ] && [ "${LIBTORCH_TRIM:-0}" = 1 ] && [ "${WITH_PYTHON:-0}" != 1 ]; then
  rm -f "$TORCH"/lib/libtorch_cuda*.so "$TORCH"/lib/libc10_cuda.so "$TORCH"/lib/libtorch_nvshmem.so \
        "$TORCH"/lib/libcaffe2_nvrtc.so "$TORCH"/lib/libtorch_python.so
fi

# ---- 3. link farm DIR/libtorch/{include,lib} -----------------------------------------------
LT="$DIR/libtorch"
rm -rf "$LT"
mkdir -p "$LT/lib"
ln -s "$TORCH/include" "$LT/include"
# Optional torch-sys version check reads $LIBTORCH/build-version (e.g. "2.9.0+cu128").
"$VPY" - "$TORCH/version.py" > "$LT/build-version" <<'EOF'
import re, sys
print(re.search(r"__version__\s*=\s*'([^']+)'", open(sys.argv[1]).read()).group(1))
EOF
# torch libs carry DT_RPATH $ORIGIN/../../nvidia/<pkg>/lib:...:$ORIGIN (glibc does not resolve symlinks for
# $ORIGIN, so from DIR/libtorch/lib it means DIR/nvidia): give it that too, as a second route.
rm -f "$DIR/nvidia"
[ -d "$SITE/nvidia" ] && ln -s "$SITE/nvidia" "$DIR/nvidia"

is_cuda_only() {
  case "$1" in
    libtorch_cuda*|libc10_cuda*|libtorch_nvshmem*|libcaffe2_nvrtc*) return 0;;
  esac
  return 1
}

for f in "$TORCH"/lib/*.so* "$SITE"/torch.libs/*.so*; do
  [ -e "$f" ] || continue
  b=$(basename "$f")
  case "$b" in libtorch_python*|libshm*) continue;; esac   # Python-binding libs, never needed
  if [ "$MODE" = cpu ] && is_cuda_only "$b"; then continue; fi
  ln -sf "$f" "$LT/lib/$b"
done
# Bundled OpenMP runtime: torch-sys emits -lgomp; make it resolve to torch's copy.
if [ -e "$LT/lib/libgomp.so.1" ] && [ ! -e "$LT/lib/libgomp.so" ]; then
  ln -s libgomp.so.1 "$LT/lib/libgomp.so"
fi
# NVIDIA runtime libs (cpu: cudart + cupti only, since only those are installed).
for f in "$SITE"/nvidia/*/lib/*.so*; do
  [ -e "$f" ] || continue
  ln -sf "$f" "$LT/lib/$(basename "$f")"
done

# The PyPI (CUDA) wheel's libtorch.so is a shim with DT_NEEDED [libtorch_cpu.so, libtorch_cuda.so]
# (it defines no torch symbols). torch-sys always passes -ltorch, so in the cpu layout point
# libtorch.so at libtorch_cpu.so: -ltorch then records DT_NEEDED libtorch_cpu.so (its SONAME) and
# nothing ever asks for libtorch_cuda.so — exactly what the official CPU libtorch zip gives.
if [ "$MODE" = cpu ]; then ln -sfn libtorch_cpu.so "$LT/lib/libtorch.so"; fi

# libtorch_global_deps.so only exists to pre-dlopen CUDA libs for Python; drop it when its
# needs are not met (cpu mode).
if [ "$MODE" = cpu ]; then rm -f "$LT/lib/libtorch_global_deps.so"; fi

# ---- 4. check: every linked lib resolves without LD_LIBRARY_PATH --------------------------
missing=$(cd "$LT/lib" && for f in *.so*; do
  env -u LD_LIBRARY_PATH ldd "$LT/lib/$f" 2>/dev/null | grep 'not found' | sed "s|^|$f: |"
done | sort -u || true)
if [ -n "$missing" ]; then
  echo "WARNING: unresolved dependencies in $LT/lib:" >&2
  echo "$missing" >&2
fi
for f in libtorch.so libtorch_cpu.so libc10.so; do
  [ -e "$LT/lib/$f" ] || { echo "missing $LT/lib/$f" >&2; exit 1; }
done
if [ "$MODE" = cpu ] && [ -e "$LT/lib/libtorch_cuda.so" ]; then
  echo "libtorch_cuda.so must not be in the cpu layout" >&2; exit 1
fi

# ---- 5. what to export ----------------------------------------------------------------
cat <<EOF

LibTorch $(cat "$LT/build-version") ($MODE layout) ready in $LT
  disk: $(du -sh --dereference-args "$DIR" 2>/dev/null | cut -f1) (venv incl. wheels' contents)

# For cargo builds using burn's "tch" feature (torch-sys 0.22):
export LIBTORCH="$LT"
# LIBTORCH_INCLUDE / LIBTORCH_LIB default to \$LIBTORCH; LIBTORCH_CXX11_ABI defaults to 1 (correct
# for the 2.9.0 wheel). No LIBTORCH_BYPASS_VERSION_CHECK needed: build-version says $TORCH_VERSION.
# Do NOT set LIBTORCH_USE_PYTORCH with the cpu layout (it would pick torch/lib incl. libtorch_cuda).
# Runtime lookup without LD_LIBRARY_PATH: embed an rpath in the final binaries, e.g.
export RUSTFLAGS="\${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$LT/lib"
#   (or in build.rs of the binary crate: println!("cargo:rustc-link-arg=-Wl,-rpath,$LT/lib"))
# Alternative: export LD_LIBRARY_PATH="$LT/lib:\${LD_LIBRARY_PATH:-}"
# Under parallel load keep OpenMP/intra-op threads small, e.g. OMP_NUM_THREADS=1 or
# tch::set_num_threads(1) (ATen keeps the count process-wide; measured).
EOF
if [ "$MODE" = cuda ]; then
cat <<EOF
# cuda layout: torch-sys sees libtorch_cuda.so in \$LIBTORCH/lib and links -ltorch_cuda; burn-tch
# then enables LibTorchDevice::Cuda. Binaries still start on GPU-less machines (CUDA just unavailable).
# LIBTORCH_USE_PYTORCH=1 is NOT usable with this venv (torch's Python deps are not installed);
# it would need a plain 'pip install torch==$TORCH_VERSION' (+~0.3 GB: triton, sympy, ...) and
# VIRTUAL_ENV="$VENV" PATH="$VENV/bin:\$PATH", plus an rpath to $TORCH/lib.
EOF
fi
