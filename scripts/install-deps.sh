#!/usr/bin/env bash
# Installs what `make test` needs beyond the Rust toolchain and gcc, only when missing.
set -euo pipefail
need_apt=()
command -v make >/dev/null || need_apt+=(make)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v groff >/dev/null || need_apt+=(groff-base)   # the man-page test renders the pages
command -v setpriv >/dev/null || need_apt+=(util-linux) # the permission test runs as nobody
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
