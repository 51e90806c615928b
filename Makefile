# The two set-up commands of the README:  `make sweep`  and  `make test`.
# Each bootstraps LibTorch (cached outside the clone), builds, then runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
WITH_TORCH := source scripts/env.sh &&
CARGO_FLAGS := --release --locked
# The tests' fault hooks (MEMBENCH_FAULT...), compiled into the test build only.
TEST_FEATURES := --features membench/fault-injection

# The portable GEMM path forced, with oneDNN and MKL narrowed to AVX2: what a CPU without AVX-512
# runs (README, "Any x86-64 CPU").
PORTABLE := MEMBENCH_GEMM=libtorch ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

.PHONY: bootstrap build sweep test test-portable bench bench-portable report reference
bootstrap:
	@bash scripts/bootstrap.sh

build: bootstrap
	$(WITH_TORCH) cargo build $(CARGO_FLAGS) --bin membench

sweep: build
	./target/release/membench sweep experiments.yaml

# First: the release binary that `build` made holds no test hook.
test: build
	! grep -q MEMBENCH_FAULT target/release/membench
	$(WITH_TORCH) cargo test $(CARGO_FLAGS) --workspace $(TEST_FEATURES)

# Every test once more on the portable path (the Slurm tests aside: they test the scheduler, not
# the GEMM), with the flags of `test` so that nothing is rebuilt; first a check that the path
# really is the forced one. (The version text is captured, not tee'd to /dev/stderr: opening
# /dev/stderr where it is a log file truncates that file.)
test-portable: build
	@v=$$($(PORTABLE) ./target/release/membench --version) && echo "$$v" && grep -qx 'gemm libtorch (forced)' <<<"$$v"
	$(WITH_TORCH) $(PORTABLE) cargo test $(CARGO_FLAGS) --workspace $(TEST_FEATURES) -- \
	  --skip cancelled_task_is_named_by_merge_and_resubmission_completes_it \
	  --skip job_array_then_merge_matches_a_local_sweep

bench: build
	./target/release/membench bench --compare-pytorch --rounds 3

bench-portable: build
	$(PORTABLE) ./target/release/membench bench --compare-pytorch --rounds 3

report: build
	./target/release/membench report

# Every reference grid of docs/reference-results.md, resumably (a finished run is never redone):
# sweep, then regenerate its tables and plots; mqar also gets its 8-pair state-size comparison, and
# zoology_mqar_frontier the frontier plot over both zoology grids' runs.
# Hours on 2 cores; `make reference GRIDS=mqar_tuned` does one.
GRIDS ?= copy_ntm mqar mqar_tuned passkey long_dependency adding_tuned selective_copy_tuned passkey_tuned induction_heads_tuned copy_tuned zoology_mqar_tuned zoology_mqar_frontier mad
reference: build
	for g in $(GRIDS); do \
	  ./target/release/membench sweep experiments/$$g.yaml --out results/reference/$$g --jobs 2 --threads 1; \
	  ./target/release/membench report --results results/reference/$$g; \
	done
	if [[ " $(GRIDS) " == *" mqar "* ]]; then \
	  ./target/release/membench compare --results results/reference/mqar --where task.num_kv_pairs=8 \
	    --x state_size --out results/reference/mqar/reports/8_pairs; fi
	if [[ " $(GRIDS) " == *" zoology_mqar_frontier "* ]]; then \
	  rm -rf scratch/zoology_mqar && ./target/release/membench merge --out scratch/zoology_mqar \
	    results/reference/zoology_mqar_tuned results/reference/zoology_mqar_frontier && \
	  ./target/release/membench compare --results scratch/zoology_mqar --x state_size \
	    --out results/reference/zoology_mqar_frontier/reports/frontier; fi
