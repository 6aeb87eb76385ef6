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
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
. tools/hosts.sh
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=()
for _ in 1 2 3 4 5 6; do ports+=("$(port)"); done
start_etcd "$dir/etcd" 127.0.0.1 "${ports[@]}"
url=$ETCD_URL
echo "# $(date -u +%Y-%m-%d) $(uname -n), $(nproc) cores, etcd $(etcd --version | head -1 | awk '{print $3}'), commit $(git rev-parse --short HEAD)"
cargo bench --quiet --profile measure --bench cluster -- "$url"
