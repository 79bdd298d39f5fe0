#!/usr/bin/env bash
# Installs what `make bench` needs, only the packages that are missing (idempotent, quiet):
# wrk, nginx (nginx-light, else nginx), civetweb, haproxy, apache2 (prefork, run from a private
# configuration), valgrind, and strace (syscalls per request).
# Never starts or enables a system service: the packages' maintainer scripts are forbidden to
# start services (policy-rc.d exit 101) and the benchmark runs every server itself, from
# private config directories, on loopback.
set -euo pipefail

# package -> a file it installs (how we tell it is present without asking apt)
declare -A probe=(
  [wrk]=/usr/bin/wrk
  [civetweb]=/usr/bin/civetweb
  [haproxy]=/usr/sbin/haproxy
  [valgrind]=/usr/bin/valgrind
  [strace]=/usr/bin/strace
  [python3]=/usr/bin/python3
  [apache2]=/usr/sbin/apache2
)
missing=()
for pkg in wrk civetweb haproxy apache2 valgrind strace python3; do
  [ -e "${probe[$pkg]}" ] || missing+=("$pkg")
done
need_nginx=0
[ -x /usr/sbin/nginx ] || need_nginx=1
[ ${#missing[@]} -eq 0 ] && [ $need_nginx -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/install-deps: missing ${missing[*]} $([ $need_nginx = 1 ] && echo nginx-light); run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
. "$(dirname "$0")/../scripts/no-service-starts.sh"

apt_opts=(-y -qq --no-install-recommends -o DPkg::Lock::Timeout=300)
apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
if [ $need_nginx -eq 1 ]; then
  # nginx-light (bookworm) is the smallest build; fall back to nginx where it is gone.
  if apt-cache show nginx-light >/dev/null 2>&1; then missing+=(nginx-light); else missing+=(nginx); fi
fi
apt-get install "${apt_opts[@]}" "${missing[@]}" >/dev/null 2> >(grep -v '^debconf: delaying' >&2)
for pkg in "${!probe[@]}"; do
  [ -e "${probe[$pkg]}" ] || { echo "bench/install-deps: $pkg installed but ${probe[$pkg]} is missing" >&2; exit 1; }
done
[ -x /usr/sbin/nginx ] || { echo "bench/install-deps: nginx installed but /usr/sbin/nginx is missing" >&2; exit 1; }
