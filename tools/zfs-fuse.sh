# Sourced by the example and bench scripts. `start_zfs_fuse` starts the zfs-fuse daemon unless
# `zpool list` already answers: a pid file left by a dead daemon makes zfs-fuse exit 1 without a
# word, so it is removed first; success is `zpool list` answering (another starter may win).
# `destroy_pool` removes a pool, retrying while it is busy.
start_zfs_fuse() {
    zpool list >/dev/null 2>&1 && return 0
    local pid_file=/run/zfs-fuse.pid pid
    pid=$(cat "$pid_file" 2>/dev/null || true)
    if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != zfs-fuse ]; then
        rm -f "$pid_file"
        zfs-fuse --no-kstat-mount -p "$pid_file" || true
    fi
    for _ in $(seq 100); do
        # (in a subshell: zpool aborts while the daemon is still starting, and bash says so)
        (zpool list) >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "zfs-fuse does not answer \`zpool list\` (apt-get install -y zfs-fuse)" >&2
    return 1
}

# destroy_pool NAME — destroy the pool NAME if it exists, retrying a few seconds: a mount let go
# a moment ago can keep a pool busy briefly.
destroy_pool() {
    for _ in $(seq 20); do
        timeout 30 zpool list "$1" >/dev/null 2>&1 || return 0
        timeout 30 zpool destroy -f "$1" 2>/dev/null && return 0
        sleep 0.3
    done
}
