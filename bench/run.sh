#!/usr/bin/env bash
# luastrip benchmark: every contender measured side by side in ONE run, on this machine.
#
#   bash bench/run.sh            # as root: installs oha, nginx, haproxy if missing; starts a private dockerd
#
# Contenders, all over Unix sockets, against the same static upstream (nginx `return 200`):
#   direct    – oha straight to the static upstream
#   luastrip  – luastrip serve (release build) in front of it
#   nginx     – nginx proxy_pass with upstream keepalive
#   haproxy   – HAProxy mode http with connection reuse
#   luastrip-hook – luastrip with a trivial Lua pre hook on every call
# and, POSTing the real docker CLI create body (tests/fixtures/create-body.json) to
# /containers/create: luastrip pass-through, luastrip with a Lua hook that decodes it, adds a
# label and re-encodes it, and nginx + Lua (lua-nginx-module + cjson) doing the same edit;
# then GET /_ping on a private dockerd, direct and through luastrip, and luastrip's RSS with 1000
# idle client connections. Rounds are interleaved (A B C D, A B C D, …) so that drift on a noisy
# machine hits every contender alike; the median round is reported, with ratios to luastrip.
#
# Like with like: luastrip, nginx and HAProxy all get THREADS threads (luastrip --threads, nginx
# worker_processes, HAProxy nbthread).
#
# Environment: DURATION (s per round, default 5), ROUNDS (default 3), CONC (connections, default
# 50), THREADS (threads of every proxy, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-50}
THREADS=${THREADS:-1}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts a private dockerd)"
# What a fresh Debian machine lacks: Debian's packages with apt, oha with cargo.
. tools/hosts.sh
need nginx:nginx-light haproxy:haproxy dockerd:docker.io curl:curl \
    /usr/lib/nginx/modules/ngx_http_lua_module.so:libnginx-mod-http-lua \
    /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so:lua-cjson
command -v oha >/dev/null || cargo install oha --locked --quiet || die "cannot install oha"
export PATH="$HOME/.cargo/bin:$PATH"
BODY=$PWD/tests/fixtures/create-body.json

build_luastrip
D=$(mktemp -d /tmp/luastrip-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$D/nginx-static.pid" ] && kill "$(cat "$D/nginx-static.pid")" 2>/dev/null || true
    [ -f "$D/nginx-proxy.pid" ] && kill "$(cat "$D/nginx-proxy.pid")" 2>/dev/null || true
    [ -f "$D/nginx-lua.pid" ] && kill "$(cat "$D/nginx-lua.pid")" 2>/dev/null || true
    stop_dockerd "$D/dockerd"
    sleep 1
    rm -rf "$D" 2>/dev/null || true
}
trap cleanup EXIT

wait_sock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; die "no socket $1"; }

# --- the static upstream ------------------------------------------------------------------
cat > "$D/nginx-static.conf" <<NGX
worker_processes 1;
user root;
pid $D/nginx-static.pid;
error_log $D/nginx-static.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen unix:$D/static.sock;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
NGX
nginx -c "$D/nginx-static.conf" -g 'daemon on;'
wait_sock "$D/static.sock"

# --- contenders ---------------------------------------------------------------------------
LUASTRIP_LOG=warn "$BIN" serve --threads "$THREADS" --listen "unix://$D/luastrip.sock" --upstream "unix://$D/static.sock" \
    2> "$D/luastrip.err" & PIDS+=($!)
LUASTRIP_PID=$!
wait_sock "$D/luastrip.sock"

cat > "$D/trivial.lua" <<'LUA'
route.pre("* /**", function(req) end)
LUA
cat > "$D/json-edit.lua" <<'LUA'
route.pre("POST /containers/create", function(req)
  local spec = req:json()
  spec.Labels = spec.Labels or json.object()
  spec.Labels["managed-by"] = "luastrip"
  req:set_json(spec)
end)
LUA
LUASTRIP_LOG=warn "$BIN" serve --threads "$THREADS" --listen "unix://$D/luastrip-hook.sock" --upstream "unix://$D/static.sock" \
    --scripts "$D/trivial.lua" 2> "$D/luastrip-hook.err" & PIDS+=($!)
LUASTRIP_LOG=warn "$BIN" serve --threads "$THREADS" --listen "unix://$D/luastrip-json.sock" --upstream "unix://$D/static.sock" \
    --scripts "$D/json-edit.lua" 2> "$D/luastrip-json.err" & PIDS+=($!)
wait_sock "$D/luastrip-hook.sock"
wait_sock "$D/luastrip-json.sock"

cat > "$D/nginx-lua.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes $THREADS;
user root;
pid $D/nginx-lua.pid;
error_log $D/nginx-lua.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    lua_package_cpath "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
    upstream static { server unix:$D/static.sock; keepalive 128; }
    server {
        listen unix:$D/nginx-lua.sock;
        client_body_buffer_size 64k;
        location / {
            rewrite_by_lua_block {
                local cjson = require "cjson"
                ngx.req.read_body()
                local b = ngx.req.get_body_data()
                if b then
                    local t = cjson.decode(b)
                    t.Labels = t.Labels or {}
                    t.Labels["managed-by"] = "luastrip"
                    ngx.req.set_body_data(cjson.encode(t))
                end
            }
            proxy_pass http://static;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGX
nginx -c "$D/nginx-lua.conf" -g 'daemon on;'
wait_sock "$D/nginx-lua.sock"

cat > "$D/nginx-proxy.conf" <<NGX
worker_processes $THREADS;
user root;
pid $D/nginx-proxy.pid;
error_log $D/nginx-proxy.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream static { server unix:$D/static.sock; keepalive 128; }
    server {
        listen unix:$D/nginx-proxy.sock;
        location / {
            proxy_pass http://static;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGX
nginx -c "$D/nginx-proxy.conf" -g 'daemon on;'
wait_sock "$D/nginx-proxy.sock"

cat > "$D/haproxy.cfg" <<HAP
global
    nbthread $THREADS
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind unix@$D/haproxy.sock
    default_backend be
backend be
    server s1 unix@$D/static.sock
HAP
haproxy -f "$D/haproxy.cfg" -D -p "$D/haproxy.pid"
PIDS+=($(cat "$D/haproxy.pid"))
wait_sock "$D/haproxy.sock"

# --- a private dockerd for /_ping -----------------------------------------------------------
start_dockerd "$D/dockerd"
LUASTRIP_LOG=warn "$BIN" serve --threads "$THREADS" --listen "unix://$D/luastrip-docker.sock" --upstream "unix://$D/dockerd/docker.sock" \
    2> "$D/luastrip-docker.err" & PIDS+=($!)
wait_sock "$D/luastrip-docker.sock"

# --- measuring ------------------------------------------------------------------------------
# one_run NAME SOCKET PATH [oha args…] -> appends "NAME rps p50_ms p99_ms non2xx" to $D/results
one_run() {
    local name=$1 sock=$2 path=$3
    shift 3
    oha --no-tui --output-format json -z "${DURATION}s" -c "$CONC" --unix-socket "$sock" "$@" \
        "http://localhost$path" > "$D/oha.json" 2>/dev/null
    python3 - "$name" "$D/oha.json" >> "$D/results" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
j = json.load(open(path))
s, p = j["summary"], j["latencyPercentiles"]
ok = j.get("statusCodeDistribution", {})
bad = sum(v for k, v in ok.items() if not k.startswith("2"))
print(name, round(s["requestsPerSec"]), round(p["p50"] * 1000, 3), round(p["p99"] * 1000, 3), bad)
PY
}

: > "$D/results"
for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    one_run direct   "$D/static.sock"           /
    one_run luastrip "$D/luastrip.sock"         /
    one_run nginx    "$D/nginx-proxy.sock"      /
    one_run haproxy  "$D/haproxy.sock"          /
    one_run luastrip-hook "$D/luastrip-hook.sock"   /
    one_run docker-direct   "$D/dockerd/docker.sock"     /_ping
    one_run docker-luastrip "$D/luastrip-docker.sock"    /_ping
    POST=(-m POST -T application/json -D "$BODY")
    one_run create-luastrip "$D/luastrip.sock"      /containers/create "${POST[@]}"
    one_run create-luastrip-json "$D/luastrip-json.sock" /containers/create "${POST[@]}"
    one_run create-nginx-lua "$D/nginx-lua.sock"    /containers/create "${POST[@]}"
done

# RSS of a fresh pass-through gateway with 1000 idle keep-alive connections, each of which made
# one request (one after another), then after a burst of 1000 concurrent requests on them.
LUASTRIP_LOG=warn "$BIN" serve --threads "$THREADS" --listen "unix://$D/luastrip-rss.sock" --upstream "unix://$D/static.sock" \
    2> "$D/luastrip-rss.err" & PIDS+=($!)
RSS_PID=$!
wait_sock "$D/luastrip-rss.sock"
RSS=$(python3 - "$D/luastrip-rss.sock" "$RSS_PID" <<'PY'
import socket, sys, time
path, pid = sys.argv[1], sys.argv[2]
def rss_mb():
    kb = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
    return round(int(kb) / 1024, 1)
req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
conns = []
for _ in range(1000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(req)
    s.recv(4096)
    conns.append(s)
time.sleep(1)
idle = rss_mb()
for s in conns:
    s.sendall(req)
for s in conns:
    s.recv(4096)
time.sleep(1)
print(idle, rss_mb())
PY
)

python3 - "$D/results" "$RSS" "$DURATION" "$ROUNDS" "$CONC" "$THREADS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, bad = line.split()
    rows.setdefault(name, []).append((int(rps), float(p50), float(p99), int(bad)))
(rss_idle, rss_burst), dur, rounds, conc = sys.argv[2].split(), sys.argv[3], sys.argv[4], sys.argv[5]
def med(name):
    runs = sorted(rows[name])
    return runs[len(runs) // 2]
print(f"{rounds} interleaved rounds of {dur}s, {conc} connections, oha over Unix sockets; median round shown")
print(f"threads: {sys.argv[6]} for every proxy (luastrip --threads, nginx worker_processes, HAProxy nbthread)\n")
print("| contender | req/s | p50 ms | p99 ms | non-2xx |")
print("|---|---:|---:|---:|---:|")
for name in ["direct", "luastrip", "nginx", "haproxy", "luastrip-hook", "docker-direct", "docker-luastrip",
             "create-luastrip", "create-luastrip-json", "create-nginx-lua"]:
    rps, p50, p99, bad = med(name)
    print(f"| {name} | {rps} | {p50} | {p99} | {bad} |")
l = med("luastrip"); n = med("nginx"); h = med("haproxy"); d = med("direct")
dd = med("docker-direct"); dl = med("docker-luastrip")
print()
print(f"- luastrip / nginx proxy rps: {l[0]/n[0]:.2f}  (target >= 1.2); p99 {l[2]} vs {n[2]} ms")
print(f"- luastrip / HAProxy rps: {l[0]/h[0]:.2f}  (target >= 1.2); p99 {l[2]} vs {h[2]} ms")
print(f"- luastrip / direct static rps: {l[0]/d[0]:.2f}")
print(f"- dockerd GET /_ping through luastrip / direct: {dl[0]/dd[0]:.2f}  (target >= 0.8)")
t = med("luastrip-hook"); cj = med("create-luastrip-json"); cn = med("create-nginx-lua"); cp = med("create-luastrip")
print(f"- trivial Lua hook / pass-through rps: {t[0]/l[0]:.2f}  (target >= 0.9)")
print(f"- JSON-editing hook / nginx+Lua (cjson) rps: {cj[0]/cn[0]:.2f}  (target >= 1.3); "
      f"JSON hook / pass-through on the same POST: {cj[0]/cp[0]:.2f}")
print(f"- luastrip RSS with 1000 idle connections: {rss_idle} MB  (target <= 30); "
      f"after a burst of 1000 concurrent requests on them: {rss_burst} MB")
PY
