# Build rules for the C test harness programs (tests/c/): programs that check the shim from
# the inside and print a deterministic verdict, run by the integration tests. They are not
# examples; the example servers are in c-examples/.
#
# Included by the top-level Makefile (after its `all` target, so the default goal stays `all`);
# paths are relative to the repository root.
#
# Defines:
#   c-tests        build every harness into target/c-tests/
#   c-tests-clean  remove them
#   C_TESTS        the binaries' paths

C_TESTS_SRC    := tests/c
C_TESTS_OUT    := target/c-tests
C_TESTS_CC     ?= gcc
# Fortify matters: it turns some calls into __*_chk variants, which the shim hooks too.
C_TESTS_CFLAGS ?= -O2 -D_FORTIFY_SOURCE=2 -Wall -Wextra -Werror -pthread
C_TESTS_NAMES  := fileio_check hook_check signal_stress lifecycle_check alias_check \
                  single_thread_check
C_TESTS        := $(addprefix $(C_TESTS_OUT)/,$(C_TESTS_NAMES))

.PHONY: c-tests c-tests-clean
c-tests: $(C_TESTS)

# Each harness is one file plus the shared helpers of harness.h.
$(C_TESTS_OUT)/%: $(C_TESTS_SRC)/%.c $(C_TESTS_SRC)/harness.h $(lastword $(MAKEFILE_LIST)) \
                  | $(C_TESTS_OUT)
	$(C_TESTS_CC) $(C_TESTS_CFLAGS) -o $@ $<

$(C_TESTS_OUT):
	mkdir -p $@

c-tests-clean:
	rm -rf $(C_TESTS_OUT)
