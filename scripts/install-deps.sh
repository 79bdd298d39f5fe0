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
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || need_apt+=(logrotate) # contrib/logrotate, run for real
# promtool (Debian's prometheus, ~96 MB installed with a service) is not installed: the rules
# test checks their structure itself and runs promtool only when present.
# tests/event_loops.rs: event-loop servers, the JDK's queueing server, nginx, slowhttptest.
command -v node >/dev/null || need_apt+=(nodejs)
command -v java >/dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v slowhttptest >/dev/null || need_apt+=(slowhttptest)
# tests/tls.rs: nginx's ssl module (every Debian nginx flavour has it), stunnel4, a certificate
# made with the openssl command, TLS clients in Python's ssl module.
command -v stunnel4 >/dev/null || need_apt+=(stunnel4)
command -v openssl >/dev/null || need_apt+=(openssl)
# tests/tls.rs: a plugin with OpenSSL built in (static libssl.a, libcrypto.a).
[ -f /usr/include/openssl/ssl.h ] && compgen -G '/usr/lib/*/libssl.a' >/dev/null || need_apt+=(libssl-dev)
need_nginx=0
[ -x /usr/sbin/nginx ] || need_nginx=1
if [ ${#need_apt[@]} -gt 0 ] || [ $need_nginx -eq 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ $need_nginx -eq 1 ]; then
    # nginx-light (bookworm) is the smallest build; nginx where it is gone.
    if apt-cache show nginx-light >/dev/null 2>&1; then need_apt+=(nginx-light); else need_apt+=(nginx); fi
  fi
  . "$(dirname "$0")/no-service-starts.sh"
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
