# keyval — build, test, run, benchmark, install.
#   make          release build, binary also at build/keyval
#   make run      a leader on port 5000, data in the current directory
#   make test     fmt check, clippy -D warnings, the Redis tools the tests use, every test
#   make install  install what make built (never builds): make && sudo make install
#   make bench    the benchmark suite (minutes): keyval against Redis if redis-server is on PATH (by our load
#                 generator, then by redis-benchmark), then replication
#   make torture  fault injection for TORTURE_SECONDS (default 600); SEED=n reruns a seed
#   make fuzz     the decoder fuzz loops, FUZZ_SECONDS (default 60) per target

CARGO   ?= cargo
PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?= $(PREFIX)/lib/systemd/system
CONFDIR ?= /etc/keyval
BUILD   ?= build
TORTURE_SECONDS ?= 600
FUZZ_SECONDS    ?= 60
# auto: redis-server from PATH if there is one; none; or a path
REDIS_BIN       ?= auto

.PHONY: all build test test-deps lint fmt run bench torture fuzz install clean toolchain

all: build

# Every binary of the workspace: the server's and the tools'.
build:
	$(CARGO) build --release --workspace --bins
	mkdir -p $(BUILD)
	cp target/release/keyval target/release/keyval-ctl target/release/keyval-bench $(BUILD)/

# rustfmt and clippy come with rustup's default profile; add them if absent.
toolchain:
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# redis-cli, redis-benchmark, redis-py, nutcracker and the exporter, from
# Debian packages when missing (as root or through sudo); the tests fail,
# naming the script, without them.
test-deps:
	sh scripts/test-deps.sh

test: lint test-deps
	$(CARGO) test --workspace --all-targets

fmt: toolchain
	$(CARGO) fmt --all

run: build
	./build/keyval --role leader --port 5000 --data-dir .

# Redis is optional and never installed here: without a redis-server the
# suite's first line says that it skips the comparison, and how to get it
# (docs/benchmarks.md).
bench: build
	./build/keyval-bench suite --keyval-bin ./build/keyval --redis-bin $(REDIS_BIN)

# Exits non-zero on any checker failure; the seed is printed either way.
torture:
	$(CARGO) build --release --workspace --bins
	./target/release/keyval-torture --seconds $(TORTURE_SECONDS) $(if $(SEED),--seed $(SEED))

# In-test fuzz loops (cargo fuzz needs nightly); debug build, so overflows panic.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(if $(FUZZ_SEED),FUZZ_SEED=$(FUZZ_SEED)) \
		$(CARGO) test -p keyval --lib fuzz:: -- --test-threads 1 --nocapture

# Installs what `make` built; it never builds (root often has no cargo):
#   make && sudo make install
# The operator's documents are docs/*.md, installed side by side in DOCDIR;
# the units' Documentation= names operations.md there.
DOCDIR  ?= $(PREFIX)/share/doc/keyval

install:
	@for f in $(BUILD)/keyval $(BUILD)/keyval-ctl; do \
		[ -f "$$f" ] || { echo "make install: $$f is missing: run make first (as the user who builds)" >&2; exit 1; }; \
	done
	install -D -m 0755 $(BUILD)/keyval $(DESTDIR)$(PREFIX)/bin/keyval
	install -D -m 0755 $(BUILD)/keyval-ctl $(DESTDIR)$(PREFIX)/bin/keyval-ctl
	install -D -m 0644 conf/keyval-leader.service $(DESTDIR)$(UNITDIR)/keyval-leader.service
	install -D -m 0644 conf/keyval-follower@.service $(DESTDIR)$(UNITDIR)/keyval-follower@.service
	install -D -m 0640 conf/leader.env $(DESTDIR)$(CONFDIR)/leader.env.example
	install -D -m 0640 conf/follower.env $(DESTDIR)$(CONFDIR)/follower.env.example
	install -D -m 0644 conf/password.conf $(DESTDIR)$(CONFDIR)/password.conf.example
	for f in docs/*.md; do \
		install -D -m 0644 "$$f" "$(DESTDIR)$(DOCDIR)/$$(basename "$$f")"; \
	done
	sed -i 's|/usr/local/bin/keyval|$(PREFIX)/bin/keyval|g; s|/usr/local/share/doc/keyval|$(DOCDIR)|g' \
		$(DESTDIR)$(UNITDIR)/keyval-leader.service $(DESTDIR)$(UNITDIR)/keyval-follower@.service

clean:
	$(CARGO) clean
	rm -rf build
