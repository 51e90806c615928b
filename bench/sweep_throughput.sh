#!/usr/bin/env bash
# Sweep throughput: the same small grid run twice from scratch, once as the default sweep shape
# (`--jobs 2 --threads 1`: two runs at once, one libtorch thread each) and once sequentially with
# both cores given to each run (`--jobs 1 --threads 2`), and, as the scaling of jobs alone, once
# sequentially on one thread (`--jobs 1 --threads 1`). Prints runs/hour of each and the ratios
# (issue #8's target: jobs 2 / sequential with 2 threads ≥ 1.8). Run it on a quiet machine: it
# measures wall time.
#
#   bash bench/sweep_throughput.sh experiments.yaml    # an experiments file as it is (the default sweep)
#   bash bench/sweep_throughput.sh [steps-per-run (default 300)] [runs (default 8)]
#                                  # a small generated grid: half LSTM h128, half Transformer d64 L2
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/membench
[[ -x $bin ]] || { echo "build first: make build" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -f ${1:-} ]]; then
    cp "$1" "$work/grid.yaml"
    runs=$("$bin" sweep "$work/grid.yaml" --dry-run --out "$work/dry" 2>/dev/null | grep -c '^[0-9a-f]\{12\}' || true)
    what="$1 as it is"
else
steps=${1:-300}
runs=${2:-8}
what="copy task; half LSTM h128, half Transformer d64 L2, $steps steps each"
# Half LSTM, half Transformer runs on the copy task: one recurrent and one attention family.
cat > "$work/grid.yaml" <<YAML
defaults:
  train: {steps: $steps, batch_size: 32, lr: 0.003, eval_interval: $steps, valid_batches: 2, test_batches: 2}
experiments:
  - name: lstm
    task: {name: copy, bits: 8, min_len: 1, max_len: 10, eval_lengths: [20]}
    arch: {name: lstm, hidden_size: 128}
    seeds: $((runs / 2))
  - name: transformer
    task: {name: copy, bits: 8, min_len: 1, max_len: 10, eval_lengths: [20]}
    arch: {name: transformer, d_model: 64, layers: 2, heads: 4}
    seeds: $((runs - runs / 2))
YAML
fi
time_sweep() { # jobs threads out → seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" sweep "$work/grid.yaml" --jobs "$1" --threads "$2" --out "$3" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
par=$(time_sweep 2 1 "$work/par")
seq=$(time_sweep 1 2 "$work/seq")
one=$(time_sweep 1 1 "$work/one")
for d in par seq one; do
    done_runs=$(grep -c ',done,' "$work/$d/runs.csv" || true)
    [[ $done_runs -eq $runs ]] || { echo "$d: only $done_runs of $runs runs done" >&2; exit 1; }
done
awk -v p="$par" -v s="$seq" -v o="$one" -v n="$runs" -v what="$what" 'BEGIN {
    printf "grid: %d runs (%s)\n", n, what
    printf "--jobs 2 --threads 1: %.1f s, %.0f runs/hour\n", p, 3600 * n / p
    printf "--jobs 1 --threads 2: %.1f s, %.0f runs/hour\n", s, 3600 * n / s
    printf "--jobs 1 --threads 1: %.1f s, %.0f runs/hour\n", o, 3600 * n / o
    printf "throughput ratio (jobs 2 / sequential, 2 threads): %.2f×\n", s / p
    printf "scaling of jobs (jobs 2 / jobs 1, 1 thread): %.2f×\n", o / p
}'
