#!/usr/bin/env bash
# The cluster store's benchmark: allocations/s and ownership changes/s through the local file and
# a real 3-member etcd (Debian's etcd-server) on loopback, side by side in one run, and the cost
# of one allocation as its pool fills (GROWTH allocations, default 3000); then a /16 filled with
# FILL owners' addresses through etcd (default 60 000), timed.
#
#   bash bench/cluster.sh        # as root: installs etcd-server and protobuf-compiler if missing
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages)"
for pair in etcd-server:etcd protobuf-compiler:protoc; do
    command -v "${pair##*:}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pair%%:*}" >/dev/null
done
dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
clients=() peers=() initial=()
for i in 0 1 2; do
    clients+=("$(port)") peers+=("$(port)")
    initial+=("m$i=http://127.0.0.1:${peers[$i]}")
done
cluster=$(IFS=,; echo "${initial[*]}")
for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "http://127.0.0.1:${clients[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" --logger zap --log-level warn 2>"$dir/m$i.log" &
    pids+=($!)
done
for i in 0 1 2; do
    for _ in $(seq 100); do
        curl -s "http://127.0.0.1:${clients[$i]}/health" | grep -q '"health":"true"' && break
        sleep 0.2
    done
done
url="etcd://127.0.0.1:${clients[0]},127.0.0.1:${clients[1]},127.0.0.1:${clients[2]}"
echo "# $(date -u +%Y-%m-%d) $(uname -n), $(nproc) cores, etcd $(etcd --version | head -1 | awk '{print $3}'), commit $(git rev-parse --short HEAD)"
cargo bench --quiet --profile measure --bench cluster -- "$url"
