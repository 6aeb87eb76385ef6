#!/usr/bin/env bash
# The two-phase push, measured: 100 MB in a ZFS volume, a container appending to it while step 1
# copies it live, then the cut-over (step 2). Two gateways, each with its own zfs-fuse pool (two
# "hosts"), in front of a private dockerd. Three rounds, each a fresh volume; median reported.
#
#   bash bench/push.sh          # as root: installs zfs-fuse and busybox-static if missing
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench/push.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it makes ZFS pools and starts a private dockerd)"
. tools/hosts.sh
need zpool:zfs-fuse dockerd:docker.io curl:curl busybox-static
. tools/zfs-fuse.sh
start_zfs_fuse
build_luastrip
D=$(mktemp -d /tmp/luastrip-push.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    stop_dockerd "$D/dockerd"
    wait 2>/dev/null || true
    destroy_pool lspush1
    destroy_pool lspush2
    unmount_under "$D"
    rm -rf "$D"
}
trap cleanup EXIT

start_dockerd "$D/dockerd"
export DOCKER_HOST="unix://$D/dockerd/docker.sock"
import_busybox luastrip-bench/busybox "$D"

(umask 077 && head -c 24 /dev/urandom | base64 > "$D/token")
cat > "$D/push.lua" <<'LUA'
require("luastrip.flocker").enable()
route.endpoint("POST /luastrip/push/{name}", function(req)
  return { json = zfs.push(req.params.name, "h2", { stop = true }) }
end)
LUA
ports=(7201 7202)
for i in 1 2; do
    truncate -s 2G "$D/pool$i.img"
    zpool create -m "$D/mnt$i" "lspush$i" "$D/pool$i.img"
    other=$((3 - i))
    LUASTRIP_LOG=warn "$BIN" serve --listen "unix://$D/h$i.sock" --upstream "$DOCKER_HOST" \
        --scripts "$D/push.lua" --volume-backend zfs --zfs-pool "lspush$i" --host-name "h$i" \
        --cluster-file "$D/cluster.json" --peer-token-file "$D/token" \
        --peer-listen "127.0.0.1:${ports[i-1]}" --peer "h$other=http://127.0.0.1:${ports[other-1]}" \
        2> "$D/h$i.log" & PIDS+=($!)
done
for i in 1 2; do for _ in $(seq 100); do [ -S "$D/h$i.sock" ] && break; sleep 0.1; done; done

H1="unix://$D/h1.sock"
for round in 1 2 3; do
    v="bench$round"
    docker -H "$H1" run --rm -v "/flocker/$v:/data" luastrip-bench/busybox \
        sh -c 'dd if=/dev/urandom of=/data/base bs=1M count=100 2>/dev/null'
    docker -H "$H1" run -d --name "writer$round" -v "/flocker/$v:/data" luastrip-bench/busybox sh -c \
        "trap 'exit 0' TERM; i=0; while true; do i=\$((i+1)); dd if=/dev/urandom of=/data/c-\$i bs=64k count=4 2>/dev/null; sleep 0.05; done" >/dev/null
    sleep 0.5
    curl -sf --unix-socket "$D/h1.sock" -X POST "http://d/luastrip/push/$v" > "$D/report$round.json"
    docker -H "$H1" rm -f "writer$round" >/dev/null
done

python3 - "$D" <<'PY'
import json, sys, statistics
d = sys.argv[1]
rs = [json.load(open(f"{d}/report{i}.json")) for i in (1, 2, 3)]
print("| round | step 1 bytes | step 1 ms | stop ms | step 2 bytes | step 2 ms | step 2 / step 1 |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, r in enumerate(rs, 1):
    print(f"| {i} | {r['step1_bytes']} | {r['step1_ms']} | {r['stop_ms']} | {r['step2_bytes']} | {r['step2_ms']} | {r['step2_ms'] / r['step1_ms']:.3f} |")
s1 = statistics.median(r["step1_ms"] for r in rs)
s2 = statistics.median(r["step2_ms"] for r in rs)
print(f"\n- median step 1 (100 MB copied live): {s1:.0f} ms; median cut-over (step 2): {s2:.0f} ms "
      f"(goal < 1000 ms); step 2 / step 1: {s2 / s1:.3f}")
PY
