# "Nodes" on one machine (source tools/hosts.sh first and set NODES=(); as root): each a
# network namespace on a bridge of this machine and a mount namespace of its own, with its own
# zfs-fuse pool and dockerd, as a swarm node or a second host needs. Its own zfs-fuse, because
# zfs-fuse cannot unmount or destroy a dataset whose mount was copied into another mount
# namespace ("dataset is busy"): nodes sharing one would pin each other's datasets. Used by
# examples/demo/run.sh and bench/swarm.sh (tests/swarm.rs does the same in Rust).

# node_bridge BRIDGE IP — the bridge the nodes join, with IP/24 on this machine's side.
node_bridge() {
    ip link add "$1" type bridge
    ip addr add "$2/24" dev "$1"
    ip link set "$1" up
}

# start_node DIR NAME BRIDGE IP POOL — the node NAME: the network namespace NAME on BRIDGE at
# IP/24 (the veth's end here is named NAME too); in a new mount namespace, private
# /run/docker/plugins, /etc/docker, /run/containerd and zfs-fuse directories, its copies of this
# machine's zfs mounts dropped, its zfs-fuse (pid in DIR/zfs-fuse.pid), the pool POOL on
# DIR/pool.img mounted under DIR/mnt, and dockerd (socket DIR/docker.sock, pid in DIR/pid, log
# DIR/log). Waits until dockerd answers. The node is added to NODES (for stop_nodes and
# remove_nodes) before anything is made. Run a gateway in the node's namespaces with
# `nsenter -t "$(cat DIR/pid)" -m -n luastrip serve …` (nsenter execs it: `$!` is its pid).
start_node() {
    local d=$1 ns=$2 bridge=$3 ip=$4 pool=$5
    NODES+=("$d $ns $pool")
    mkdir -p "$d"
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip link set "$ns" master "$bridge" up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    truncate -s "${NODE_POOL_SIZE:-512M}" "$d/pool.img"
    nsenter "--net=/run/netns/$ns" unshare --mount --propagation private --uts sh -c "
        set -e; hostname $ns
        for m in /run/docker/plugins /etc/docker /run/containerd /run/zfs /run/lock/zfs \
                 /var/lib/zfs; do mkdir -p \$m; mount -t tmpfs tmpfs \$m; done
        findmnt -rn -t fuse,fuse.zfs -o SOURCE,TARGET | while read -r src target; do
            case \$src in */*) umount -l \"\$target\";; esac; done
        zfs-fuse --no-kstat-mount -p $d/zfs-fuse.pid
        n=0; until zpool list >/dev/null 2>&1; do
            n=\$((n+1)); [ \$n -lt 200 ] || exit 1; sleep 0.1; done
        zpool create -f -m $d/mnt $pool $d/pool.img
        exec dockerd --host unix://$d/docker.sock --data-root $d/data --exec-root $d/exec \
            --pidfile $d/pid --bridge=none --iptables=false --ip-masq=false" > "$d/log" 2>&1 &
    wait_dockerd "$d"
}

# stop_nodes — for each node of NODES: leave the swarm, remove every container, stop dockerd.
# Stop the nodes' gateways after this (a dockerd whose plugin is gone retries it for seconds),
# then remove_nodes.
stop_nodes() {
    local node d
    for node in "${NODES[@]}"; do
        d=${node%% *}
        [ -S "$d/docker.sock" ] || continue
        DOCKER_HOST=unix://$d/docker.sock docker swarm leave --force >/dev/null 2>&1 || true
        DOCKER_HOST=unix://$d/docker.sock docker ps -aq 2>/dev/null |
            xargs -r env DOCKER_HOST="unix://$d/docker.sock" docker rm -f >/dev/null 2>&1 || true
        stop_dockerd "$d"
    done
}

# remove_nodes — for each node of NODES: destroy its pool, stop its zfs-fuse (its mount
# namespace goes with it), remove its network namespace and veth.
remove_nodes() {
    local node d ns pool zpid
    for node in "${NODES[@]}"; do
        read -r d ns pool <<< "$node"
        zpid=$(cat "$d/zfs-fuse.pid" 2>/dev/null) || zpid=
        if [ -n "$zpid" ]; then
            for _ in $(seq 20); do
                nsenter -t "$zpid" -m zpool destroy -f "$pool" 2>/dev/null && break
                sleep 0.3
            done
            kill "$zpid" 2>/dev/null || true
            for _ in $(seq 300); do kill -0 "$zpid" 2>/dev/null || break; sleep 0.1; done
        fi
        ip netns del "$ns" 2>/dev/null || true
        ip link del "$ns" 2>/dev/null || true
    done
}
