#!/usr/bin/env bash
# TLS bridging (re-encryption towards TLS backends): the appliance ([vserver.backend_tls])
# beside NGINX (proxy_pass https:// with proxy_ssl_session_reuse on) and HAProxy (server
# ... ssl verify required), all verifying the same TLS backend, in one run.
#
#   bash tools/bench/bridge.sh [--seconds N] [--records inline|pool] [--backend-tls 1.2]
#                              [--no-record]
#
# --backend-tls 1.2: every server speaks TLS 1.2 to the backend (the appliance
# `versions = ["1.2"]`, NGINX `proxy_ssl_protocols TLSv1.2`, HAProxy `ssl-max-ver
# TLSv1.2`); default: TLS 1.2 and 1.3 offered, the backend chooses (TLS 1.3).
#
# --records pool: the appliance gets one crypto worker on CPU 0 and protects both legs'
# records in record jobs there ([crypto] records = "pool"); its busy time is then the
# poll-mode core's plus the worker's CPU time. Default inline: every record on the poll
# core, no worker.
#
# Topology as tools/bench/tls.sh: the appliance on DPDK in NAME-a (10.77.0.1), NGINX and
# HAProxy on the kernel stack in NAME-k (10.77.1.1), and in NAME-h the backend (nginx,
# one worker on CPU 0, TLS 1.2 and 1.3 on :8443, tickets on, a certificate for
# api.internal from a CA every server is given) and loadgen (CPU 0). Servers on the last
# CPU. Every server opens one backend connection per client connection (NGINX: no
# upstream keepalive; HAProxy: http-reuse never), so each request through it costs a
# backend TLS handshake, resumed by every server's session reuse.
#
# Cells: request = a new client connection (TLS 1.3 full handshake), one GET of a small
# page, close: busy µs per request; bulk = 1 MiB keep-alive GETs: MB/s per busy core. The
# backend's resumption rate comes from its own access log ($ssl_session_reused). A
# reference cell per server runs the same requests to a plaintext backend (the same nginx
# on :8080), so the table says what re-encryption itself costs each server.
#
# PERF=FILE: `perf record -g` of the appliance during its TLS-backend request cell
# (then `perf report -i FILE`).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=5
RECORD=1
RECORDS=inline
BACKEND_TLS=both
USAGE="usage: bridge.sh [--seconds N] [--records inline|pool] [--backend-tls 1.2] [--no-record]"
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECS=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --records) RECORDS=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --backend-tls) BACKEND_TLS=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --no-record) RECORD=0; shift ;;
    *) echo "$USAGE" >&2; exit 2 ;;
    esac
done
case "$BACKEND_TLS" in
both) APPL_VERSIONS=""; NGINX_PROTOCOLS="TLSv1.2 TLSv1.3"; HAPROXY_MAX="" ;;
1.2) APPL_VERSIONS='versions = ["1.2"]'; NGINX_PROTOCOLS="TLSv1.2"; HAPROXY_MAX=" ssl-max-ver TLSv1.2" ;;
*) echo "--backend-tls: 1.2 (or leave it out for both versions), not \"$BACKEND_TLS\"" >&2; exit 2 ;;
esac
case "$SECS" in ''|*[!0-9]*|0) echo "--seconds: a whole number of seconds, at least 1" >&2; exit 2 ;; esac
case "$RECORDS" in
inline) CRYPTO="" ;;
pool) CRYPTO=$'[crypto]\nworkers = 1\ncpus = [0]\nrecords = "pool"' ;;
*) echo "--records: inline or pool, not \"$RECORDS\"" >&2; exit 2 ;;
esac
CMD="bash tools/bench/bridge.sh --seconds $SECS"
[ "$RECORDS" = pool ] && CMD="$CMD --records pool"
[ "$BACKEND_TLS" = 1.2 ] && CMD="$CMD --backend-tls 1.2"

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli -p tools

. tools/lib.sh
need_two_cpus
test_net bb 'ip netns del "$NAME-k" 2>/dev/null'
kernel_peer_net
K=(ip netns exec "$NAME-k")

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www"
echo "ok" > "$WORK/www/index.html"
head -c $((1 << 20)) /dev/urandom > "$WORK/www/1m.bin"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=bench.test -addext "subjectAltName=DNS:bench.test" \
    -keyout "$WORK/ec.key" -out "$WORK/ec.pem" 2>/dev/null
cat "$WORK/ec.pem" "$WORK/ec.key" > "$WORK/ec.both"
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=backend-ca -keyout "$WORK/bca.key" -out "$WORK/bca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=api.internal -keyout "$WORK/api.key" -out "$WORK/api.csr" 2>/dev/null
echo "subjectAltName=DNS:api.internal" > "$WORK/api.ext"
openssl x509 -req -in "$WORK/api.csr" -CA "$WORK/bca.pem" -CAkey "$WORK/bca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/api.ext" -out "$WORK/api.pem" 2>/dev/null
chmod 644 "$WORK"/*.key "$WORK"/*.both

# The TLS backend: one nginx worker on CPU 0, its access log says whether each backend
# connection resumed.
cat > "$WORK/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend.err;
events { worker_connections 8192; }
http {
    log_format reuse '\$ssl_protocol \$ssl_session_reused';
    access_log $WORK/backend.access reuse;
    sendfile on;
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:be:20m;
    ssl_session_tickets on;
    server { listen 8080 reuseport backlog=4096; root $WORK/www; access_log off; }
    server {
        listen 8443 ssl reuseport backlog=4096;
        ssl_certificate $WORK/api.pem;
        ssl_certificate_key $WORK/api.key;
        root $WORK/www;
    }
}
CONF
"${H[@]}" taskset -c 0 nginx -c "$WORK/backend.conf" &
PIDS+=($!)

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity $(python3 -c "print(format(1 << $LAST, 'b'))");
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 8192; }
http {
    access_log off;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:tls:20m;
    upstream be { server 10.77.1.2:8443; }
    upstream plain { server 10.77.1.2:8080; }
    server {
        listen 10.77.1.1:444 ssl backlog=4096;
        ssl_certificate $WORK/ec.pem;
        ssl_certificate_key $WORK/ec.key;
        location / { proxy_pass http://plain; proxy_http_version 1.1; proxy_buffering off; }
    }
    server {
        listen 10.77.1.1:443 ssl backlog=4096;
        ssl_certificate $WORK/ec.pem;
        ssl_certificate_key $WORK/ec.key;
        location / {
            proxy_pass https://be;
            proxy_http_version 1.1;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols $NGINX_PROTOCOLS;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $WORK/bca.pem;
            proxy_ssl_name api.internal;
            proxy_ssl_server_name on;
            proxy_buffering off;
        }
    }
}
CONF
"${K[@]}" nginx -c "$WORK/nginx.conf" &
PIDS+=($!)

cat > "$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    cpu-map 1/all $LAST
    maxconn 9000
    tune.ssl.cachesize 20000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend ec
    bind 10.77.1.1:8443 ssl crt $WORK/ec.both
    default_backend be
frontend plain
    bind 10.77.1.1:8444 ssl crt $WORK/ec.both
    default_backend plain
backend plain
    http-reuse never
    server p1 10.77.1.2:8080
backend be
    http-reuse never
    server b1 10.77.1.2:8443 ssl verify required ca-file $WORK/bca.pem sni str(api.internal) verifyhost api.internal$HAPROXY_MAX
CONF
"${K[@]}" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!
pinned haproxy "$HAPROXY_PID" "$LAST"

cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
$CRYPTO
$(bench_tls_vserver bridge 10.77.0.1:443 ec 10.77.0.2:8443)
[vserver.backend_tls]
ca = "bca.pem"
server_name = "api.internal"
$APPL_VERSIONS
$(bench_tls_vserver plain 10.77.0.1:444 ec)
TOML
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
APPLIANCE_PID=$!
CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
wait_control "$WORK/control.sock" "$WORK/appliance.log"
for _ in $(seq 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
pinned "nginx worker" "$NGINX_WORKER" "$LAST"

speed() { openssl speed -seconds 1 "$@" 2>/dev/null; }
GCM=$(speed -evp aes-128-gcm -bytes 16384 | awk '/^AES-128-GCM/ {sub("k", "", $NF); print $NF * 1000; exit}')
echo "== limit per core (openssl speed): AES-128-GCM $GCM B/s"

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
busy_s() {
    case "$1" in
    appliance)
        if [ "$RECORDS" = pool ]; then
            # The poll-mode core's busy time and the crypto worker's CPU time.
            "${CTL[@]}" --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(c["loops"]["busy_cycles"] for c in s["cores"]) / s["cycles_per_second"] + sum(w["cpu_ns"] for w in s["crypto"]["workers"]) / 1e9)'
        else
            appliance_busy_s
        fi ;;
    nginx) python3 -c "print($(ticks "$NGINX_WORKER") / $HZ)" ;;
    haproxy) python3 -c "print($(ticks "$HAPROXY_PID") / $HZ)" ;;
    esac
}
target() {   # target SERVER tls|plain
    case "$1-$2" in
    appliance-tls) echo 10.77.0.1:443 ;; nginx-tls) echo 10.77.1.1:443 ;; haproxy-tls) echo 10.77.1.1:8443 ;;
    appliance-plain) echo 10.77.0.1:444 ;; nginx-plain) echo 10.77.1.1:444 ;; haproxy-plain) echo 10.77.1.1:8444 ;;
    esac
}
# measure SERVER TEST tls|plain LOADGEN-ARGS...: one cell, with the backend's log lines of
# its seconds; appends a JSON line to $WORK/cells.
measure() {
    local server=$1 test=$2 backend=$3; shift 3
    local b0 b1 t0 t1 out l0 perf=""
    l0=$(wc -l < "$WORK/backend.access" 2>/dev/null || echo 0)
    if [ -n "${PERF:-}" ] && [ "$server-$test" = appliance-request ]; then
        perf record -g -o "$PERF" -p "$APPLIANCE_PID" -- sleep "$SECS" >/dev/null 2>&1 &
        perf=$!
    fi
    b0=$(busy_s "$server"); t0=$(date +%s.%N)
    out=$("${H[@]}" taskset -c 0 "$BIN/loadgen" --target "$(target "$server" "$backend")" --sni bench.test \
        --no-verify --duration "${SECS}s" --json --quiet "$@" || true)
    b1=$(busy_s "$server"); t1=$(date +%s.%N)
    [ -n "$perf" ] && wait "$perf"
    sleep 0.3   # the backend's last lines
    tail -n +"$((l0 + 1))" "$WORK/backend.access" > "$WORK/cell.access" 2>/dev/null || : > "$WORK/cell.access"
    python3 - "$server" "$test" "$b0" "$b1" "$t0" "$t1" "$out" "$WORK/cell.access" >> "$WORK/cells" <<'PY'
import json, sys
server, test, b0, b1, t0, t1, out, acc = sys.argv[1:9]
r = json.loads(out)
lines = [l.split() for l in open(acc)]
print(json.dumps({"server": server, "test": test, "ops": r["ops_per_sec"], "bytes": r["bytes_in_per_sec"],
    "errors": r["error_count"], "busy": (float(b1) - float(b0)) / (float(t1) - float(t0)),
    "backend_conns": len(lines), "backend_resumed": sum(1 for l in lines if len(l) > 1 and l[1] == "r"),
    "backend_versions": sorted({l[0] for l in lines if l})}))
PY
    tail -1 "$WORK/cells" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("   %-9s %-8s %9.1f/s  busy %5.1f%%  errors %d  backend requests %d, resumed %d %s"
      % (c["server"], c["test"], c["ops"], 100 * c["busy"], c["errors"], c["backend_conns"], c["backend_resumed"], c["backend_versions"]))'
}

: > "$WORK/cells"
for server in appliance nginx haproxy; do
    echo "== $server (${SECS} s per test)"
    REQ=(--mode request --tls 1.3 --groups X25519 --ciphersuites TLS_AES_128_GCM_SHA256 --path /index.html --concurrency 32)
    measure "$server" request tls "${REQ[@]}"
    measure "$server" request-plain plain "${REQ[@]}"
    measure "$server" bulk tls --mode bulk --tls 1.3 --path /1m.bin --concurrency 4
    measure "$server" bulk-plain plain --mode bulk --tls 1.3 --path /1m.bin --concurrency 4
done

TABLE=$(python3 - "$WORK/cells" "$GCM" <<'PY'
import json, sys
cells = [json.loads(l) for l in open(sys.argv[1])]
gcm = float(sys.argv[2])
get = {(c["server"], c["test"]): c for c in cells}
servers = ["appliance", "nginx", "haproxy"]
# The last two columns: how many times better the appliance does (a peer's µs ÷ the
# appliance's, or the appliance's MB/s ÷ a peer's): above 1 the appliance leads.
out = ["| test | appliance | NGINX | HAProxy | appliance vs NGINX | appliance vs HAProxy |", "|---|---:|---:|---:|---:|---:|"]
us = lambda c: 1e6 * c["busy"] / c["ops"] if c["ops"] else float("nan")
cs = [get[(s, "request")] for s in servers]
out.append("| TLS 1.3 full handshake + GET, TLS backend (resumed): busy µs per request (lower is better) | " + " | ".join(f"{us(c):,.0f}" for c in cs)
           + f" | {us(cs[1]) / us(cs[0]):.2f}× | {us(cs[2]) / us(cs[0]):.2f}× |")
out.append("| the same: requests/s (client-bound) and busy share | " + " | ".join(f"{c['ops']:,.0f} ({100 * c['busy']:.0f}%)" for c in cs) + " | | |")
ps = [get[(s, "request-plain")] for s in servers]
out.append("| the same to a plaintext backend: busy µs per request | " + " | ".join(f"{us(c):,.0f}" for c in ps)
           + f" | {us(ps[1]) / us(ps[0]):.2f}× | {us(ps[2]) / us(ps[0]):.2f}× |")
out.append("| what re-encryption adds: busy µs per request | " + " | ".join(f"{us(c) - us(p):,.0f}" for c, p in zip(cs, ps))
           + f" | {(us(cs[1]) - us(ps[1])) / (us(cs[0]) - us(ps[0])):.2f}× | {(us(cs[2]) - us(ps[2])) / (us(cs[0]) - us(ps[0])):.2f}× |")
out.append("| the same: backend connections resumed ($ssl_session_reused) | " + " | ".join(f"{c['backend_resumed']:,}/{c['backend_conns']:,} ({100 * c['backend_resumed'] / max(c['backend_conns'], 1):.1f}%) {'/'.join(c['backend_versions'])}" for c in cs) + " | | |")
cs = [get[(s, "bulk")] for s in servers]
cap = lambda c: c["bytes"] / 1e6 / c["busy"] if c["busy"] > 0.001 else float("nan")
out.append("| 1 MiB keep-alive GETs, bridged: MB/s per busy core-second | " + " | ".join(f"{cap(c):,.0f} ({c['bytes'] / 1e6:,.0f} MB/s, {100 * c['busy']:.0f}% busy)" for c in cs)
           + f" | {cap(cs[0]) / cap(cs[1]):.2f} | {cap(cs[0]) / cap(cs[2]):.2f} |")
ps = [get[(s, "bulk-plain")] for s in servers]
out.append("| 1 MiB keep-alive GETs, plaintext backend: MB/s per busy core-second | " + " | ".join(f"{cap(c):,.0f}" for c in ps)
           + f" | {cap(ps[0]) / cap(ps[1]):.2f} | {cap(ps[0]) / cap(ps[2]):.2f} |")
out.append(f"| AES-128-GCM limit per core (`openssl speed`, 16 KiB): each bridged byte is opened once and sealed once | {gcm / 2e6:,.0f} MB/s | | | | |")
errs = {s: sum(c["errors"] for c in cells if c["server"] == s) for s in servers}
out.append("| errors over all tests | " + " | ".join(str(errs[s]) for s in servers) + " | | |")
print("\n".join(out))
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## TLS bridging (re-encryption to a TLS backend): appliance vs NGINX vs HAProxy, $(date -u +%Y-%m-%d)"
        echo
        [ "$RECORDS" = pool ] && echo "Record offload: the appliance has one crypto worker on CPU 0 and both legs' records go through record jobs there; its busy time below is its poll-mode core's busy time plus the worker's CPU time." && echo
        echo "Command: \`$CMD\`. Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r), $(openssl version | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3), $(haproxy -v | head -1 | cut -d' ' -f1-3)."
        echo "Servers on CPU $LAST; the TLS backend (nginx, one worker, TLS 1.2 and 1.3, tickets) and loadgen (libssl, one thread) on CPU 0; ${SECS} s per cell. Every server verifies the backend's chain and name (api.internal) and opens one backend connection per client connection (NGINX without upstream keepalive, HAProxy with http-reuse never), resuming its backend sessions (appliance: per-core tickets; NGINX: proxy_ssl_session_reuse on; HAProxy: its default SSL session reuse); towards the backend every server offers $([ "$BACKEND_TLS" = 1.2 ] && echo "TLS 1.2 only" || echo "TLS 1.2 and 1.3"). Busy time: the appliance's loop-cycle accounting, NGINX's worker and HAProxy's process from /proc (their kernel softirq time is not in it: flattered)."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
