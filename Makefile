# The two set-up commands of the README:  `make sweep`  and  `make test`.
# Each bootstraps LibTorch (cached outside the clone), builds, then runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
WITH_TORCH := source scripts/env.sh &&
CARGO_FLAGS := --release --locked

.PHONY: bootstrap build sweep test bench report
bootstrap:
	@bash scripts/bootstrap.sh

build: bootstrap
	$(WITH_TORCH) cargo build $(CARGO_FLAGS) --bin membench

sweep: build
	./target/release/membench sweep experiments.yaml

test: build
	$(WITH_TORCH) cargo test $(CARGO_FLAGS) --workspace

bench: build
	./target/release/membench bench --compare-pytorch --rounds 3

report: build
	./target/release/membench report
