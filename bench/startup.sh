#!/usr/bin/env bash
# The release build: binary size, and start-up time — from exec to the listen socket existing
# (luastrip binds it last, once everything behind it is ready) — with no scripts, and with every
# example script loaded. 20 runs each; the median and the slowest are printed.
#
#   bash bench/startup.sh       # builds target/release/luastrip unless BIN is set
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/hosts.sh
build_luastrip
D=$(mktemp -d /tmp/luastrip-startup.XXXXXX)
trap 'rm -rf "$D"' EXIT

# One start: microseconds from exec until the socket appears; then SIGTERM and wait.
start_us() {
    local sock=$D/s.sock t0 t1 pid
    t0=$(date +%s%N)
    "$BIN" serve --listen "unix://$sock" --upstream "unix://$D/none.sock" "$@" 2>/dev/null &
    pid=$!
    until [ -S "$sock" ]; do
        kill -0 "$pid" 2>/dev/null || { echo "bench/startup.sh: luastrip exited" >&2; exit 1; }
        sleep 0.0005
    done
    t1=$(date +%s%N)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo $(((t1 - t0) / 1000))
}

# median and max of 20 starts, in ms
measure() {
    local runs=()
    for _ in $(seq 20); do runs+=("$(start_us "$@")"); done
    printf '%s\n' "${runs[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f ms median, %.1f ms slowest", (a[10]+a[11])/2000, a[NR]/1000}'
}

echo "binary: $BIN, $(stat -c %s "$BIN") bytes ($(file -b "$BIN" | grep -o 'stripped\|not stripped'))"
echo "start-up, no scripts:            $(measure)"
echo "start-up, examples/scripts/:     $(measure --scripts examples/scripts)"
