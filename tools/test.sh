#!/usr/bin/env bash
# The one test command: installs what a fresh Debian machine lacks (as root, with apt), then runs
# every check CI runs: formatting, clippy, unit tests and the integration tests against a real,
# private dockerd. Usage, as root: bash tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: the integration tests start a private dockerd and need root: run it as root" >&2
    exit 1
fi

# package:command pairs; a package is installed when its command is missing.
need=()
for pair in docker.io:dockerd docker.io:docker busybox-static:busybox bsdutils:script \
            util-linux:setpriv tmux:tmux iproute2:ip tar:tar coreutils:sha256sum \
            docker-compose:docker-compose zfs-fuse:zfs zfs-fuse:zpool zfs-fuse:zfs-fuse curl:curl \
            systemd:systemd-socket-activate systemd:systemd-analyze openssl:openssl podman:podman \
            etcd-server:etcd protobuf-compiler:protoc; do
    pkg=${pair%%:*} cmd=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# Debian's python3 (the tests run it as another uid, which cannot reach a per-user install), and
# docker-py for it.
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import docker' >/dev/null 2>&1 || need+=(python3-docker)
# A dynamically linked busybox cannot run inside an empty image.
if ! dpkg -s busybox-static >/dev/null 2>&1; then need+=(busybox-static); fi
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "tools/test.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# EmmyLua's checker, for the type-stub test (tests/stubs.rs): lua-language-server is in no
# registry this project reaches. Built once (a few minutes), then kept in cargo's bin directory.
if ! command -v emmylua_check >/dev/null 2>&1; then
    echo "tools/test.sh: installing emmylua_check (cargo install)" >&2
    cargo install --quiet --locked emmylua_check --version 0.25.1
fi

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The binary as users build it (cargo build, cargo install): without the features dev-dependencies
# add under `cargo test` (which once hid a regex feature `serve` needs at start-up).
cargo build --quiet --bin luastrip
smoke=$(mktemp -d)
target/debug/luastrip serve --listen "unix://$smoke/s.sock" --upstream "unix://$smoke/none.sock" \
    --scripts scripts/ 2>"$smoke/log" &
for _ in $(seq 100); do [ -S "$smoke/s.sock" ] && break; sleep 0.1; done
if ! curl -s --unix-socket "$smoke/s.sock" http://d/_ping | grep -q 'cannot reach the Docker daemon'; then
    echo "tools/test.sh: the plain build of luastrip does not serve:" >&2
    cat "$smoke/log" >&2
    kill %1 2>/dev/null || true
    exit 1
fi
kill %1 && wait %1 || true
rm -rf "$smoke"
log=$(mktemp)
trap 'rm -f "$log" "$log.done"' EXIT
# A hang must not run on into CI's limit with nothing said: past TEST_LIMIT seconds, the stuck
# processes are printed and the test binaries killed, so cargo reports the failure.
TEST_LIMIT=${TEST_LIMIT:-1500}
watchdog() {
    local deadline=$((SECONDS + TEST_LIMIT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        sleep 2
        [ -e "$log.done" ] && return 0
    done
    echo "tools/test.sh: cargo test ran past ${TEST_LIMIT}s; the processes now:" >&2
    ps -eo pid,ppid,stat,wchan:24,etimes,args --sort pid >&2
    pkill -KILL -f "^$PWD/target/debug/deps/" || true
}
watchdog &
watchdog_pid=$!
status=0
# --no-fail-fast: one failing test binary never hides the results of the others.
cargo test --no-fail-fast 2>&1 | tee "$log" || status=$?
touch "$log.done"
wait "$watchdog_pid" || true
# One closing line for every test binary together.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' \
    "$log"
exit "$status"
