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
                  single_thread_check unseen_cancel redirect_main atfork_restart_main \
                  syscall_site
# Shared objects the harnesses load: a plugin dlopen'ed with RTLD_DEEPBIND, a second
# preloaded interposer, a library linked in (DT_NEEDED) with a fork child handler.
C_TESTS_LIBS   := libdeepbind_plugin.so libredirect_plugin.so libatfork_restart.so
C_TESTS        := $(addprefix $(C_TESTS_OUT)/,$(C_TESTS_NAMES) $(C_TESTS_LIBS))

.PHONY: c-tests c-tests-clean
c-tests: $(C_TESTS)

# Each harness is one file plus the shared helpers of harness.h.
$(C_TESTS_OUT)/%: $(C_TESTS_SRC)/%.c $(C_TESTS_SRC)/harness.h $(lastword $(MAKEFILE_LIST)) \
                  | $(C_TESTS_OUT)
	$(C_TESTS_CC) $(C_TESTS_CFLAGS) -o $@ $<

# Each shared object is one file.
$(C_TESTS_OUT)/lib%.so: $(C_TESTS_SRC)/%.c $(lastword $(MAKEFILE_LIST)) | $(C_TESTS_OUT)
	$(C_TESTS_CC) $(C_TESTS_CFLAGS) -shared -fPIC -o $@ $<

# Linked with its library (needed although no symbol of it is used: its constructor is the
# point), found beside it at run time.
$(C_TESTS_OUT)/atfork_restart_main: $(C_TESTS_SRC)/atfork_restart_main.c $(C_TESTS_SRC)/harness.h \
                  $(C_TESTS_OUT)/libatfork_restart.so $(lastword $(MAKEFILE_LIST)) | $(C_TESTS_OUT)
	$(C_TESTS_CC) $(C_TESTS_CFLAGS) -o $@ $< -L$(C_TESTS_OUT) -Wl,--no-as-needed \
		-latfork_restart -Wl,--as-needed -Wl,-rpath,'$$ORIGIN'

$(C_TESTS_OUT):
	mkdir -p $@

c-tests-clean:
	rm -rf $(C_TESTS_OUT)
