# stallguard — build, test, demo, install.
#   make            build libstallguard.so and the stallguard command (release), their shell
#                   completions, the C example servers and the C test harnesses
#   make test       everything CI runs: lint, unit tests, integration tests against real
#                   processes, the Debian package installed and removed
#   make demo       the pool server drained without the guard, served with it
#   make install    PREFIX=/usr/local: copies what `make` built (builds nothing): the library and
#                   the command (stripped), the header, man pages, completions, contrib/
#   make uninstall  removes exactly what `make install` put there (same PREFIX and DESTDIR)
#   make deb        target/deb/stallguard_VERSION_ARCH.deb (dpkg-deb), from what `make` built
#   make cross-check the library compiled (not linked, not run) for aarch64: its OpenSSL
#                   trampolines are assembly of their own (needs `rustup target add`, network)

PREFIX   ?= /usr/local
MANDIR   ?= $(PREFIX)/share/man
ZSHDIR   ?= $(PREFIX)/share/zsh/site-functions
CARGO    ?= cargo
SO       := target/release/libstallguard.so
BIN      := target/release/stallguard

.PHONY: all lib completions test deps lint unit integration demo install uninstall deb clean cross-check FORCE
all: lib completions c-examples c-tests

include c-examples/c-examples.mk
include tests/c/c-tests.mk
include tests/real/real.mk
include bench/bench.mk
include tests/reliability.mk

# STALLGUARD_PREFIX: where the installed `stallguard` command looks for the library.
lib:
	STALLGUARD_PREFIX=$(PREFIX) $(CARGO) build --release --workspace

# bash, zsh and fish completions, generated from the command's own definition.
completions: lib
	@mkdir -p target/completions
	$(BIN) completions bash > target/completions/stallguard.bash
	$(BIN) completions zsh > target/completions/_stallguard
	$(BIN) completions fish > target/completions/stallguard.fish

# What a fresh Debian machine with only the Rust toolchain and gcc lacks.
deps:
	@bash scripts/install-deps.sh
	@bash scripts/install-real-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --release --workspace --lib --bins

# Integration tests spend most of their time waiting on timers, not CPU: run them wide.
integration: all deb
	$(CARGO) test --release --test '*' -- --test-threads=8
	$(CARGO) test --release -p stallguard-cli --tests -- --test-threads=8
	$(CARGO) test --release -p stallguard-policy --tests

test: deps lint unit integration

# aarch64: compiled to an rlib (no cross linker needed) so every naked trampoline is assembled;
# the check reads the trampolines back. Not part of `make test`: it downloads the target's std.
CROSS := aarch64-unknown-linux-gnu
cross-check:
	rustup target add $(CROSS)
	$(CARGO) rustc --release --lib --target $(CROSS) --crate-type rlib
	@bash scripts/cross-check.sh target/$(CROSS)/release

# The text demo (the guard's own log lines), then the chart: served requests and busy workers
# over time, without and with the guard (target/demo/demo.svg; docs/demo.svg is a committed copy).
demo: all
	@bash scripts/demo.sh
	@mkdir -p target/demo
	./target/release/stallguard-demo . target/demo/demo.svg 20

# Copies only (scripts/install.sh holds the one list of what goes where): run `make` first, as
# yourself, then `sudo make install`; nothing is built, so target/ stays yours.
install:
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) MANDIR=$(MANDIR) ZSHDIR=$(ZSHDIR) bash scripts/install.sh install

uninstall:
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) MANDIR=$(MANDIR) ZSHDIR=$(ZSHDIR) bash scripts/install.sh uninstall

# The package installs under /usr: the command finds the library at ../lib from /usr/bin.
deb: all
	bash scripts/deb.sh

clean: c-examples-clean c-tests-clean
	$(CARGO) clean
