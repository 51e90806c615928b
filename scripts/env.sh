# Sourced by the Makefile and CI: puts the bootstrap's python (and its torch) in front of cargo.
# torch-sys finds libtorch through `python -c 'import torch'` when LIBTORCH_USE_PYTORCH=1.
_membench_cache="${MEMBENCH_CACHE:-$HOME/.cache/membench}"
if [ ! -s "$_membench_cache/python" ]; then
  echo "env.sh: run scripts/bootstrap.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
MEMBENCH_PYTHON="$(cat "$_membench_cache/python")"
export MEMBENCH_PYTHON
export PATH="$(dirname "$MEMBENCH_PYTHON"):$PATH"
export LIBTORCH_USE_PYTORCH=1
unset LIBTORCH LIBTORCH_LIB LIBTORCH_INCLUDE
