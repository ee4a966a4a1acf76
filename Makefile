# onair: `make run` starts a relay with a demo station, `make test` runs every test.
# Each target installs what it needs first, idempotently (skips what is already there).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
CARGO ?= cargo
ONAIR := target/debug/onair
# Debian packages: cmake builds libopus for the `opus` crate; the rest are real peers for tests.
RUN_PACKAGES := cmake
TEST_PACKAGES := cmake ffmpeg sox opus-tools chromium libshout-tools icecast2 nats-server nginx-light
# nats-server (with JetStream) carries the cluster (`make cluster`, tests/cluster.rs); nginx-light
# runs docs/CLUSTER.md's balancer config in tests/cluster.rs.
CLUSTER_PACKAGES := cmake nats-server
# cmake builds libopus for the release build; icecast2 is the relay the benchmark compares with.
BENCH_PACKAGES := cmake icecast2


.PHONY: cluster deps-cluster bench-cluster run test build autobahn fuzz soak lint lint-relay-only fmt-check fix doc bench deps-run deps-test deps-bench browser-test help

help:
	@echo "make run    build and start the relay on 127.0.0.1:8000 with a demo station"
	@echo "make test   fmt check, clippy, cargo test, browser and interop tests"
	@echo "make cluster  nats-server and three nodes on 127.0.0.1:8001-8003 sharing a demo station"
	@echo "make lint | fix | doc | bench | fuzz | soak"

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

deps-run:
	$(call apt_install,$(RUN_PACKAGES))

deps-test:
	$(call apt_install,$(TEST_PACKAGES))
	@if [ -x tests/browser/install.sh ]; then tests/browser/install.sh; fi

deps-bench:
	$(call apt_install,$(BENCH_PACKAGES))

deps-cluster:
	$(call apt_install,$(CLUSTER_PACKAGES))

# Three nodes and a nats-server on 127.0.0.1 for a try (docs/CLUSTER.md); Ctrl-C stops them.
cluster: deps-cluster build
	scripts/cluster.sh

build: deps-run
	$(CARGO) build --quiet
	@# The player's WebAssembly Opus decoder (for browsers without WebCodecs Opus) comes from npm.
	@if command -v npm >/dev/null; then tests/browser/vendor.sh; else echo "npm not found: the web player will use WebCodecs only"; fi

run: build
	@echo "starting onair: open http://127.0.0.1:8000/ to listen (Ctrl-C stops it)"
	$(ONAIR) serve

fmt-check:
	$(CARGO) fmt --check

lint:
	$(CARGO) clippy --quiet --all-targets --all-features -- -D warnings

# The relay-only build the docs promise (no decoders, no libopus, no C toolchain).
lint-relay-only:
	$(CARGO) clippy --quiet --no-default-features --lib --bins -- -D warnings

fix:
	$(CARGO) clippy --fix --allow-dirty --allow-staged --all-targets --all-features
	$(CARGO) fmt

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

browser-test: build
	@if [ -x tests/browser/run.sh ]; then ONAIR_BIN=$(ONAIR) tests/browser/run.sh; fi

autobahn: build
	tests/autobahn.sh $(ONAIR)

test: deps-test fmt-check lint lint-relay-only
	$(CARGO) test --quiet
	$(MAKE) --no-print-directory autobahn
	$(MAKE) --no-print-directory browser-test

# The web player's JavaScript, type-checked from its JSDoc by TypeScript (pinned in
# tests/browser/package.json, installed by deps-test). Emits nothing; the player has no build.
.PHONY: typecheck-js
test: typecheck-js
typecheck-js: deps-test
	tests/browser/node_modules/.bin/tsc -p tests/browser/tsconfig.web-player.json
	tests/browser/node_modules/.bin/tsc -p tests/browser/tsconfig.worklet.json

# Every parser that reads peer bytes, FUZZ_SECONDS each. cargo-fuzz needs nightly flags: the
# stable toolchain accepts them with RUSTC_BOOTSTRAP=1 (this machine has no other toolchain).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame_header source_message config http_request client_frames icecast_demux
fuzz: deps-run
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --quiet --locked cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir tests/fuzz -O $$t target/fuzz-corpus/$$t tests/fuzz/seeds/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 2>&1 | grep -E "^(Done|==|SUMMARY|INFO: Running|.*(crash|panicked))" || exit 1; \
	done

# Minutes of random joins, leaves, stalls and source drops; then nothing may have leaked.
SOAK_SECONDS ?= 120
soak:
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test --release --test soak -- --ignored --nocapture

# The benchmarks, release build: criterion micro-benchmarks, then onair and Icecast side by side
# (needs root: Icecast runs as its own user). QUICK=1 for a smoke check of about 2 minutes.
# Results: target/bench/results.{md,json}, target/bench/chart.svg. Options: BENCH_ARGS="--help".
bench: deps-bench
	$(CARGO) build --release --bin onair
	$(CARGO) bench --bench ring --bench protocol $(if $(QUICK),-- --warm-up-time 0.2 --measurement-time 0.3,)
	$(CARGO) bench --bench load -- compare $(if $(QUICK),--quick,) $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-cluster

# The cluster's costs: two release nodes on one nats-server (docs/CLUSTER.md has the numbers).
bench-cluster: deps-cluster
	$(CARGO) build --release --bin onair
	$(CARGO) bench --bench cluster -- $(if $(QUICK),--quick,)
