# stallguard — build, test, demo, install.
#   make          build libstallguard.so (release), the C example servers and the C test harnesses
#   make test     everything CI runs: lint, unit tests, integration tests against real processes
#   make demo     the pool server drained without the guard, served with it
#   make install  PREFIX=/usr/local: the library, the stallguard command, the header, man pages

PREFIX   ?= /usr/local
MANDIR   ?= $(PREFIX)/share/man
CARGO    ?= cargo
SO       := target/release/libstallguard.so
BIN      := target/release/stallguard

.PHONY: all lib test deps lint unit integration demo install clean FORCE
all: lib c-examples c-tests

include c-examples/c-examples.mk
include tests/c/c-tests.mk
include tests/real/real.mk
include bench/bench.mk
include tests/reliability.mk

# STALLGUARD_PREFIX: where the installed `stallguard` command looks for the library.
lib:
	STALLGUARD_PREFIX=$(PREFIX) $(CARGO) build --release --workspace

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
integration: all
	$(CARGO) test --release --test '*' -- --test-threads=8
	$(CARGO) test --release -p stallguard-cli --tests -- --test-threads=8
	$(CARGO) test --release -p stallguard-policy --tests

test: deps lint unit integration

# The text demo (the guard's own log lines), then the chart: served requests and busy workers
# over time, without and with the guard (target/demo/demo.svg; docs/demo.svg is a committed copy).
demo: all
	@bash scripts/demo.sh
	@mkdir -p target/demo
	./target/release/stallguard-demo . target/demo/demo.svg 20

install: lib
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	           $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(SO) $(DESTDIR)$(PREFIX)/lib/libstallguard.so
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/stallguard
	install -m 0644 include/stallguard.h $(DESTDIR)$(PREFIX)/include/stallguard.h
	install -m 0644 man/stallguard.1 $(DESTDIR)$(MANDIR)/man1/stallguard.1
	install -m 0644 man/libstallguard.so.8 $(DESTDIR)$(MANDIR)/man8/libstallguard.so.8

clean: c-examples-clean c-tests-clean
	$(CARGO) clean
