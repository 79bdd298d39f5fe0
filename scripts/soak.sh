#!/usr/bin/env bash
# The reliability suite (issue #7); see tests/reliability.mk.
#   scripts/soak.sh deps    install valgrind, CPython's and Tornado's test suites when missing (Debian)
#   scripts/soak.sh quick   CI-sized forms, bounded at 10 minutes
#   scripts/soak.sh long    long forms, bounded at 75 minutes
# Every test stops the processes it starts by pid and talks to loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

deps() {
  local missing=()
  [ -x /usr/bin/valgrind ] || missing+=(valgrind)
  [ -e /usr/lib/python3.11/test/test_socketserver.py ] || missing+=(libpython3.11-testsuite)
  [ -x /usr/bin/python3 ] || missing+=(python3)
  [ -e /usr/lib/python3/dist-packages/tornado/test/runtests.py ] || missing+=(python3-tornado)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "soak.sh: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

case "${1:-quick}" in
  deps)
    deps
    ;;
  quick)
    timeout --kill-after=30 600 cargo test --release --test reliability -- --nocapture
    timeout --kill-after=30 300 cargo test --release -p stallguard-policy --test fuzz_policy
    ;;
  long)
    # Each test's long form is chosen by RELIABILITY_SOAK=1 (knobs in tests/reliability/*.rs).
    RELIABILITY_SOAK=1 timeout --kill-after=60 3600 \
      cargo test --release --test reliability -- --nocapture --test-threads=1
    PROPTEST_CASES=200000 timeout --kill-after=30 900 \
      cargo test --release -p stallguard-policy --test fuzz_policy
    ;;
  *)
    echo "usage: $0 deps|quick|long" >&2
    exit 2
    ;;
esac
