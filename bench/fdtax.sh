#!/bin/bash
# fdtax.sh: the fd-syscall tax of a single-threaded guarded process (issue 13), paired rounds.
#
# hookbench's pipe_read/pipe_write cases (one pipe syscall per call, never tracked) in four
# states, interleaved round by round (ABCD, DCBA, ...), pinned to the last CPU:
#   none     no library, no thread
#   thread   no library, one idle pthread sharing the fd table
#   base     the library given as BASE_SO (e.g. one built from before the watcher left the
#            program's fd table), watcher running
#   shim     target/release/libstallguard.so, watcher running
# Prints, per case and state, the median over rounds of hookbench's per-run p10 ns/call, and
# the paired deltas against `none`. Then threadtax (where the remaining tax comes from).
#
# usage: BASE_SO=/path/to/old/libstallguard.so bash bench/fdtax.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
hb=target/bench/hookbench
so=$PWD/target/release/libstallguard.so
base=${BASE_SO:-}
pin=$(( $(nproc) - 1 ))
log=$(mktemp -d)
states=(none thread shim)
[ -n "$base" ] && states=(none thread base shim)
run() { # state -> "case p10" lines
    local argv=(taskset -c "$pin" "$hb" --batches 200 --only pipe)
    case $1 in
    none) env -u LD_PRELOAD "${argv[@]}" ;;
    thread) env -u LD_PRELOAD "${argv[@]}" --idle-thread ;;
    base) LD_PRELOAD=$base STALLGUARD_LOG_FILE=$log/base.log "${argv[@]}" ;;
    shim) LD_PRELOAD=$so STALLGUARD_LOG_FILE=$log/shim.log "${argv[@]}" ;;
    esac | awk '$1 == "case" { print $2, $10 }'
}
for ((r = 0; r < rounds; r++)); do
    order=("${states[@]}")
    if ((r % 2)); then order=($(printf '%s\n' "${states[@]}" | tac)); fi
    for s in "${order[@]}"; do
        run "$s" | sed "s/^/$r $s /" >>"$log/all"
    done
done
python3 - "$log/all" "${states[@]}" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
states = sys.argv[2:]
v = {}
for r, s, c, x in rows:
    v.setdefault(c, {}).setdefault(s, {})[int(r)] = float(x)
for c, per in sorted(v.items()):
    line = [f"{c:10}"]
    for s in states:
        line.append(f"{s} {st.median(per[s].values()):6.1f}")
    for s in states[1:]:
        d = [per[s][r] - per["none"][r] for r in per["none"] if r in per[s]]
        line.append(f"{s}-none {st.median(d):+5.1f} [{min(d):+.0f},{max(d):+.0f}]")
    print("  ".join(line))
PY
grep -h "event=start" "$log"/*.log | sed 's/.*version=[^ ]* /start: /' | sort | uniq -c | sed 's/first_byte.*fd_table/… fd_table/'
echo "threadtax (ns per pipe syscall: median / p10 / min over batches):"
taskset -c "$pin" target/bench/threadtax
rm -rf "$log"
