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

.PHONY: bootstrap build sweep test test-portable bench bench-portable report
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

# The model tests, the learning tests and the end-to-end sweep tests on the portable path; first a
# check that the path really is the forced one.
test-portable: build
	$(PORTABLE) ./target/release/membench --version | tee /dev/stderr | grep -x 'gemm libtorch (forced)' >/dev/null
	$(WITH_TORCH) $(PORTABLE) cargo test $(CARGO_FLAGS) -p membench-architectures
	$(WITH_TORCH) $(PORTABLE) cargo test $(CARGO_FLAGS) $(TEST_FEATURES) -p membench --test skeleton_copy --test sweep_e2e --test reproduce --test cli_refusals

bench: build
	./target/release/membench bench --compare-pytorch --rounds 3

bench-portable: build
	$(PORTABLE) ./target/release/membench bench --compare-pytorch --rounds 3

report: build
	./target/release/membench report
