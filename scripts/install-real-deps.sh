#!/usr/bin/env bash
# Installs the real Debian servers and the attack tool that tests/real_servers.rs drives,
# only the packages that are missing; quiet. Never starts or enables any system service:
# the tests run every binary themselves, from private config directories, on loopback.
set -euo pipefail

# package -> a file it installs (how we tell it is present without asking apt)
declare -A probe=(
  [civetweb]=/usr/bin/civetweb
  [mini-httpd]=/usr/sbin/mini_httpd
  [slowhttptest]=/usr/bin/slowhttptest
  [stunnel4]=/usr/bin/stunnel4
  [xinetd]=/usr/sbin/xinetd
  [micro-httpd]=/usr/sbin/micro-httpd
  [curl]=/usr/bin/curl
  [openssl]=/usr/bin/openssl
)
missing=()
for pkg in "${!probe[@]}"; do
  [ -e "${probe[$pkg]}" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-real-deps: missing ${missing[*]}; run as root (apt-get install -y ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Packages such as xinetd and mini-httpd ship init scripts: forbid starting services from
# maintainer scripts (policy-rc.d exit 101), and restore whatever was there before.
. "$(dirname "$0")/no-service-starts.sh"

log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
for pkg in "${missing[@]}"; do
  [ -e "${probe[$pkg]}" ] || { echo "install-real-deps: $pkg installed but ${probe[$pkg]} is missing" >&2; exit 1; }
done
