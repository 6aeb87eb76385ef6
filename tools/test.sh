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
            docker-compose:docker-compose zfs-fuse:zfs zfs-fuse:zpool zfs-fuse:zfs-fuse curl:curl; do
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

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test 2>&1 | tee "$log" || status=$?
# One closing line for every test binary together.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' \
    "$log"
exit "$status"
