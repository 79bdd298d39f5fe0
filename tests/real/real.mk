# The real-server part of the test suite (issue #3): unmodified Debian servers attacked by
# slowhttptest, unguarded and guarded (tests/real_servers.rs). Included by the top-level
# Makefile; paths are relative to the repository root. Uses its $(CARGO) and its `all` target.
#
#   make real-deps   install civetweb, mini-httpd, slowhttptest, stunnel4, xinetd, micro-httpd,
#                    curl and openssl where missing (root, Debian 12; quiet; starts no service)
#   make real-test   run every cell (~5 min on 2 cores); `cargo test --test '*'` runs it too
#   make matrix      the same cells, then the server × attack table on stdout
#
# Knobs: REAL_JOBS (runs at once, default 6), REAL_CELLS (comma-separated substrings of
# server-attack, e.g. REAL_CELLS=civetweb-slowloris,stunnel), REAL_SECONDS (attack length,
# default 60). Evidence: target/real-evidence/ (slowhttptest CSV/HTML, guard logs, samples,
# matrix.txt); private configs: target/real-work/.

# Including this file must not change the includer's default goal.
REAL_MK_PREV_GOAL := $(.DEFAULT_GOAL)

REAL_JOBS    ?= 6
REAL_CELLS   ?=
REAL_SECONDS ?= 60
REAL_ENV := STALLGUARD_REAL_JOBS=$(REAL_JOBS) STALLGUARD_REAL_SECONDS=$(REAL_SECONDS) \
            $(if $(REAL_CELLS),STALLGUARD_REAL_CELLS=$(REAL_CELLS))

.PHONY: real-deps real-test matrix
real-deps:
	@bash scripts/install-real-deps.sh

real-test: all real-deps
	$(REAL_ENV) $(CARGO) test --release --test real_servers

matrix: all real-deps
	$(REAL_ENV) STALLGUARD_MATRIX=1 $(CARGO) test --release --test real_servers -- --nocapture

# Restore the includer's goal; if it had none yet, let its next target be the default.
.DEFAULT_GOAL := $(REAL_MK_PREV_GOAL)
