# Benchmark suite (issue #6). Included by the top-level Makefile (`include bench/bench.mk`);
# paths are relative to the repository root, so run make from there.
#
#   make bench        hooks (wall clock + callgrind), end to end (wrk: civetweb, nginx,
#                     HAProxy in front, apache2 prefork with keep-alive on and off),
#                     watcher cost and memory at 1k/10k connections;
#                     11-15 minutes (longer when the machine is busy). Prints the
#                     results and writes bench/results/latest.md, latest.json, e2e.svg.
#   make bench-quick  the same, reduced (3-4 minutes: 204 s at load 11); writes bench/results/quick.*.
#                     Never fails on a timing (CI-safe); BENCH_STRICT=1 makes a missed
#                     budget fail the target.
#
# Needs root for the first run only (bench/install-deps.sh installs wrk, nginx-light,
# civetweb, haproxy, apache2, valgrind and strace when missing). Everything runs on loopback.

# Keep the includer's default goal.
BENCH_PREV_GOAL := $(.DEFAULT_GOAL)

BENCH_OUT    := target/bench
BENCH_CC     ?= gcc
# No _FORTIFY_SOURCE: the benchmark must call plain read/recv, not the __*_chk variants.
BENCH_CFLAGS ?= -O2 -g -U_FORTIFY_SOURCE -Wall -Wextra -Werror -pthread
# threadtax and copycost are experiments run by hand (what a second thread costs a
# single-threaded process's fd syscalls, and why; what a kernel query through a pidfd_getfd
# copy costs the watcher): see their headers, and bench/fdtax.sh.
BENCH_BINS   := $(BENCH_OUT)/hookbench $(BENCH_OUT)/idlebench $(BENCH_OUT)/threadtax \
                $(BENCH_OUT)/copycost
BENCH_SO     ?= target/release/libstallguard.so
BENCH_PY     ?= python3

.PHONY: bench bench-quick bench-deps bench-bins bench-lens
bench-bins: $(BENCH_BINS)

$(BENCH_OUT)/%: bench/%.c bench/bench.mk | $(BENCH_OUT)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $<

$(BENCH_OUT):
	mkdir -p $@

bench-deps:
	@bash bench/install-deps.sh

bench: lib bench-bins bench-deps
	@$(BENCH_PY) bench/run.py --so $(BENCH_SO) --command "make bench"

bench-quick: lib bench-bins bench-deps
	@$(BENCH_PY) bench/run.py --quick --so $(BENCH_SO) --command "make bench-quick"

# The HTTP/1 lens's instructions per 1 KiB request (callgrind; bench/lensbench.rs): one read,
# then 16-byte reads (a slow client).
bench-lens: | $(BENCH_OUT)
	@command -v valgrind >/dev/null || { echo "bench-lens needs valgrind (make bench-deps)" >&2; exit 1; }
	$(CARGO) build --release --example lensbench
	@for split in 1024 16; do \
	  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*lensbench*run*' \
	    --callgrind-out-file=$(BENCH_OUT)/callgrind.lens.$$split \
	    target/release/examples/lensbench 10000 --split $$split >/dev/null 2>&1 || exit 1; \
	  ir=$$(callgrind_annotate $(BENCH_OUT)/callgrind.lens.$$split | awk '/PROGRAM TOTALS/ {gsub(",", "", $$1); print $$1}'); \
	  echo "lens: $$((ir / 10000)) instructions per 1 KiB request read in $$split-byte pieces"; \
	done

# Restore it (an empty value lets make pick the next target it sees, as if this file were
# not there).
.DEFAULT_GOAL := $(BENCH_PREV_GOAL)
