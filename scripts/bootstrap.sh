#!/usr/bin/env bash
# Installs (once) and locates the LibTorch that membench links: torch==2.11.0 from PyPI.
#
# Order of preference, first match wins:
#   1. $MEMBENCH_TORCH_PYTHON, if it imports torch 2.11.0;
#   2. the cached venv $MEMBENCH_TORCH_VENV (default ~/.cache/membench/torch-2.11.0);
#   3. python3 on PATH, if it already has torch 2.11.0;
#   4. otherwise create the cached venv and pip-install torch==2.11.0 (+numpy) into it.
# The chosen interpreter is written to ~/.cache/membench/python; scripts/env.sh reads it.
# Second and later calls take about a second (one `import torch`).
#
# Why the full wheel (4.6 GB with its CUDA libraries) and not `--no-deps` (1.3 GB): the PyTorch
# eager reference of `membench bench --compare-pytorch` needs `import torch`, which needs the
# CUDA runtime packages even on CPU; and the same binary then keeps libtorch_cuda for GPU hosts.
set -euo pipefail

TORCH_VERSION=2.11.0
CACHE="${MEMBENCH_CACHE:-$HOME/.cache/membench}"
VENV="${MEMBENCH_TORCH_VENV:-$CACHE/torch-$TORCH_VERSION}"
mkdir -p "$CACHE"

has_torch() {
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  "$1" - <<PY >/dev/null 2>&1
import torch, sys
sys.exit(0 if torch.__version__.split('+')[0] == "$TORCH_VERSION" else 1)
PY
}

choose() {
  local py
  py=$(command -v "$1" || echo "$1")
  echo "$py" > "$CACHE/python"
  echo "bootstrap: using torch $TORCH_VERSION from $py" >&2
}

if [ -n "${MEMBENCH_TORCH_PYTHON:-}" ] && has_torch "$MEMBENCH_TORCH_PYTHON"; then
  choose "$MEMBENCH_TORCH_PYTHON"; exit 0
fi
if has_torch "$VENV/bin/python"; then
  choose "$VENV/bin/python"; exit 0
fi
if has_torch python3; then
  choose python3; exit 0
fi

echo "bootstrap: installing torch==$TORCH_VERSION into $VENV (about 4.6 GB, a few minutes)" >&2
start=$(date +%s)
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" numpy
has_torch "$VENV/bin/python" || { echo "bootstrap: torch install in $VENV is not importable" >&2; exit 1; }
echo "bootstrap: installed in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)" >&2
choose "$VENV/bin/python"
