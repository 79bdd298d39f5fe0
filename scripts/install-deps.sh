#!/usr/bin/env bash
# Installs what `make test` needs beyond the Rust toolchain and gcc, only when missing.
set -euo pipefail
need_apt=()
command -v make >/dev/null || need_apt+=(make)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v groff >/dev/null || need_apt+=(groff-base)   # the man-page test renders the pages
command -v setpriv >/dev/null || need_apt+=(util-linux) # the permission test runs as nobody
command -v systemd-analyze >/dev/null || need_apt+=(systemd) # the drop-in test verifies the units
python3 -c 'import yaml' 2>/dev/null || need_apt+=(python3 python3-yaml) # the alert rules' structure
command -v objdump >/dev/null || need_apt+=(binutils)   # make deb: the glibc version needed
# promtool (Debian's prometheus, ~96 MB installed with a service) is not installed: the rules
# test checks their structure itself and runs promtool only when present.
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
