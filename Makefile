# onair: `make run` starts a relay with a demo station, `make test` runs every test.
# Each target installs what it needs first, idempotently (skips what is already there).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
CARGO ?= cargo
ONAIR := target/debug/onair
# `make run LISTEN=0.0.0.0:8080`: another address or port for the demo relay.
LISTEN ?= 127.0.0.1:8000
# Debian packages. gcc links Rust programs and compiles the C inside crates (ring, libopus);
# cmake builds libopus for the `opus` crate; libasound2-dev and pkg-config let cpal link ALSA
# (`onair push --input`, the `capture` feature).
RUN_PACKAGES := gcc libc6-dev cmake libasound2-dev pkg-config
# The interop suite (tests/interop.rs) drives real broadcaster tools and players: liquidsoap,
# ezstream, ices2, darkice; VLC (cvlc), mpv, and GStreamer from TEST_PACKAGES (souphttpsrc,
# hlsdemux and the decoders they use are in plugins-base, -good and -bad).
INTEROP_PACKAGES := liquidsoap ezstream ices2 darkice vlc-bin vlc-plugin-base mpv
# pulseaudio and libasound2-plugins make the headless capture device of tests/capture.rs.
CAPTURE_PACKAGES := pulseaudio libasound2-plugins
# nats-server (with JetStream) carries the cluster (`make cluster`, tests/cluster.rs).
CLUSTER_PACKAGES := nats-server
# Real peers for tests; nginx-light, haproxy and caddy are the reverse proxies of
# tests/proxy.rs (docs/DEPLOY.md), nginx-light also docs/CLUSTER.md's balancer in tests/cluster.rs; openssl
# makes test certificates; systemd-analyze (systemd),
# systemd-nspawn (systemd-container) and debootstrap check the service and the package.
# Node.js and python3-venv: see deps-node and deps-test.
TEST_PACKAGES := $(RUN_PACKAGES) ffmpeg sox opus-tools chromium libshout-tools icecast2 openssl \
  nginx-light haproxy caddy \
  systemd systemd-container debootstrap gstreamer1.0-tools gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad $(INTEROP_PACKAGES) $(CAPTURE_PACKAGES) \
  $(CLUSTER_PACKAGES)
# cargo-deb reads the binary's library needs with dpkg-shlibdeps (dpkg-dev) and strips it (binutils).
DEB_PACKAGES := $(RUN_PACKAGES) dpkg-dev binutils
# icecast2 is the relay the benchmark compares with; openssl makes its TLS certificate.
BENCH_PACKAGES := $(RUN_PACKAGES) icecast2 openssl

# `make install`: the binary, the web player, the unit and /etc/onair/onair.toml (kept if present).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
DOCDIR ?= $(DATADIR)/doc/onair
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
DESTDIR ?=
# The binary `make install` installs (tests/package.sh installs the debug one).
BIN ?= target/release/onair

.PHONY: run test build release autobahn fuzz soak lint lint-relay-only fmt-check fix doc bench install \
  install-config uninstall deb package-test deps-run deps-test deps-node deps-deb deps-bench \
  browser-test help cluster deps-cluster bench-cluster

help:
	@echo "make run      build and start the relay on $(LISTEN) with a demo station (LISTEN=ADDR:PORT)"
	@echo "make test     fmt check, clippy, cargo test, browser, interop and package tests"
	@echo "make cluster  nats-server and three nodes on 127.0.0.1:8001-8003 sharing a demo station"
	@echo "make release  build target/release/onair"
	@echo "make install  install binary, web player, systemd unit, /etc/onair/onair.toml (PREFIX, DESTDIR)"
	@echo "make deb      build a Debian package in target/debian/"
	@echo "make lint | fix | doc | bench | fuzz | soak"

# Runs apt-get with sudo when not root; DEBIAN_FRONTEND goes through sudo's clean environment.
APT_GET = apt_get() { \
	  echo "installing Debian packages: $$*"; \
	  local sudo=""; \
	  if [ "$$(id -u)" != 0 ]; then \
	    command -v sudo >/dev/null || { echo "not root and no sudo: install $$* as root" >&2; return 1; }; \
	    sudo=sudo; \
	  fi; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$$@" >/dev/null; \
	}

# $(call apt_install,PACKAGES): installs those that `dpkg -s` does not know.
define apt_install
	@$(APT_GET); missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt_get $$missing; fi
endef

deps-run:
	$(call apt_install,$(RUN_PACKAGES))

deps-test: deps-node
	$(call apt_install,$(TEST_PACKAGES))
	@# The Autobahn suite runs in a venv (tests/autobahn.sh): Debian's python3 needs python3-venv.
	@$(APT_GET); python3 -c 'import ensurepip, venv' 2>/dev/null || apt_get python3-venv
	@if [ -x tests/browser/install.sh ]; then tests/browser/install.sh; fi
	@# A real Prometheus parser for tests/metrics.rs (pinned; skipped when already there).
	@if [ ! -x .venv-tools/bin/python ] || ! .venv-tools/bin/python -c 'import prometheus_client' 2>/dev/null; then \
	  echo "installing the test tools venv (.venv-tools)"; \
	  python3 -m venv .venv-tools && .venv-tools/bin/pip install -q --disable-pip-version-check prometheus-client==0.21.1; \
	fi

# Node.js and npm from Debian, unless some npm is on PATH already (e.g. NodeSource's nodejs,
# which has its own npm and conflicts with Debian's).
deps-node:
	@$(APT_GET); command -v npm >/dev/null || apt_get nodejs npm

deps-deb: deps-node
	$(call apt_install,$(DEB_PACKAGES))
	@command -v cargo-deb >/dev/null || { echo "installing cargo-deb (a few minutes, once)"; \
	  $(CARGO) install --locked --version 3.8.0 cargo-deb; }

deps-bench:
	$(call apt_install,$(BENCH_PACKAGES))

deps-cluster: deps-run
	$(call apt_install,nats-server)

# Three nodes and a nats-server on 127.0.0.1 for a try (docs/CLUSTER.md); Ctrl-C stops them.
cluster: deps-cluster build
	tests/cluster-demo.sh

build: deps-run
	$(CARGO) build
	@$(VENDOR)

release: deps-run
	$(CARGO) build --release --bin onair
	@$(VENDOR)

# The player's WebAssembly Opus decoder (for browsers without WebCodecs Opus) comes from npm.
VENDOR = if command -v npm >/dev/null; then tests/browser/vendor.sh; \
  else echo "npm not found: the web player will use WebCodecs only"; fi

run: build
	@echo "starting onair on $(LISTEN); Ctrl-C stops it; another address: make run LISTEN=0.0.0.0:8080"
	$(ONAIR) serve --listen $(LISTEN)

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

# ONAIR_REQUIRE_TOOLS: a test whose external tool is missing fails instead of skipping.
test: deps-test fmt-check lint lint-relay-only typecheck-js
	ONAIR_REQUIRE_TOOLS=1 $(CARGO) test --quiet
	$(MAKE) --no-print-directory autobahn
	$(MAKE) --no-print-directory browser-test
	$(MAKE) --no-print-directory package-test

# The web player's JavaScript, type-checked from its JSDoc by TypeScript (pinned in
# tests/browser/package.json, installed by deps-test). Emits nothing; the player has no build.
.PHONY: typecheck-js
typecheck-js: deps-test
	tests/browser/node_modules/.bin/tsc -p tests/browser/tsconfig.web-player.json
	tests/browser/node_modules/.bin/tsc -p tests/browser/tsconfig.worklet.json

# Installs like a service: `make release` (as yourself), then `sudo make install`, which builds
# nothing (root's PATH often has no cargo, and root-owned files in target/ would get in the way).
# The config is written only when absent, with a fresh stream key and mode 0640.
install:
	@[ -x $(BIN) ] || { echo "no $(BIN): run make release first" >&2; exit 1; }
	@stale=$$(find src Cargo.lock -newer $(BIN) | head -n 1); \
	[ -z "$$stale" ] || { echo "$$stale is newer than $(BIN): run make release first" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/onair $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 -s $(BIN) $(DESTDIR)$(BINDIR)/onair
	rm -rf $(DESTDIR)$(DATADIR)/onair/web-player
	cd web-player && find . -type f -exec install -D -m 0644 {} $(DESTDIR)$(DATADIR)/onair/web-player/{} \;
	sed -e 's|/usr/share/onair/|$(DATADIR)/onair/|g' -e 's|/usr/share/doc/onair/|$(DOCDIR)/|g' \
	  -e 's|/etc/onair/|$(SYSCONFDIR)/onair/|g' docs/packaging/onair.toml >$(DESTDIR)$(DATADIR)/onair/onair.toml
	sed -e 's|/usr/bin/onair|$(BINDIR)/onair|g' -e 's|/usr/share/doc/onair/|$(DOCDIR)/|g' \
	  -e 's|/etc/onair/|$(SYSCONFDIR)/onair/|g' docs/packaging/onair.service >$(DESTDIR)$(UNITDIR)/onair.service
	chmod 0644 $(DESTDIR)$(DATADIR)/onair/onair.toml $(DESTDIR)$(UNITDIR)/onair.service
	install -m 0644 README.md docs/onair.example.toml docs/DEPLOY.md $(DESTDIR)$(DOCDIR)/
	@# A staged install (DESTDIR, e.g. for a package) must not carry a key: the package's
	@# postinst writes the config on the target (as docs/packaging/postinst does).
	@if [ -z "$(DESTDIR)" ]; then $(MAKE) --no-print-directory install-config; else \
	  echo "DESTDIR set: no $(SYSCONFDIR)/onair/onair.toml written (make install-config DESTDIR=... writes one)"; fi
	@echo "start it: systemctl daemon-reload && systemctl enable --now onair; logs: journalctl -u onair"

# $(SYSCONFDIR)/onair/onair.toml from the installed template with a fresh stream key, mode 0640;
# an existing config is kept as it is.
install-config:
	@config=$(DESTDIR)$(SYSCONFDIR)/onair/onair.toml; \
	if [ -e $$config ]; then echo "kept $$config"; else \
	  key=$$($(DESTDIR)$(BINDIR)/onair keygen); \
	  install -d $(DESTDIR)$(SYSCONFDIR)/onair; \
	  (umask 077; sed "s|@STREAM_KEY@|$$key|" $(DESTDIR)$(DATADIR)/onair/onair.toml >$$config.new); \
	  chmod 0640 $$config.new; mv $$config.new $$config; \
	  echo "wrote $$config (stream 'radio' on port 8000; its key is in the file)"; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/onair $(DESTDIR)$(UNITDIR)/onair.service
	rm -rf $(DESTDIR)$(DATADIR)/onair $(DESTDIR)$(DOCDIR)
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/onair/ (your config and keys)"

# A Debian package in target/debian/ (cargo-deb; see [package.metadata.deb] in Cargo.toml).
deb: deps-deb
	@$(VENDOR)
	$(CARGO) deb

# Installs a package and `make install` into scratch Debian roots, boots one with systemd and
# checks the service (tests/package.sh; root only; about 1 min). The package holds the debug
# binary `cargo test` built, stripped: `make test` makes no second, release build (cargo-deb
# warns that a dev profile is for tests only, which this is; it is pinned above).
package-test: deps-deb deps-test build
	@$(VENDOR)
	$(CARGO) deb --profile dev --no-build --strip --no-separate-debug-symbols --fast \
	  --output target/debian-test/
	INSTALL_BIN=$(ONAIR) tests/package.sh "$$(ls -t target/debian-test/onair_*.deb | head -n 1)"

# Every parser that reads peer bytes, FUZZ_SECONDS each (with the Vorbis headers and the
# per-stream muxer, chunked Icecast bodies, credentials and admin queries, signed links).
# cargo-fuzz needs nightly flags: the stable toolchain accepts them with RUSTC_BOOTSTRAP=1
# (this machine has no other toolchain).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame_header source_message config http_request client_frames icecast_demux \
  vorbis_headers stream_mux chunked_body credentials signed_link proxy_header forwarded
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

# The benchmarks, release build: criterion micro-benchmarks, then onair and Icecast side by side,
# and onair's LL-HLS clients against its HTTP listeners (needs root: Icecast runs as its own
# user). QUICK=1 for a smoke check of a few minutes.
# Results: target/bench/results.{md,json}, target/bench/chart.svg. Options: BENCH_ARGS="--help".
bench: deps-bench
	$(CARGO) build --release --bin onair
	$(CARGO) bench --bench ring --bench protocol $(if $(QUICK),-- --warm-up-time 0.2 --measurement-time 0.3,)
	$(CARGO) bench --bench load -- compare $(if $(QUICK),--quick,) $(BENCH_ARGS)
	$(CARGO) bench --bench record -- $(if $(QUICK),--quick,)
	$(MAKE) --no-print-directory bench-cluster

# The cluster's costs: two release nodes on one nats-server (docs/CLUSTER.md has the numbers).
bench-cluster: deps-bench deps-cluster
	$(CARGO) build --release --bin onair
	$(CARGO) bench --bench cluster -- $(if $(QUICK),--quick,)
