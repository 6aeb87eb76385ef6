# Shell set-up shared by the benchmarks and the examples (source it; as root): packages, private
# dockerds (also inside a network namespace, as a second "host"), the busybox image, and the
# veth "underlay" between two hosts on one machine. Each function cleans up after itself only
# when asked; callers keep their own trap.

# need SPEC … — install (apt, quietly) what is missing. SPEC is CMD:PACKAGE (a command),
# /PATH:PACKAGE (a file) or PACKAGE (checked with dpkg).
need() {
    local missing=() spec what
    for spec in "$@"; do
        what=${spec%%:*}
        case $spec in
            /*) [ -e "$what" ] || missing+=("${spec#*:}") ;;
            *:*) command -v "$what" >/dev/null 2>&1 || missing+=("${spec#*:}") ;;
            *) dpkg -s "$spec" >/dev/null 2>&1 || missing+=("$spec") ;;
        esac
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# start_dockerd DIR [NETNS] — a private dockerd with everything under DIR (socket DIR/docker.sock,
# pid in DIR/pid), inside the network namespace NETNS if given; waits until it answers.
# `--bridge=none`: another value would take the machine's docker0.
start_dockerd() {
    local dir=$1 netns=${2:-} pre=()
    mkdir -p "$dir"
    # nsenter switches only the network namespace (`ip netns exec` remounts /sys, and dockerd
    # then finds no cgroups).
    [ -n "$netns" ] && pre=(nsenter "--net=/run/netns/$netns")
    "${pre[@]}" dockerd --host "unix://$dir/docker.sock" --data-root "$dir/data" \
        --exec-root "$dir/exec" --pidfile "$dir/pid" --bridge=none --iptables=false \
        > "$dir/log" 2>&1 &
    wait_dockerd "$dir"
}

# wait_dockerd DIR — wait (30 s) until the dockerd of DIR answers on DIR/docker.sock; if it does
# not, say so with the end of DIR/log.
wait_dockerd() {
    local dir=$1
    for _ in $(seq 300); do
        curl -sf --unix-socket "$dir/docker.sock" http://d/_ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "dockerd in $dir did not start; its log ends:" >&2
    tail -5 "$dir/log" >&2
    return 1
}

# stop_dockerd DIR — SIGTERM the dockerd of DIR and wait for it.
stop_dockerd() {
    local pid
    pid=$(cat "$1/pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

# import_busybox IMAGE DIR — the static busybox as IMAGE (no registry needed), on $DOCKER_HOST.
import_busybox() {
    local image=$1 root=$2/rootfs a
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
    cp /bin/busybox "$root/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
    tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - "$image" >/dev/null
}

# underlay NETNS LINK PEER IP PEER_IP — the network namespace NETNS (a second host), linked to
# this one by the veth pair LINK (here, IP/30) and PEER (there, PEER_IP/30).
underlay() {
    local ns=$1 link=$2 peer=$3 ip=$4 peer_ip=$5
    ip netns add "$ns"
    ip link add "$link" type veth peer name "$peer" netns "$ns"
    ip addr add "$ip/30" dev "$link"
    ip link set "$link" up
    ip -n "$ns" addr add "$peer_ip/30" dev "$peer"
    ip -n "$ns" link set "$peer" up
    ip -n "$ns" link set lo up
}

# remove_underlay NETNS LINK — undo `underlay`.
remove_underlay() {
    ip link del "$2" 2>/dev/null || true
    ip netns del "$1" 2>/dev/null || true
}

# build_luastrip — the release binary in $BIN, built unless $BIN is set already.
build_luastrip() {
    if [ -z "${BIN:-}" ]; then
        cargo build --release --quiet
        BIN=$PWD/target/release/luastrip
    fi
}

# stop_all PID … — SIGTERM each and wait for them: up to 10 s, then SIGKILL. luastrip exits within
# its 5 s grace, so a kill here means something is stuck: it is said, and never waited on forever.
stop_all() {
    local p
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        running "$@" || break
        sleep 0.1
    done
    for p in "$@"; do
        if running "$p"; then
            echo "stop_all: $p did not stop after SIGTERM; killing it" >&2
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    wait "$@" 2>/dev/null || true
}

# running PID … — whether any of them still runs (an exited child not yet waited for does not).
running() {
    local p state
    for p in "$@"; do
        # The state follows the command name, which is in brackets and may hold spaces.
        state=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
        [ -n "$state" ] && [ "$state" != Z ] && return 0
    done
    return 1
}

# unmount_under DIR — lazily unmount whatever is still mounted below DIR (deepest first).
unmount_under() {
    grep -o " $1[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

# start_etcd DIR IP CLIENT1 PEER1 CLIENT2 PEER2 CLIENT3 PEER3 — a 3-member etcd (Debian's
# etcd-server) on IP with those ports, its data and logs under DIR; waits until every member is
# healthy. Sets ETCD_URL (luastrip's `--cluster` value) and appends the members' pids to PIDS.
start_etcd() {
    local dir=$1 ip=$2 i initial= urls=
    shift 2
    local ports=("$@")
    for i in 0 1 2; do
        initial+="${initial:+,}m$i=http://$ip:${ports[i * 2 + 1]}"
        urls+="${urls:+,}$ip:${ports[i * 2]}"
    done
    mkdir -p "$dir"
    for i in 0 1 2; do
        etcd --name "m$i" --data-dir "$dir/m$i" \
            --listen-client-urls "http://$ip:${ports[i * 2]}" \
            --advertise-client-urls "http://$ip:${ports[i * 2]}" \
            --listen-peer-urls "http://$ip:${ports[i * 2 + 1]}" \
            --initial-advertise-peer-urls "http://$ip:${ports[i * 2 + 1]}" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token "etcd-$$" --logger zap --log-level warn 2>"$dir/m$i.log" &
        PIDS+=($!)
    done
    for i in 0 1 2; do
        for _ in $(seq 150); do
            curl -s "http://$ip:${ports[i * 2]}/health" | grep -q '"health":"true"' && break
            sleep 0.2
        done
        curl -s "http://$ip:${ports[i * 2]}/health" | grep -q '"health":"true"' || {
            echo "etcd member m$i did not become healthy; its log ends:" >&2
            tail -5 "$dir/m$i.log" >&2
            return 1
        }
    done
    ETCD_URL=etcd://$urls
}
