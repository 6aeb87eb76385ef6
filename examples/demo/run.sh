#!/usr/bin/env bash
# The demo: a database stack that moves between two hosts with its data and its address.
# "Networking AND Storage AND Orchestration". As root, on one machine:
#
#   bash examples/demo/run.sh
#
# Two hosts, a and b: each a network namespace and a mount namespace of its own, with its own
# zfs-fuse pool, dockerd and luastrip (the volume plugin `luastrip-vol` with --volume-follow,
# the overlay with the weave script). One 3-member etcd serves both, on the bridge that joins
# them. Then:
#   1. compose: the stack (examples/demo/docker-compose.yml) up on a; the client reads the data;
#      db stopped on a and up on b: the same data and the same address, and a client on a
#      reaches it over VXLAN;
#   2. swarm: the two dockerds form a swarm; db as a service on the same volume, on b, then
#      moved to a by one `docker service update --constraint-add`: the same data again.
# Each step prints its time; each push, its bytes; the swarm move, its cut-over (the old node's
# Unmount to the new node's Mount answered). Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Names and addresses on this machine; the test suite runs this with its own.
DEMO=${DEMO:-lsdemo}      # namespaces lsdemo-a, lsdemo-b; links; the bridge lsdemo0
NET=${NET:-198.18.77}     # the /24 of the bridge (.1, etcd), host a (.2) and host b (.3)
VNI=${VNI:-4277}          # the overlay's VXLAN id
[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, dockerd, zfs-fuse)" >&2; exit 1; }
. tools/hosts.sh
. tools/nodes.sh
need dockerd:docker.io docker:docker.io docker-compose:docker-compose zfs-fuse:zfs-fuse \
    zpool:zfs-fuse etcd:etcd-server ip:iproute2 nsenter:util-linux unshare:util-linux \
    findmnt:util-linux curl:curl protoc:protobuf-compiler busybox-static
build_luastrip
W=$(mktemp -d /tmp/luastrip-demo.XXXXXX)
BRIDGE=${DEMO}0
PIDS=()         # etcd members and the gateways
NODES=()        # the hosts started so far (tools/nodes.sh)

# ── the two hosts and etcd ──────────────────────────────────────────────────────────────────

ms() { date +%s%3N; }
T0=$(ms)
# step TEXT — print a step and remember when it started; done_step prints its time.
step() { STEP=$(ms); printf '%-64s' "$1"; }
done_step() { printf '%6s ms\n' "$(($(ms) - STEP))"; }
# timed TEXT COMMAND… — a step that runs COMMAND, its output shown only if it fails.
timed() {
    local text=$1
    shift
    step "$text"
    "$@" > "$W/step.out" 2>&1 || { echo; cat "$W/step.out" >&2; fail "$text: failed"; }
    done_step
}

# On failure: each host's log lines about volumes, plugin calls and errors (the whole logs are
# copied to DEMO_LOGS, a directory, when it is set).
show_logs() {
    local h
    for h in a b; do
        [ -f "$W/$h/luastrip.log" ] || continue
        if [ -n "${DEMO_LOGS:-}" ]; then
            mkdir -p "$DEMO_LOGS/$h"
            cp "$W/$h/luastrip.log" "$W/$h/log" "$DEMO_LOGS/$h/" 2>/dev/null || true
        fi
        echo "--- luastrip on $h: its last lines about volumes, plugin calls and errors" >&2
        grep -E 'VolumeDriver|push|recv|volume|WARN|ERROR' "$W/$h/luastrip.log" | tail -n 60 >&2 || true
    done
}
cleanup() {
    local rc=$?
    [ "$rc" = 0 ] || show_logs
    stop_nodes
    stop_all "${PIDS[@]}"
    remove_nodes
    ip link del "$BRIDGE" 2>/dev/null || true
    unmount_under "$W"
    rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# The bridge between the hosts (this machine's side holds etcd).
node_bridge "$BRIDGE" "$NET.1"

step "etcd: 3 members on $NET.1"
start_etcd "$W/etcd" "$NET.1" 2389 2390 2399 2400 2409 2410
done_step
ETCD=$ETCD_URL
(umask 077 && head -c 24 /dev/urandom | base64 > "$W/token")

# start_host NAME IP — the host NAME (tools/nodes.sh: a network namespace on the bridge at IP,
# a mount namespace with its own zfs-fuse pool and dockerd), and its luastrip.
start_host() {
    local h=$1 ip=$2 d=$W/$1
    start_node "$d" "$DEMO-$h" "$BRIDGE" "$ip" "demo$h"
    DOCKER_HOST=unix://$d/docker.sock import_busybox luastrip-demo/busybox "$d"
    # (the plugin's calls logged too: the cut-over is timed from them)
    LUASTRIP_LOG=info,luastrip::plugin=debug nsenter -t "$(cat "$d/pid")" -m -n "$BIN" serve \
        --listen "unix://$d/luastrip.sock" --upstream "unix://$d/docker.sock" \
        --host-name "$h" --cluster "$ETCD" --cluster-prefix "/$DEMO/" \
        --scripts "$PWD/examples/scripts/weave.lua" --network-plugin luastrip \
        --overlay-cidr 10.40.0.0/16 --overlay-underlay "$ip" --overlay-vni "$VNI" \
        --volume-backend zfs --zfs-pool "demo$h" --volume-plugin luastrip-vol --volume-follow \
        --peer-listen "$ip:7700" --peer-url "http://$ip:7700" --peer-token-file "$W/token" \
        2> "$d/luastrip.log" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$d/luastrip.sock" ] && break; sleep 0.1; done
    [ -S "$d/luastrip.sock" ] ||
        { echo "luastrip on $h did not start:" >&2; tail -5 "$d/luastrip.log" >&2; return 1; }
}

step "host a: namespaces, zfs-fuse pool, dockerd, luastrip"
start_host a "$NET.2"
done_step
step "host b: the same"
start_host b "$NET.3"
done_step

# On host H, through its luastrip: docker and docker-compose.
on() { local h=$1; shift; DOCKER_HOST=unix://$W/$h/luastrip.sock "$@"; }
compose() { local h=$1; shift; on "$h" docker-compose -p demo -f examples/demo/docker-compose.yml "$@"; }
address() { on "$1" docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$2"; }
# pushes H — the push lines of host H's luastrip log since the last call (bytes and times).
declare -A SEEN=([a]=0 [b]=0)
pushes() {
    local log=$W/$1/luastrip.log n
    n=$(wc -l < "$log")
    sed -n "$((SEEN[$1] + 1)),${n}p" "$log" | grep -E 'push: .*(step 1 copied|caught up|cut over)' |
        sed -E 's/^.*INFO luastrip::journal: push: /    push on '"$1"': /; s/ helper=.*$//' || true
    SEEN[$1]=$n
}
# log_ms H PATTERN — the time (ms since the epoch) of the last line of H's log matching PATTERN.
log_ms() {
    local line
    line=$(grep -E "$2" "$W/$1/luastrip.log" | tail -n 1)
    [ -n "$line" ] || fail "no line /$2/ in $1's log"
    date -d "${line:0:26}Z" +%s%3N
}
indent() { sed 's/^/    /' <<< "$1"; }
# same BEFORE NOW — NOW holds the data BEFORE held (rows and blob), and no tick is missing.
same() {
    [ "$(head -n 2 <<< "$1")" = "$(head -n 2 <<< "$2")" ] && grep -q 'none missing' <<< "$2"
}
fail() { echo "demo: $*" >&2; exit 1; }

# ── 1. compose ──────────────────────────────────────────────────────────────────────────────

echo
echo "1. compose"
# read_db H ADDRESS — what the client, run on host H, reads from db at ADDRESS (retried for 20 s
# while db starts listening).
read_db() {
    local got
    for _ in $(seq 100); do
        got=$(compose "$1" run --rm -T -e "DB=$2" client 2>/dev/null) && [ -n "$got" ] &&
            { echo "$got"; return 0; }
        sleep 0.2
    done
    fail "the client on $1 read nothing from $2"
}
timed "docker-compose build (on a, through luastrip)" compose a build db
timed "docker-compose up -d db (on a)" compose a up -d db
db_a=$(address a demo_db_1)
step "client on a reads db at $db_a"
before=$(read_db a "$db_a")
done_step
indent "$before"
timed "docker-compose stop db (on a)" compose a stop db
timed "docker-compose build (on b: no registry here)" compose b build db
timed "docker-compose up -d db (on b): the volume and the address move" compose b up -d db
pushes a
db_b=$(address b demo_db_1)
echo "    db's address: $db_a on a, $db_b on b"
[ "$db_a" = "$db_b" ] || fail "db has another address on b ($db_b, was $db_a)"
step "client on a reads db on b, over VXLAN"
after=$(read_db a "$db_b")
done_step
indent "$after"
same "$before" "$after" || fail "db on b serves other data: $after (was $before)"
echo "    the same data and the same address on b"

# ── 2. swarm ────────────────────────────────────────────────────────────────────────────────

echo
echo "2. swarm"
# task H — the service's running container on host H, if any; runs_on H waits (90 s) for one.
task() { on "$1" docker ps -q --filter label=com.docker.swarm.service.name=demo-db; }
runs_on() {
    for _ in $(seq 900); do [ -n "$(task "$1")" ] && return 0; sleep 0.1; done
    fail "the service does not run on $1: $(on b docker service ps --no-trunc demo-db)"
}
summary() { on "$1" docker exec "$(task "$1")" sh /summary.sh; }
step "swarm: a and b form one (b the manager), no ingress"
on b docker swarm init --advertise-addr "$NET.3" --listen-addr "$NET.3:2377" >/dev/null
on b docker network rm ingress >/dev/null 2>&1 <<< y || true
on a docker swarm join --advertise-addr "$NET.2" --listen-addr "$NET.2:2377" \
    --token "$(on b docker swarm join-token -q worker)" "$NET.3:2377" >/dev/null
for h in a b; do
    on b docker node update --label-add "host=$h" \
        "$(on "$h" docker info --format '{{.Swarm.NodeID}}')" >/dev/null
done
done_step
step "compose's db removed; db as a service on b, same volume"
compose b rm -sf db >/dev/null 2>&1
compose a rm -sf db >/dev/null 2>&1
on b docker service create --detach --no-resolve-image --name demo-db --endpoint-mode dnsrr \
    --stop-grace-period 1s --constraint node.labels.host==b \
    --mount type=volume,source=demo_data,target=/data,volume-driver=luastrip-vol,volume-nocopy=true \
    luastrip-demo/db >/dev/null
runs_on b
done_step
on_b=$(summary b)
indent "$on_b"
same "$before" "$on_b" || fail "the service on b has other data: $on_b"
step "docker service update --constraint-add node.labels.host==a"
on b docker service update --detach --constraint-rm node.labels.host==b \
    --constraint-add node.labels.host==a demo-db >/dev/null
runs_on a
done_step
pushes b
unmount=$(log_ms b 'plugin call call=VolumeDriver.Unmount')
mounted=$(log_ms a 'call=VolumeDriver.Mount .*err=""')
echo "    cut-over: $((mounted - unmount)) ms from b's Unmount to a's Mount answered"
on_a=$(summary a)
indent "$on_a"
same "$before" "$on_a" || fail "the service on a has other data: $on_a"
echo "    the same data on a, moved by swarm"
echo
echo "demo done in $(($(ms) - T0)) ms"
