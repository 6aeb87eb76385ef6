#!/usr/bin/env bash
# The overlay, measured: how long a container takes to start with its overlay address up, and
# the ping round trip between containers on one host's bridge vs between two hosts over VXLAN.
#
# Two "hosts" on one machine as in examples/weave/two-hosts.sh: h1 in this network namespace,
# h2 in its own, each a private dockerd and a luastrip (release build) with luastrip.weave and
# --overlay-peer, linked by a veth underlay. Side by side in one run, interleaved:
#   start  `docker run --rm … ip -4 addr show IF` (create, start, the address read by the
#          container's first command, exit, remove), ROUNDS times each:
#            none     --network none, dockerd direct (no network at all)
#            bridge   a Docker bridge network, dockerd direct (Docker's own attach)
#            overlay  -e WEAVE_CIDR=net:default through luastrip (luastrip's attach)
#   ping   `ping -c PINGS -i 0.05` from a container on h1 to one on h1 (one bridge) and to one
#          on h2 (VXLAN over the underlay), average RTT.
#
#   bash bench/overlay.sh          # as root
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-20}
PINGS=${PINGS:-100}
NETNS=lsbench-h2
VNI=4343
[ "$(id -u)" -eq 0 ] || { echo "bench/overlay.sh: run as root" >&2; exit 1; }
. tools/hosts.sh
need dockerd:docker.io curl:curl ip:iproute2 bridge:iproute2 nsenter:util-linux busybox-static
build_luastrip
IMAGE=luastrip-bench/busybox
D=$(mktemp -d /tmp/luastrip-overlay.XXXXXX)
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    stop_dockerd "$D/d1"
    stop_dockerd "$D/d2"
    ip link del "lsx$VNI" 2>/dev/null || true
    ip link del lsbench1 2>/dev/null || true
    remove_underlay "$NETNS" lsbu1
    unmount_under "$D"
    rm -rf "$D"
}
trap cleanup EXIT

underlay "$NETNS" lsbu1 lsbu2 198.18.98.1 198.18.98.2
start_dockerd "$D/d1"
start_dockerd "$D/d2" "$NETNS"
for i in 1 2; do DOCKER_HOST="unix://$D/d$i/docker.sock" import_busybox "$IMAGE" "$D/d$i"; done
peers=(198.18.98.2 198.18.98.1)
ranges=(10.32.0.0/13 10.40.0.0/13)
for i in 1 2; do
    pre=()
    [ "$i" = 2 ] && pre=(nsenter "--net=/run/netns/$NETNS")
    LUASTRIP_LOG=warn "${pre[@]}" "$BIN" serve --listen "unix://$D/h$i.sock" \
        --upstream "unix://$D/d$i/docker.sock" --scripts examples/scripts/weave.lua \
        --network-plugin "lsbench$i" --overlay-bridge "lsbench$i" --overlay-cidr 10.32.0.0/12 \
        --overlay-range "${ranges[i-1]}" --overlay-peer "${peers[i-1]}" --overlay-vni "$VNI" \
        --cluster-file "$D/cluster-h$i.json" --host-name "h$i" 2> "$D/h$i.log" &
    PIDS+=($!)
done
for i in 1 2; do for _ in $(seq 100); do [ -S "$D/h$i.sock" ] && break; sleep 0.1; done; done
H1="unix://$D/h1.sock" H2="unix://$D/h2.sock" D1="unix://$D/d1/docker.sock"
docker -H "$D1" network create -d bridge --subnet 10.99.0.0/24 benchbr >/dev/null
# One run of each first: the overlay network is made on first use.
docker -H "$H1" run --rm -e WEAVE_CIDR=net:default "$IMAGE" true

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
: > "$D/start.txt"
for _ in $(seq "$ROUNDS"); do
    echo "none $(ms docker -H "$D1" run --rm --network none "$IMAGE" ip -4 addr show lo)" >> "$D/start.txt"
    echo "bridge $(ms docker -H "$D1" run --rm --network benchbr "$IMAGE" ip -4 addr show eth0)" >> "$D/start.txt"
    echo "overlay $(ms docker -H "$H1" run --rm -e WEAVE_CIDR=net:default "$IMAGE" ip -4 addr show ethwe0)" >> "$D/start.txt"
done

addr() { docker -H "$1" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$2"; }
from=$(docker -H "$H1" run -d -e WEAVE_CIDR=net:default "$IMAGE" sleep 600)
near=$(docker -H "$H1" run -d -e WEAVE_CIDR=net:default "$IMAGE" sleep 600)
far=$(docker -H "$H2" run -d -e WEAVE_CIDR=net:default "$IMAGE" sleep 600)
near_ip=$(addr "$H1" "$near") far_ip=$(addr "$H2" "$far")
: > "$D/ping.txt"
for _ in 1 2 3; do
    for where in bridge:$near_ip vxlan:$far_ip; do
        rtt=$(docker -H "$H1" exec "$from" ping -q -c "$PINGS" -i 0.05 "${where#*:}" | sed -n 's/.*= [0-9.]*\/\([0-9.]*\)\/.*/\1/p')
        echo "${where%%:*} $rtt" >> "$D/ping.txt"
    done
done
docker -H "$H1" rm -f "$from" "$near" >/dev/null
docker -H "$H2" rm -f "$far" >/dev/null

python3 - "$D" "$ROUNDS" "$PINGS" <<'PY'
import statistics, sys
d, rounds, pings = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    out = {}
    for line in open(f"{d}/{name}"):
        k, v = line.split()
        out.setdefault(k, []).append(float(v))
    return out
s, p = load("start.txt"), load("ping.txt")
print(f"Start with the address up (`docker run --rm … ip -4 addr`), {rounds} rounds interleaved:\n")
print("| contender | median ms | p90 ms | median / bridge |")
print("|---|---:|---:|---:|")
b = statistics.median(s["bridge"])
for k in ("none", "bridge", "overlay"):
    v = sorted(s[k])
    print(f"| {k} | {statistics.median(v):.0f} | {v[int(len(v) * 0.9) - 1]:.0f} | {statistics.median(v) / b:.2f} |")
print(f"\nPing RTT from a container on h1 (`ping -c {pings} -i 0.05`, average; 3 rounds, median):\n")
print("| to a container | avg RTT ms | / one bridge |")
print("|---|---:|---:|")
one = statistics.median(p["bridge"])
for k, label in (("bridge", "on the same bridge (h1)"), ("vxlan", "on h2, over VXLAN")):
    m = statistics.median(p[k])
    print(f"| {label} | {m:.3f} | {m / one:.2f} |")
PY
