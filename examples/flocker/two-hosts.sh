#!/usr/bin/env bash
# Two luastrip "hosts" on one machine, moving a Flocker volume between them. As root.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Everything can be overridden (the test suite runs this script with its own daemon and image).
IMAGE=${IMAGE:-busybox}
UPSTREAM=${UPSTREAM:-unix:///var/run/docker.sock}
RUN=${RUN:-/run}
PORTS=(${PORTS:-7101 7102})
POOL=${POOL:-flk}
[ "$(id -u)" = 0 ] || { echo "run as root (zpool, dockerd)" >&2; exit 1; }
command -v zpool >/dev/null || { echo "install ZFS: apt-get install -y zfs-fuse" >&2; exit 1; }
# The daemon both gateways front, and the image the containers run: say what to set when either
# is missing, rather than let the first docker command fail.
case "$UPSTREAM" in
unix://*) sock=${UPSTREAM#unix://} ;;
*) echo "UPSTREAM=$UPSTREAM: give the daemon's socket as unix:///PATH" >&2; exit 1 ;;
esac
if ! curl -sf --max-time 5 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    echo "no Docker daemon answers at $UPSTREAM: set UPSTREAM=unix:///PATH/docker.sock to the" \
         "daemon the two gateways front (BIN=PATH/luastrip uses that binary instead of building one)" >&2
    exit 1
fi
if ! curl -sf --max-time 5 --unix-socket "$sock" "http://d/images/$IMAGE/json" >/dev/null 2>&1; then
    echo "the daemon at $UPSTREAM has no image $IMAGE: set IMAGE to one with sh" \
         "(docker import or docker pull one first)" >&2
    exit 1
fi
. tools/hosts.sh
. tools/zfs-fuse.sh
start_zfs_fuse

build_luastrip
W=$(mktemp -d /tmp/luastrip-flocker.XXXXXX)
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    destroy_pool "${POOL}1"
    destroy_pool "${POOL}2"
    rm -rf "$W"
}
trap cleanup EXIT

(umask 077 && head -c 24 /dev/urandom | base64 > "$W/token")   # luastrip refuses a token others can read
for i in 1 2; do
    truncate -s 1G "$W/pool$i.img"
    timeout 60 zpool create -m "$W/mnt$i" "$POOL$i" "$W/pool$i.img"
done
# One host after the other: both gateways create their datasets as they start, and zfs-fuse
# (one daemon for both "hosts" here) can deadlock when two start at the same moment.
for i in 1 2; do
    other=$((3 - i))
    "$BIN" serve --listen "unix://$RUN/luastrip-h$i.sock" --upstream "$UPSTREAM" \
        --scripts examples/scripts/flocker.lua \
        --volume-backend zfs --zfs-pool "$POOL$i" --host-name "h$i" \
        --cluster-file "$W/cluster.json" --peer-token-file "$W/token" \
        --peer-listen "127.0.0.1:${PORTS[i-1]}" --peer "h$other=http://127.0.0.1:${PORTS[other-1]}" \
        2> "$W/h$i.log" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$RUN/luastrip-h$i.sock" ] && break; sleep 0.1; done
    [ -S "$RUN/luastrip-h$i.sock" ] || { echo "h$i did not start; its log:" >&2; cat "$W/h$i.log" >&2; exit 1; }
done

# (Each step is bounded: a stuck step is an error, not a script that never ends.)
set -x
timeout 120 docker -H "unix://$RUN/luastrip-h1.sock" run --rm -v /flocker/db:/data "$IMAGE" sh -c 'echo hello from h1 > /data/f'
timeout 120 docker -H "unix://$RUN/luastrip-h2.sock" run --rm -v /flocker/db:/data "$IMAGE" cat /data/f
curl -s --max-time 30 --unix-socket "$RUN/luastrip-h2.sock" http://d/luastrip/volumes/db
set +x
grep -h "push:" "$W"/h*.log || true
