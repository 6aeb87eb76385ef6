#!/usr/bin/env bash
# A swarm task moved by swarm's own scheduler, with its volume, measured: two swarm nodes on this
# machine (tools/nodes.sh: each a network and a mount namespace with its own zfs-fuse pool, dockerd
# and luastrip with `--volume-follow`), one 3-member etcd on the bridge between them. Each round:
# a service on a fresh volume of the plugin, on node a, writes 100 MB, then appends 256 KB every
# 50 ms until swarm stops it; `docker service update --constraint-rm … --constraint-add …` moves
# it to node b. Measured: the cut-over, from a's `VolumeDriver.Unmount` (swarm has stopped the old
# task) to b's `Mount` answered (the new task can start), both from the gateways' logs (one
# clock); the push's steps; and the whole move, from the update to the task running on b.
# Three rounds; median reported.
#
#   bash bench/swarm.sh         # as root: installs what is missing (docker.io, zfs-fuse, etcd-server …)
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench/swarm.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (namespaces, dockerd, zfs-fuse)"
. tools/hosts.sh
. tools/nodes.sh
need dockerd:docker.io docker:docker.io zfs-fuse:zfs-fuse zpool:zfs-fuse etcd:etcd-server \
    ip:iproute2 nsenter:util-linux unshare:util-linux findmnt:util-linux curl:curl \
    python3:python3 protoc:protobuf-compiler busybox-static
build_luastrip
NET=${NET:-198.18.78}
B=lsbench
D=$(mktemp -d /tmp/luastrip-swarm.XXXXXX)
PIDS=()
NODES=()
cleanup() {
    stop_nodes
    stop_all "${PIDS[@]}"
    remove_nodes
    ip link del "${B}0" 2>/dev/null || true
    unmount_under "$D"
    rm -rf "$D"
}
trap cleanup EXIT
trap "exit 130" INT TERM

node_bridge "${B}0" "$NET.1"
start_etcd "$D/etcd" "$NET.1" 2489 2490 2499 2500 2509 2510
(umask 077 && head -c 24 /dev/urandom | base64 > "$D/token")
declare -A ip=([a]=$NET.2 [b]=$NET.3)
for n in a b; do
    NODE_POOL_SIZE=2G start_node "$D/$n" "$B-$n" "${B}0" "${ip[$n]}" "bench$n"
    DOCKER_HOST="unix://$D/$n/docker.sock" import_busybox luastrip-bench/busybox "$D/$n"
    LUASTRIP_LOG=info,luastrip::plugin=debug nsenter -t "$(cat "$D/$n/pid")" -m -n "$BIN" serve \
        --listen "unix://$D/$n/luastrip.sock" --upstream "unix://$D/$n/docker.sock" \
        --host-name "$n" --cluster "$ETCD_URL" --cluster-prefix /bench/ \
        --volume-backend zfs --zfs-pool "bench$n" --volume-plugin luastrip-vol --volume-follow \
        --peer-listen "${ip[$n]}:7700" --peer-url "http://${ip[$n]}:7700" \
        --peer-token-file "$D/token" 2> "$D/$n/luastrip.log" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$D/$n/luastrip.sock" ] && break; sleep 0.1; done
done
on() { local n=$1; shift; DOCKER_HOST="unix://$D/$n/luastrip.sock" "$@"; }
on a docker swarm init --advertise-addr "$NET.2" --listen-addr "$NET.2:2377" >/dev/null
on a docker network rm ingress >/dev/null 2>&1 <<< y || true
on b docker swarm join --advertise-addr "$NET.3" --listen-addr "$NET.3:2377" \
    --token "$(on a docker swarm join-token -q worker)" "$NET.2:2377" >/dev/null
for n in a b; do
    on a docker node update --label-add "n=$n" "$(on "$n" docker info --format '{{.Swarm.NodeID}}')" >/dev/null
done
task() { on "$1" docker ps -q --filter "label=com.docker.swarm.service.name=$2"; }
wait_for() {
    for _ in $(seq 1200); do eval "$1" && return 0; sleep 0.1; done
    die "not within 120 s: $1"
}

: > "$D/moves"
for round in 1 2 3; do
    s=move$round
    on a docker service create --detach --no-resolve-image --name "$s" --endpoint-mode dnsrr \
        --stop-grace-period 1s --constraint node.labels.n==a \
        --mount "type=volume,source=$s,target=/data,volume-driver=luastrip-vol,volume-nocopy=true" \
        luastrip-bench/busybox sh -c 'dd if=/dev/urandom of=/data/base bs=1M count=100 2>/dev/null
            touch /data/ready; i=0
            while true; do i=$((i+1)); dd if=/dev/urandom of=/data/c-$i bs=64k count=4 2>/dev/null
                sleep 0.05; done' >/dev/null
    wait_for '[ -n "$(task a "$s")" ] && on a docker exec "$(task a "$s")" test -f /data/ready 2>/dev/null'
    sleep 1
    start=$(date +%s%3N)
    on a docker service update --detach --constraint-rm node.labels.n==a \
        --constraint-add node.labels.n==b "$s" >/dev/null
    wait_for '[ -n "$(task b "$s")" ]'
    echo "$round $(($(date +%s%3N) - start))" >> "$D/moves"
    on b docker exec "$(task b "$s")" test -s /data/base || die "round $round: the data did not arrive"
    on a docker service rm "$s" >/dev/null
    wait_for '[ -z "$(task b "$s")" ]'
done

python3 - "$D" <<'PY'
import json, re, statistics, sys
from datetime import datetime
d = sys.argv[1]
def times(path, pattern):
    return [(datetime.fromisoformat(l[:26]), l) for l in open(path) if re.search(pattern, l)]
unmounts = [t for t, _ in times(f"{d}/a/luastrip.log", r"plugin call call=VolumeDriver\.Unmount")]
mounted = [t for t, _ in times(f"{d}/b/luastrip.log",
                               r'plugin call answered call=VolumeDriver\.Mount .*err=""')]
steps = [json.loads(re.search(r"fields=(\{.*\})", l).group(1))
         for _, l in times(f"{d}/a/luastrip.log", r"push: .* step 1 copied|push: cut over")]
moves = dict(l.split() for l in open(f"{d}/moves"))
s1 = [s for s in steps if s.get("step") == 1 and "ms" in s]
s2 = [s for s in steps if s.get("step") == 2 and "ms" in s]
print("| round | step 1 bytes | step 1 ms | step 2 bytes | step 2 ms "
      "| Unmount on a → Mount answered on b, ms | update → task running on b, ms |")
print("|---:|---:|---:|---:|---:|---:|---:|")
cuts = []
for i, (m, a, b) in enumerate(zip(mounted, s1, s2), 1):
    before = [u for u in unmounts if u <= m]
    cut = (m - before[-1]).total_seconds() * 1000 if before else float("nan")
    cuts.append(cut)
    print(f"| {i} | {a['bytes']} | {a['ms']} | {b['bytes']} | {b['ms']} | {cut:.0f} | {moves[str(i)]} |")
print(f"\n- median cut-over, a's Unmount to b's Mount answered: {statistics.median(cuts):.0f} ms "
      f"(goal < 1000 ms)")
PY
