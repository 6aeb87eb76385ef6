#!/usr/bin/env bash
# Two luastrip "hosts" on one machine, one overlay network between them. As root.
#
# Host h1 is this machine's network namespace, host h2 a network namespace of its own; each runs
# a private dockerd and a luastrip with `--network-plugin`, `luastrip.weave` and
# `--overlay-peer` (the other host, over a veth "underlay"). A container on h1 serves a page on
# its overlay address; a container on h2 pings it and fetches the page, over VXLAN.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Everything can be overridden (the test suite runs this with its own names).
NETNS=${NETNS:-lsweave-h2}
LINKS=(${LINKS:-lswu1 lswu2})
UNDERLAY=(${UNDERLAY:-198.18.99.1 198.18.99.2})
BRIDGES=(${BRIDGES:-lsweave1 lsweave2})
PLUGINS=(${PLUGINS:-luastrip-h1 luastrip-h2})
VNI=${VNI:-4242}
IMAGE=luastrip-example/busybox
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, dockerd)" >&2; exit 1; }
. tools/hosts.sh
need dockerd:docker.io curl:curl ip:iproute2 bridge:iproute2 nsenter:util-linux busybox-static
build_luastrip
W=$(mktemp -d /tmp/luastrip-weave.XXXXXX)
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    stop_dockerd "$W/d1"
    stop_dockerd "$W/d2"
    # h1's bridge and VXLAN device stay with its (stopped) daemon's network: remove them.
    ip link del "lsx$VNI" 2>/dev/null || true
    ip link del "${BRIDGES[0]}" 2>/dev/null || true
    remove_underlay "$NETNS" "${LINKS[0]}"
    unmount_under "$W"
    rm -rf "$W"
}
trap cleanup EXIT

underlay "$NETNS" "${LINKS[0]}" "${LINKS[1]}" "${UNDERLAY[0]}" "${UNDERLAY[1]}"
start_dockerd "$W/d1"
start_dockerd "$W/d2" "$NETNS"
for i in 1 2; do DOCKER_HOST="unix://$W/d$i/docker.sock" import_busybox "$IMAGE" "$W/d$i"; done

# The same overlay subnet on both hosts, each picking from its own half until they share one
# cluster store; each floods to the other by VXLAN.
ranges=(10.32.0.0/13 10.40.0.0/13)
for i in 1 2; do
    other=$((2 - i))
    pre=()
    [ "$i" = 2 ] && pre=(nsenter "--net=/run/netns/$NETNS")
    "${pre[@]}" "$BIN" serve --listen "unix://$W/h$i.sock" --upstream "unix://$W/d$i/docker.sock" \
        --scripts examples/scripts/weave.lua --network-plugin "${PLUGINS[i-1]}" \
        --overlay-bridge "${BRIDGES[i-1]}" --overlay-cidr 10.32.0.0/12 \
        --overlay-range "${ranges[i-1]}" --overlay-peer "${UNDERLAY[other]}" --overlay-vni "$VNI" \
        --cluster-file "$W/cluster-h$i.json" --host-name "h$i" 2> "$W/h$i.log" &
    PIDS+=($!)
done
for i in 1 2; do for _ in $(seq 100); do [ -S "$W/h$i.sock" ] && break; sleep 0.1; done; done

set -x
web=$(docker -H "unix://$W/h1.sock" run -d -e WEAVE_CIDR=net:default "$IMAGE" \
    sh -c 'echo hello from h1 > /tmp/index.html; exec httpd -f -p 8080 -h /tmp')
addr=$(docker -H "unix://$W/h1.sock" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$web")
docker -H "unix://$W/h2.sock" run --rm -e WEAVE_CIDR=net:default "$IMAGE" \
    sh -c "ip -4 addr show ethwe0 | grep inet; ping -c 2 -W 2 $addr && wget -qO- http://$addr:8080/"
docker -H "unix://$W/h1.sock" rm -f "$web"
set +x
