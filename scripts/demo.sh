#!/usr/bin/env bash
# make demo: the classic fixed-pool server drained by four silent clients, first without the
# guard (legit requests are refused while CPU idles and nothing is logged), then with it
# (the stalled connections are reaped, logged, and the legit requests are served).
# Bounded: every client and server is stopped by PID; the whole demo takes ~25 s.
set -u
cd "$(dirname "$0")/.."
SERVER=target/c-examples/pool_server
SHIM=$PWD/target/release/libstallguard.so
WORKERS=4
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

start_server() { # start_server LOGFILE [env...]: sets PORT and SERVER_PID
  local out; out=$(mktemp)
  env "${@:2}" "$SERVER" 0 --threads "$WORKERS" >"$out" 2>>"$1" &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  for _ in $(seq 50); do grep -q port= "$out" && break; sleep 0.1; done
  PORT=$(sed -n 's/^port=//p' "$out"); rm -f "$out"
}

silent_clients() { # open connections that never say anything (closed after 60 s at most)
  for _ in $(seq "$WORKERS"); do
    bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; timeout 60 cat <&3 >/dev/null" &
    PIDS+=("$!")
  done
  sleep 0.5
}

probe() { # one legit request with a 2 s deadline
  local reply
  reply=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'GET / HTTP/1.1\r\nHost: demo\r\n\r\n' >&3; head -c 41 <&3" 2>/dev/null | tr -d '\r' | tail -n 1)
  if [ "$reply" = "ok" ]; then echo "served"; else echo "REFUSED (no answer in 2 s)"; fi
}

probes() {
  for i in 1 2 3 4 5; do
    printf '  t=%2ds  legit request %d: %s\n' "$((SECONDS - T0))" "$i" "$(probe)"
    sleep 1
  done
}

echo "== 1. unguarded: $SERVER, $WORKERS workers, $WORKERS clients that connect and say nothing"
LOG1=$(mktemp); start_server "$LOG1"
silent_clients; T0=$SECONDS; probes
echo "  server CPU time so far: $(ps -o time= -p "$SERVER_PID" | tr -d ' '), log lines: $(wc -l <"$LOG1")"
cleanup; PIDS=()

echo
echo "== 2. guarded: LD_PRELOAD=$SHIM STALLGUARD_FIRST_BYTE=2s"
LOG2=$(mktemp); start_server "$LOG2" LD_PRELOAD="$SHIM" STALLGUARD_FIRST_BYTE=2s
silent_clients; T0=$SECONDS; probes
echo "  the guard's log:"
sed 's/^/    /' "$LOG2"
rm -f "$LOG1" "$LOG2"
