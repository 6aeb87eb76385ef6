#!/usr/bin/env bash
# A volume following its container (`--volume-follow`), measured: 100 MB in a volume of the
# plugin on host h1, a container appending 256 KB every 50 ms; a container on host h2 asks for the
# volume (the bulk copy starts), and a second later the writer is stopped on h1. Measured: the
# cut-over, from h1's `Unmount` (dockerd lets the volume go as the writer stops) to h2's `Mount`
# returning the volume — the time swarm's new task waits once the old one is down. Two private
# dockerds with a gateway, a zfs-fuse pool and a plugin name each, one etcd member on loopback.
# Three rounds, each a fresh volume; median reported.
#
#   bash bench/follow.sh        # as root: installs zfs-fuse, etcd-server, busybox-static if missing
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench/follow.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it makes ZFS pools and starts private dockerds)"
. tools/hosts.sh
need zpool:zfs-fuse dockerd:docker.io curl:curl etcd:etcd-server busybox-static
. tools/zfs-fuse.sh
start_zfs_fuse
build_luastrip
D=$(mktemp -d /tmp/luastrip-follow.XXXXXX)
PIDS=()
cleanup() {
    for i in 1 2; do
        docker -H "unix://$D/d$i/docker.sock" rm -f $(docker -H "unix://$D/d$i/docker.sock" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
        stop_dockerd "$D/d$i"
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    destroy_pool lsfollow1
    destroy_pool lsfollow2
    rm -f /run/docker/plugins/lsfollow1.sock /run/docker/plugins/lsfollow2.sock
    unmount_under "$D"
    rm -rf "$D"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(port)
etcd --name m0 --data-dir "$D/etcd" --listen-client-urls "http://127.0.0.1:$client" \
    --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$(port)" \
    --logger zap --log-level warn 2> "$D/etcd.log" & PIDS+=($!)
for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$client/health" | grep -q '"health":"true"' && break
    sleep 0.2
done
(umask 077 && head -c 24 /dev/urandom | base64 > "$D/token")
ports=("$(port)" "$(port)")
for i in 1 2; do
    start_dockerd "$D/d$i"
    DOCKER_HOST="unix://$D/d$i/docker.sock" import_busybox luastrip-bench/busybox "$D/d$i"
    truncate -s 2G "$D/pool$i.img"
    zpool create -m "$D/mnt$i" "lsfollow$i" "$D/pool$i.img"
    LUASTRIP_LOG=info,luastrip::plugin=debug "$BIN" serve --listen "unix://$D/h$i.sock" \
        --upstream "unix://$D/d$i/docker.sock" --volume-backend zfs --zfs-pool "lsfollow$i" \
        --volume-plugin "lsfollow$i" --volume-follow --host-name "h$i" \
        --cluster "etcd://127.0.0.1:$client" --cluster-file "$D/unused$i.json" \
        --peer-token-file "$D/token" --peer-listen "127.0.0.1:${ports[i-1]}" \
        --peer-url "http://127.0.0.1:${ports[i-1]}" 2> "$D/h$i.log" & PIDS+=($!)
done
for i in 1 2; do for _ in $(seq 100); do [ -S "$D/h$i.sock" ] && break; sleep 0.1; done; done

H1="unix://$D/h1.sock" H2="unix://$D/h2.sock"
for round in 1 2 3; do
    v="follow$round"
    docker -H "$H1" run --rm --mount "type=volume,source=$v,target=/data,volume-driver=lsfollow1" \
        luastrip-bench/busybox sh -c 'dd if=/dev/urandom of=/data/base bs=1M count=100 2>/dev/null'
    docker -H "$H1" run -d --name "writer$round" \
        --mount "type=volume,source=$v,target=/data,volume-driver=lsfollow1" luastrip-bench/busybox sh -c \
        "trap 'exit 0' TERM; i=0; while true; do i=\$((i+1)); dd if=/dev/urandom of=/data/c-\$i bs=64k count=4 2>/dev/null; sleep 0.05; done" >/dev/null
    sleep 0.5
    (sleep 1; docker -H "$H1" stop -t 5 "writer$round" >/dev/null) &
    stopper=$!
    docker -H "$H2" run -d --name "reader$round" \
        --mount "type=volume,source=$v,target=/data,volume-driver=lsfollow2" luastrip-bench/busybox \
        sleep 300 >/dev/null
    wait "$stopper"
    docker -H "$H2" exec "reader$round" test -s /data/base || die "round $round: the data did not arrive"
    docker -H "$H1" rm -f "writer$round" >/dev/null
    docker -H "$H2" rm -f "reader$round" >/dev/null
done

python3 - "$D" <<'PY'
import json, re, statistics, sys
from datetime import datetime
d = sys.argv[1]
def times(path, pattern):
    out = []
    for line in open(path):
        if re.search(pattern, line):
            out.append((datetime.fromisoformat(line[:26]), line))
    return out
unmounts = [t for t, _ in times(f"{d}/h1.log", r"plugin call call=VolumeDriver\.Unmount")]
mounted = times(f"{d}/h2.log", r"the volume moved here: mounted")
steps = [json.loads(re.search(r"fields=(\{.*\})", l).group(1))
         for _, l in times(f"{d}/h1.log", r"push: .* step 1 copied|push: cut over")]
rows = []
for i, (t, line) in enumerate(mounted, 1):
    before = [u for u in unmounts if u <= t]
    cut = (t - before[-1]).total_seconds() * 1000 if before else float("nan")
    waited = int(re.search(r"waited_ms=(\d+)", line).group(1))
    rows.append((i, cut, waited))
print("| round | step 1 bytes | step 1 ms | step 2 bytes | step 2 ms | Unmount on h1 → Mount returned on h2, ms | Mount waited, ms |")
print("|---:|---:|---:|---:|---:|---:|---:|")
s1 = [s for s in steps if s.get("step") == 1 and "ms" in s]
s2 = [s for s in steps if s.get("step") == 2 and "ms" in s]
for (i, cut, waited), a, b in zip(rows, s1, s2):
    print(f"| {i} | {a['bytes']} | {a['ms']} | {b['bytes']} | {b['ms']} | {cut:.0f} | {waited} |")
print(f"\n- median cut-over, h1's Unmount to h2's Mount returning: "
      f"{statistics.median(c for _, c, _ in rows):.0f} ms (goal < 1000 ms)")
PY
