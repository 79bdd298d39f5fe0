#!/bin/bash
# cross-check.sh DIR: the aarch64 build in DIR exports every OpenSSL row as the two-instruction
# trampoline hooks/mod.rs writes for aarch64 (return address into the next argument register,
# then a branch), checked by disassembling the object (llvm-objdump, or binutils' objdump for
# aarch64 when llvm's is missing).
set -euo pipefail
dir=$1
rlib=$(realpath "$(ls -t "$dir"/deps/libstallguard-*.rlib | head -1)")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && ar x "$rlib")
dis=$(command -v llvm-objdump || command -v aarch64-linux-gnu-objdump || true)
[ -n "$dis" ] || { echo "cross-check: needs llvm-objdump (apt-get install llvm)" >&2; exit 1; }
fail=0
# Rows with 3 arguments pass the return address in x3, with 4 in x4 (hooks/mod.rs).
for row in SSL_read:x3 SSL_peek:x3 SSL_write:x3 SSL_read_ex:x4 SSL_peek_ex:x4 SSL_write_ex:x4; do
    name=${row%%:*} reg=${row##*:}
    body=$("$dis" -d --no-show-raw-insn --disassemble-symbols="$name" "$work"/*.o | grep -E '^\s+[0-9a-f]+:' || true)
    if grep -q "mov	$reg, x30" <<<"$body" && [ "$(wc -l <<<"$body")" -eq 2 ] && tail -1 <<<"$body" | grep -q '	b	'; then
        echo "cross-check: $name ok ($reg)"
    else
        echo "cross-check: $name is not the expected trampoline:"; echo "$body"; fail=1
    fi
done
exit $fail
