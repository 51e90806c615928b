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
# Where the time goes: each experiment's mean run wall time (runs.csv wall_s: training and evaluation
# inside the child) in each mode, what two threads gain per run, and the sweep time outside the runs
# (process start-up with LibTorch's operator registration, scheduling, the tail).
# ratio ≈ (scaling of jobs) × t(2 threads) / t(1 thread).
awk -F, -v p="$par" -v s="$seq" -v o="$one" '
FNR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; mode = FILENAME; sub(/\/runs.csv$/, "", mode); sub(/.*\//, "", mode); next }
{ e = $col["experiment"]; w = $col["wall_s"]; sum[mode, e] += w; n[mode, e]++; tot[mode] += w; exps[e] = 1 }
END {
    printf "%-24s %5s %12s %12s %12s %14s\n", "experiment", "runs", "j2t1 run_s", "j1t2 run_s", "j1t1 run_s", "t1/t2 (1 job)"
    for (e in exps)
        printf "%-24s %5d %12.2f %12.2f %12.2f %13.2f×\n", e, n["one", e], sum["par", e] / n["par", e],
            sum["seq", e] / n["seq", e], sum["one", e] / n["one", e], sum["one", e] / sum["seq", e]
    printf "outside the runs: jobs 2 %.1f s of %.1f, jobs 1 ×2 threads %.1f s of %.1f, jobs 1 %.1f s of %.1f\n",
        p - tot["par"] / 2, p, s - tot["seq"], s, o - tot["one"], o
}' "$work/par/runs.csv" "$work/seq/runs.csv" "$work/one/runs.csv"
