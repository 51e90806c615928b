#!/usr/bin/env bash
# Memory growth and harness overhead: trains a few families for 1000 steps on the copy task
# (evaluating every 100 steps) and prints, per run, the peak RSS at step 100 and at step 1000
# (curve.csv's rss_bytes; target: within 5 %) and the training loop's harness overhead
# (result.json's harness_overhead_pct; target < 2 %).
#
#   bash bench/rss_growth.sh [steps (default 1000)]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1000}
bin=./target/release/membench
[[ -x $bin ]] || { echo "build first: make build" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
task='{name: copy, bits: 8, min_len: 1, max_len: 10, eval_lengths: [20]}'
cat > "$work/grid.yaml" <<YAML
defaults:
  train: {steps: $steps, batch_size: 32, lr: 0.003, grad_clip: 10.0, eval_interval: 100, valid_batches: 2, test_batches: 2}
experiments:
  - {name: lstm, task: $task, arch: {name: lstm, hidden_size: 128}}
  - {name: transformer, task: $task, arch: {name: transformer, d_model: 128, layers: 2, heads: 4}}
  - {name: ntm, task: $task, arch: {name: ntm}}
  - {name: dnc, task: $task, arch: {name: dnc}}
YAML
"$bin" sweep "$work/grid.yaml" --jobs 2 --threads 1 --out "$work/out" >/dev/null 2>&1
printf "%-12s %12s %12s %8s %12s %12s %10s\n" run rss@100_MiB "rss@$steps"_MiB growth overhead_% batch_wait_% step_ms
for dir in "$work"/out/runs/*/; do
    python3 - "$dir" "$steps" <<'PY'
import csv, json, sys
d, steps = sys.argv[1], int(sys.argv[2])
r = json.load(open(d + "result.json"))
rows = {int(row["step"]): int(row["rss_bytes"]) for row in csv.DictReader(open(d + "curve.csv"))}
o = r.get("outcome") or {}
name = r.get("config", {}).get("arch", {}).get("name", d.rstrip("/").split("/")[-1][:12])
a, b = rows.get(100), rows.get(steps)
print(f"{name:<12} {a / 2**20:12.1f} {b / 2**20:12.1f} {100 * (b - a) / a:7.2f}% {o.get('harness_overhead_pct', float('nan')):12.2f} {o.get('batch_wait_pct', float('nan')):12.2f} {o.get('step_ms_median', float('nan')):10.2f}")
PY
done
