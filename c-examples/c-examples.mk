# Build rules for the C example programs (the servers and clients a user reads; the test
# harness programs are in tests/c/, built by tests/c/c-tests.mk).
#
# Included by the top-level Makefile; paths are relative to the repository
# root, so run make from there.  Standalone use:
#     make -f c-examples/c-examples.mk c-examples
#
# Defines:
#   c-examples        build every binary into target/c-examples/
#   c-examples-clean  remove them
#   C_EXAMPLES        the binaries' paths (for test/CI targets to depend on)

# Remember the includer's default goal so including this file first does not
# turn `c-examples` into the default target of the top-level Makefile.
C_EXAMPLES_PREV_GOAL := $(.DEFAULT_GOAL)
C_EXAMPLES_INCLUDED  := $(filter-out $(lastword $(MAKEFILE_LIST)),$(MAKEFILE_LIST))

C_EXAMPLES_SRC    := c-examples
C_EXAMPLES_OUT    := target/c-examples
C_EXAMPLES_CC     ?= gcc
# Fortify matters: it turns some calls into __*_chk variants, which the shim hooks too.
C_EXAMPLES_CFLAGS ?= -O2 -D_FORTIFY_SOURCE=2 -Wall -Wextra -Werror -pthread
C_EXAMPLES_NAMES  := pool_server prefork_server epoll_server eager_server forking_server \
                     echo_server coop_server stdio_service outbound_client
C_EXAMPLES        := $(addprefix $(C_EXAMPLES_OUT)/,$(C_EXAMPLES_NAMES))

# prefork_server must import sendfile64, not sendfile.
$(C_EXAMPLES_OUT)/prefork_server: C_EXAMPLES_EXTRA := -D_FILE_OFFSET_BITS=64
# pool_server must import __recv_chk.  For recv(fd, buf + off, sizeof(buf) - off, 0)
# gcc 12 knows the object size only with level 3 (__builtin_dynamic_object_size);
# level 2 gives up on the variable offset and leaves a plain recv.
$(C_EXAMPLES_OUT)/pool_server: C_EXAMPLES_EXTRA := -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3

.PHONY: c-examples c-examples-clean
c-examples: $(C_EXAMPLES)

# common.c is compiled into each binary (with that binary's flags).
$(C_EXAMPLES_OUT)/%: $(C_EXAMPLES_SRC)/%.c $(C_EXAMPLES_SRC)/common.c \
                     $(C_EXAMPLES_SRC)/common.h $(lastword $(MAKEFILE_LIST)) \
                     | $(C_EXAMPLES_OUT)
	$(C_EXAMPLES_CC) $(C_EXAMPLES_CFLAGS) $(C_EXAMPLES_EXTRA) -o $@ $< $(C_EXAMPLES_SRC)/common.c

# The stdio service and the client do not use the server helpers.
C_EXAMPLES_STANDALONE := $(addprefix $(C_EXAMPLES_OUT)/,stdio_service outbound_client)
$(C_EXAMPLES_STANDALONE): $(C_EXAMPLES_OUT)/%: $(C_EXAMPLES_SRC)/%.c $(lastword $(MAKEFILE_LIST)) \
                          | $(C_EXAMPLES_OUT)
	$(C_EXAMPLES_CC) $(C_EXAMPLES_CFLAGS) -o $@ $<

# coop_server is built against the optional cooperation API (include/stallguard.h).
$(C_EXAMPLES_OUT)/coop_server: $(C_EXAMPLES_SRC)/coop_server.c include/stallguard.h \
                               $(lastword $(MAKEFILE_LIST)) | $(C_EXAMPLES_OUT)
	$(C_EXAMPLES_CC) $(C_EXAMPLES_CFLAGS) -Iinclude -o $@ $<

$(C_EXAMPLES_OUT):
	mkdir -p $@

c-examples-clean:
	rm -rf $(C_EXAMPLES_OUT)

ifneq ($(C_EXAMPLES_INCLUDED),)
.DEFAULT_GOAL := $(C_EXAMPLES_PREV_GOAL)
endif
