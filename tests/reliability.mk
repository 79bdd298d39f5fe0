# Reliability suite (issue #7): tests/reliability.rs, crates/stallguard-policy/tests/,
# scripts/soak.sh. Included from the top-level Makefile (paths relative to the repo root).
#
#   make soak-deps    install what the suite needs beyond the build: valgrind, and CPython's
#                     own test suite for /usr/bin/python3 (Debian: libpython3.11-testsuite)
#   make soak-quick   the CI-sized forms (~3 minutes on 2 cores, bounded at 10 minutes)
#   make soak         the long forms: 1M-cycle churn, 10-minute mixed-traffic soak, one-minute
#                     signal soak, more CPython modules, 200k proptest cases (bounded at 75 min)
#
# `cargo test --release --test reliability` (part of `make integration`) runs the CI-sized
# forms too; its valgrind and CPython tests fail (they never skip) without soak-deps, so
# `make deps` depends on soak-deps below.

.PHONY: soak soak-quick soak-deps

soak-deps:
	@bash scripts/soak.sh deps

soak-quick: soak-deps all
	@bash scripts/soak.sh quick

soak: soak-deps all
	@bash scripts/soak.sh long

deps: soak-deps
