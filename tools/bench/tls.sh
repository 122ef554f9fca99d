#!/usr/bin/env bash
# The TLS benchmark suite: the appliance beside NGINX and HAProxy (Debian's, kernel
# stack) on the same box, in one run, same backend, same load generator (loadgen).
#
#   bash tools/bench/tls.sh [--seconds N] [--no-record] [--only TEST[,TEST...]] [--json FILE]
#                           [--mtu N] [--primitives openssl|aws-lc] [--phases]
#   bash tools/bench/tls.sh --smoke      # 1 s per cell, debug build, not recorded (CI)
#
# TESTs: full13 full12 resume13 resume12 bulk open50 full13own open50own full13pq full13dpdk
# open50dpdk bulkeq (--only runs those for every server; open50 needs full13's rate and
# runs it too, open50own full13own's and open50dpdk full13dpdk's: the open loop with
# loadgen's own engine, a client about five times cheaper per handshake than libssl, so
# less of the tail is the client's queue, on the kernel's TCP and on loadgen's DPDK stack;
# bulkeq: the 1 MiB GETs again once the kernel peers' veth has no segmentation or
# checksum offloads, so every server moves frames of the MTU as the appliance's port
# does). --mtu N: every veth (the appliance's port too) at MTU N, e.g. 9000 for jumbo
# frames. --primitives aws-lc: the appliance runs with `[crypto] primitives = "aws-lc"`
# (its X25519, signatures and AEADs on AWS-LC; default openssl; NGINX and HAProxy are OpenSSL
# either way, and so is the limit). --phases: the appliance counts its busy loop
# iterations' cycles by step of the loop (`[dataplane] loop_phases`, eleven cycle-counter
# reads per iteration, so not for recorded rates) and each appliance handshake cell
# prints them in µs per handshake. Every run writes its cells, ratios included, as JSON
# (default target/bench/tls-TIME.json).
# PERF=FILE: `perf record -g` of the appliance during its PERF_CELL cell (default bulk);
# then `perf report -i FILE`. PERF_CALL_GRAPH replaces `-g` (e.g. "--call-graph dwarf",
# for callers inside libraries built without frame pointers). For experiments: APPLIANCE_TOML_EXTRA is appended to the
# appliance's configuration (e.g. a [tcp] table), VDEV_EXTRA to its af_packet vdev.
#
# Topology (namespaces made here, deleted at the end):
#   NAME-a  appliance on veth NAME-a0 (DPDK), 10.77.0.1:443 (ECDSA) and :4443 (RSA)
#   NAME-k  nginx 10.77.1.1:443/:4443 and HAProxy 10.77.1.1:8443/:9443 (kernel stack)
#   NAME-h  the backend (nginx, one worker) and loadgen
# Every server terminates TLS and proxies HTTP to the backend. Servers are pinned to the
# last CPU, backend and loadgen to CPU 0. For each server it measures: TLS 1.3 ECDSA P-256
# X25519 full handshakes; TLS 1.2 ECDHE-RSA-2048 AES-128-GCM full; TLS 1.3 PSK and TLS 1.2
# ticket resumption; 1 MiB GETs on keep-alive connections; and full TLS 1.3 handshakes in
# an open loop at half of that server's own closed-loop rate (latency percentiles); and,
# for the appliance alone, full TLS 1.3 handshakes over the post-quantum hybrid
# X25519MLKEM768 with loadgen's own engine (beside the same with X25519).
#
# One libssl client core is the limit of every closed-loop rate on two CPUs (about 2,000
# full handshakes/s). A second table runs the TLS 1.3 full handshakes again with
# loadgen's own engine (--engine own --reuse-key-share --no-verify), on the kernel's TCP
# and on loadgen's own DPDK stack (--dpdk on the hosts' veth ends, addresses 10.77.0.50
# and 10.77.1.50), and gives each client's CPU per handshake beside the server's busy
# time per handshake. Beside the rate the main table gives each server's busy core time:
# the appliance's from its loop-cycle accounting, NGINX's worker and HAProxy's process
# from /proc/PID/stat, and the capacity that follows (operations per busy core-second).
# The kernel's softirq work for NGINX and HAProxy runs partly on CPU 0 and is not in their
# process time: their figures are flattered. The physical limit per core comes from
# `openssl speed` in the same run.
set -euo pipefail
CALLER_PWD=$PWD
cd "$(dirname "$0")/../.."
SECS=5
RECORD=1
SMOKE=0
ONLY=""
JSON=""
ALL_TESTS="full13 full12 resume13 resume12 bulk open50 full13own open50own full13pq full13dpdk open50dpdk bulkeq"
USAGE="usage: tls.sh [--seconds N] [--no-record] [--only TEST[,TEST...]] [--json FILE] [--mtu N] [--primitives openssl|aws-lc] [--phases] | --smoke"
PRIMITIVES=openssl
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECS=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --no-record) RECORD=0; shift ;;
    --smoke) SMOKE=1; SECS=1; RECORD=0; shift ;;
    --only) ONLY=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --json) JSON=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --mtu) export NETNS_MTU=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --primitives) PRIMITIVES=${2:-}; shift 2 || { echo "$USAGE" >&2; exit 2; } ;;
    --phases) export LOOP_PHASES=1; RECORD=0; shift ;;
    *) echo "$USAGE" >&2; exit 2 ;;
    esac
done
case "$SECS" in ''|*[!0-9]*|0) echo "--seconds: a whole number of seconds, at least 1" >&2; exit 2 ;; esac
case "${NETNS_MTU:-1500}" in ''|*[!0-9]*) echo "--mtu: a number of bytes, 576..9216" >&2; exit 2 ;; esac
if [ "${NETNS_MTU:-1500}" -lt 576 ] || [ "${NETNS_MTU:-1500}" -gt 9216 ]; then echo "--mtu: a number of bytes, 576..9216" >&2; exit 2; fi
MTU=${NETNS_MTU:-1500}
case "$PRIMITIVES" in
openssl) PRIMITIVES_TOML="" ;;
aws-lc) PRIMITIVES_TOML=$'[crypto]\nprimitives = "aws-lc"' ;;
*) echo "--primitives: openssl or aws-lc, not \"$PRIMITIVES\"" >&2; exit 2 ;;
esac
if [ -n "$ONLY" ]; then
    for t in ${ONLY//,/ }; do
        case " $ALL_TESTS " in *" $t "*) ;; *) echo "--only: no test named '$t' (tests: $ALL_TESTS)" >&2; exit 2 ;; esac
    done
    # open50's rate is half of full13's.
    case ",$ONLY," in *,open50,*) case ",$ONLY," in *,full13,*) ;; *) ONLY="full13,$ONLY" ;; esac ;; esac
    case ",$ONLY," in *,open50own,*) case ",$ONLY," in *,full13own,*) ;; *) ONLY="full13own,$ONLY" ;; esac ;; esac
    case ",$ONLY," in *,open50dpdk,*) case ",$ONLY," in *,full13dpdk,*) ;; *) ONLY="full13dpdk,$ONLY" ;; esac ;; esac
    [ "$SMOKE" = 1 ] && { echo "--smoke runs every test; --only does not apply" >&2; exit 2; }
fi
# want TEST: whether this run includes TEST.
want() { [ -z "$ONLY" ] || case ",$ONLY," in *",$1,"*) true ;; *) false ;; esac; }
CMD="bash tools/bench/tls.sh --seconds $SECS${ONLY:+ --only $ONLY}${NETNS_MTU:+ --mtu $NETNS_MTU}"
[ "$PRIMITIVES" = aws-lc ] && CMD="$CMD --primitives aws-lc"
case "$JSON" in "") ;; /*) ;; *) JSON="$CALLER_PWD/$JSON" ;; esac
[ -n "$JSON" ] || JSON="target/bench/tls-$(date -u +%Y%m%dT%H%M%SZ).json"
mkdir -p "$(dirname "$JSON")"

tools/setup.sh --bench
if [ "$SMOKE" = 1 ]; then
    export BIN=target/debug
    cargo build -q -p appliance -p cli -p tools
else
    cargo build --release -q -p appliance -p cli -p tools
fi

. tools/lib.sh
need_two_cpus
test_net bt 'ip netns del "$NAME-k" 2>/dev/null'
[ -n "${BENCH_DEBUG:-}" ] && trap 'cat "$WORK"/*.log "$WORK"/*.err 2>/dev/null; test_net_cleanup' EXIT
kernel_peer_net
K=(ip netns exec "$NAME-k")

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www"   # nginx workers run as www-data
echo "ok" > "$WORK/www/index.html"
head -c $((1 << 20)) /dev/urandom > "$WORK/www/1m.bin"
for k in "ec -pkeyopt ec_paramgen_curve:P-256" "rsa:2048"; do
    n=${k%%[ :]*}
    openssl req -x509 -newkey $k -nodes -days 2 -subj /CN=bench.test \
        -addext "subjectAltName=DNS:bench.test" -keyout "$WORK/$n.key" -out "$WORK/$n.pem" 2>/dev/null
    cat "$WORK/$n.pem" "$WORK/$n.key" > "$WORK/$n.both"   # HAProxy wants both in one file
done
chmod 644 "$WORK"/*.key "$WORK"/*.both

# The backend: one nginx worker on CPU 0 serving both networks.
backend_nginx backend

# NGINX terminating TLS, one worker on the servers' CPU.
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
    ssl_session_tickets on;
    upstream be { server 10.77.1.2:8080; keepalive 64; }
    server {
        listen 10.77.1.1:443 ssl backlog=4096;
        ssl_certificate $WORK/ec.pem;
        ssl_certificate_key $WORK/ec.key;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server {
        listen 10.77.1.1:4443 ssl backlog=4096;
        ssl_certificate $WORK/rsa.pem;
        ssl_certificate_key $WORK/rsa.key;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
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
frontend rsa
    bind 10.77.1.1:9443 ssl crt $WORK/rsa.both
    default_backend be
backend be
    http-reuse always
    server b1 10.77.1.2:8080
CONF
"${K[@]}" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!
pinned haproxy "$HAPROXY_PID" "$LAST"

cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
$(bench_tls_vserver ec 10.77.0.1:443 ec)
$(bench_tls_vserver rsa 10.77.0.1:4443 rsa)
$PRIMITIVES_TOML
${APPLIANCE_TOML_EXTRA:-}
TOML
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
APPLIANCE_PID=$!
CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
wait_control "$WORK/control.sock" "$WORK/appliance.log"
for _ in $(seq 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
pinned "nginx worker" "$NGINX_WORKER" "$LAST"

# The physical limit of one core, from openssl speed (1 s per primitive).
speed() { openssl speed -seconds 1 "$@" 2>/dev/null; }
EC_SIGN=$(speed ecdsap256 | awk '/256 bits ecdsa \(nistp256\)/ {print $(NF-1); exit}')
RSA_SIGN=$(speed rsa2048 | awk '/^rsa 2048 bits/ {print $(NF-1); exit}')
DERIVE=$(speed ecdhx25519 | awk '/253 bits ecdh \(X25519\)/ {print $NF; exit}')
GCM=$(speed -evp aes-128-gcm -bytes 16384 | awk '/^AES-128-GCM/ {sub("k", "", $NF); print $NF * 1000; exit}')
echo "== limits per core (openssl speed): P-256 sign $EC_SIGN/s, RSA-2048 sign $RSA_SIGN/s, X25519 derive $DERIVE/s, AES-128-GCM $GCM B/s"

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# busy_s SERVER: CPU seconds the server has used so far.
busy_s() {
    case "$1" in
    appliance) appliance_busy_s ;;
    nginx) python3 -c "print($(ticks "$NGINX_WORKER") / $HZ)" ;;
    haproxy) python3 -c "print($(ticks "$HAPROXY_PID") / $HZ)" ;;
    esac
}
target() {   # target SERVER ec|rsa
    case "$1-$2" in
    appliance-ec) echo 10.77.0.1:443 ;; appliance-rsa) echo 10.77.0.1:4443 ;;
    nginx-ec) echo 10.77.1.1:443 ;; nginx-rsa) echo 10.77.1.1:4443 ;;
    haproxy-ec) echo 10.77.1.1:8443 ;; haproxy-rsa) echo 10.77.1.1:9443 ;;
    esac
}
# cpu_stat: what a kernel peer's process time leaves out of the work done on the
# servers' CPU ($LAST), in ticks: its irq and softirq time (/proc/stat), the time of its
# ksoftirqd thread (where softirqs go under load), and all of the CPU's time. (The CPU's
# whole busy share cannot serve: the appliance busy-polls it throughout.) The appliance's
# own loop accounting already holds the softirqs its syscalls run.
KSOFTIRQD=$(pgrep -x "ksoftirqd/$LAST" | head -1 || true)
cpu_stat() {
    local k=0
    [ -n "$KSOFTIRQD" ] && k=$(ticks "$KSOFTIRQD")
    awk -v c="cpu$LAST" -v k="$k" '$1 == c {print $7+$8+k, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
}
# appl_snap: one read of the appliance's stats, as JSON: "frames" (its port's frames
# received and sent, its first core's busy and idle iterations and their cycles, its TX
# bursts, i.e. kicks), "answer" (the first-answer histogram tls_first_answer_us, every
# core summed: bucket bound in µs → count) and "phases" (the first core's busy cycles by
# step of its loop with the cycle counter's rate; {} unless --phases).
NO_SNAP='{"frames": [0, 0, 0, 0, 0, 0, 0], "answer": {}, "phases": {}}'
appl_snap() { "${CTL[@]}" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
c = s["cores"][0]
q, l = c["queue"], c["loops"]
frames = [q["rx_frames"], q["tx_frames"], l["busy_loops"], l["idle_loops"], l["busy_cycles"], l["idle_cycles"], q["tx_bursts"]]
answer = {}
for core in s["cores"]:
    for k, n in core["proxy"]["tls_first_answer_us"].items():
        if k != "sum_us":
            answer[k] = answer.get(k, 0) + n
phases = dict(c.get("loop_phases", {}))
if phases:
    phases["hz"] = s["cycles_per_second"]
print(json.dumps({"frames": frames, "answer": answer, "phases": phases}))'; }
# measure SERVER TEST CERT LOADGEN-ARGS...: one cell (if this run wants TEST); appends its
# JSON line to $WORK/cells.
measure() {
    local server=$1 test=$2 cert=$3; shift 3
    local b0 b1 t0 t1 out perf="" c0 c1 s0=$NO_SNAP s1=$NO_SNAP
    want "$test" || return 0
    if [ -n "${PERF:-}" ] && [ "$server-$test" = "appliance-${PERF_CELL:-bulk}" ]; then
        # shellcheck disable=SC2086  # PERF_CALL_GRAPH is a word list on purpose
        perf record ${PERF_CALL_GRAPH:--g} -o "$PERF" -p "$APPLIANCE_PID" -- sleep "$SECS" >/dev/null 2>&1 &
        perf=$!
    fi
    [ "$server" = appliance ] && s0=$(appl_snap)
    c0=$(cpu_stat); b0=$(busy_s "$server"); t0=$(date +%s.%N)
    out=$("${H[@]}" taskset -c 0 "$BIN/loadgen" --target "$(target "$server" "$cert")" --sni bench.test \
        --no-verify --duration "${SECS}s" --json --quiet "$@" || true)
    b1=$(busy_s "$server"); t1=$(date +%s.%N); c1=$(cpu_stat)
    [ "$server" = appliance ] && s1=$(appl_snap)
    [ -n "$perf" ] && wait "$perf"
    python3 - "$server" "$test" "$b0" "$b1" "$t0" "$t1" "$out" "$c0" "$c1" "$s0" "$s1" >> "$WORK/cells" <<'PY'
import json, sys
server, test, b0, b1, t0, t1, out = sys.argv[1:8]
c0, c1 = ([float(x) for x in a.split()] for a in sys.argv[8:10])
s0, s1 = json.loads(sys.argv[10]), json.loads(sys.argv[11])
f0, f1 = s0["frames"], s1["frames"]
a0, a1 = s0["answer"], s1["answer"]
p0, p1 = s0["phases"], s1["phases"]
phases = {k: p1[k] - p0.get(k, 0) for k in p1 if k != "hz"}
if phases:
    phases["hz"] = p1["hz"]
# The appliance's own first answers in this cell: percentiles from the bucket counts,
# linear inside a bucket (its lower bound is the bound before it).
def own(q):
    hist = sorted(((float(k), a1[k] - a0.get(k, 0)) for k in a1), key=lambda x: x[0])
    total = sum(n for _, n in hist)
    if total == 0:
        return None
    want, seen, lo = q * total, 0, 0.0
    for hi, n in hist:
        if n and seen + n >= want:
            if hi == float("inf"):
                return lo
            return lo + (hi - lo) * (want - seen) / n
        seen += n
        lo = hi
    return lo
r = json.loads(out)
lat = r["latency_us"]
busy = (float(b1) - float(b0)) / (float(t1) - float(t0))
# A kernel peer's process time plus the softirq work on its CPU (see cpu_stat); the
# appliance's own loop accounting.
total = c1[1] - c0[1]
cpu = busy if server == "appliance" or total <= 0 else busy + (c1[0] - c0[0]) / total
print(json.dumps({"server": server, "test": test, "ops": r["ops_per_sec"], "hs": r["handshakes_per_sec"],
    "bytes": r["bytes_in_per_sec"], "bytes_total": r.get("bytes_in", 0), "resumed": r["resumed"],
    "handshakes": r["handshakes"], "errors": r["error_count"], "busy": busy, "cpu_busy": cpu,
    "frames_in": f1[0] - f0[0], "frames_out": f1[1] - f0[1],
    "busy_loops": f1[2] - f0[2], "idle_loops": f1[3] - f0[3], "busy_cycles": f1[4] - f0[4], "idle_cycles": f1[5] - f0[5], "tx_bursts": f1[6] - f0[6],
    "p50": lat["p50"], "p99": lat["p99"], "latency_us": lat, "cpu_us": r["client_cpu_us_per_op"],
    "own_p50": own(0.5), "own_p99": own(0.99), "phases": phases}))
PY
    tail -1 "$WORK/cells" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("   %-9s %-9s %9.1f/s  busy %5.1f%%  errors %d  p50 %d µs  p99 %d µs"
      % (c["server"], c["test"], c["ops"], 100 * c["busy"], c["errors"], c["p50"], c["p99"]))
p, n = c.get("phases"), c["handshakes"]
if p and n and not c["test"].startswith("bulk"):
    # µs of busy loop per handshake, by step; "outside" is the loop between iterations
    # (its clock read and accounting) and anything the steps did not cover.
    us = lambda cyc: 1e6 * cyc / p["hz"] / n
    steps = {k: v for k, v in p.items() if k not in ("hz", "iterations")}
    parts = ["%s %.2f" % (k, us(v)) for k, v in steps.items()]
    parts.append("outside %.2f" % us(c["busy_cycles"] - sum(steps.values())))
    print("      busy µs per handshake: " + ", ".join(parts) + "; %.2f busy iterations each" % (p["iterations"] / n))'
}

: > "$WORK/cells"
# half_peak SERVER TEST: half of the handshake rate SERVER reached in its TEST cell.
half_peak() {
    python3 -c "import json, sys; c = [json.loads(l) for l in open(sys.argv[1])]; print(max(1, round([x for x in c if x['server'] == sys.argv[2] and x['test'] == sys.argv[3]][0]['hs'] / 2)))" "$WORK/cells" "$1" "$2"
}
FULL13=(--mode full --tls 1.3 --groups X25519 --ciphersuites TLS_AES_128_GCM_SHA256 --concurrency 32)
for server in appliance nginx haproxy; do
    echo "== $server (${SECS} s per test)"
    measure "$server" full13 ec "${FULL13[@]}"
    measure "$server" full12 rsa --mode full --tls 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256 --groups X25519 --concurrency 32
    measure "$server" resume13 ec --mode resume --tls 1.3 --groups X25519 --concurrency 32
    measure "$server" resume12 ec --mode resume --tls 1.2 --resume ticket --concurrency 32
    measure "$server" bulk ec --mode bulk --tls 1.3 --path /1m.bin --concurrency 4
    if want open50; then
        measure "$server" open50 ec "${FULL13[@]}" --concurrency 256 --rate "$(half_peak "$server" full13)"
    fi
    measure "$server" full13own ec "${FULL13[@]}" --engine own --reuse-key-share
    if want open50own; then
        measure "$server" open50own ec "${FULL13[@]}" --engine own --reuse-key-share --concurrency 256 \
            --rate "$(half_peak "$server" full13own)"
    fi
done
# The post-quantum hybrid, the appliance only (OpenSSL 3.0 under NGINX and HAProxy has no
# ML-KEM): the same handshakes as full13own with X25519MLKEM768 in place of X25519.
PQ13=(--mode full --tls 1.3 --groups X25519MLKEM768 --ciphersuites TLS_AES_128_GCM_SHA256 --concurrency 32)
want full13pq && echo "== appliance, X25519MLKEM768 (${SECS} s)"
measure appliance full13pq ec "${PQ13[@]}" --engine own --reuse-key-share
# The own engine once more on loadgen's own stack over DPDK (--dpdk): no client kernel
# TCP, on the client core or (its receive path, run in the sender's softirq) on the
# server's. af_packet needs finished checksums, so the kernel peers' veth loses its
# offloads here, after every other cell.
if want full13dpdk || want open50dpdk || want bulkeq; then
    "${K[@]}" ethtool -K "$NAME-k0" tx off rx off tso off gso off gro off >/dev/null 2>&1
    "${H[@]}" ethtool -K "$NAME-h1" tx off rx off tso off gso off gro off >/dev/null 2>&1
fi
want full13dpdk && echo "== own engine on loadgen's DPDK stack (${SECS} s per server)"
for server in appliance nginx haproxy; do
    case $server in
    appliance) dpdk=(--dpdk "$NAME-h0" --dpdk-addr 10.77.0.50/24) ;;
    *) dpdk=(--dpdk "$NAME-h1" --dpdk-addr 10.77.1.50/24) ;;
    esac
    measure "$server" full13dpdk ec "${FULL13[@]}" --engine own --reuse-key-share "${dpdk[@]}"
    if want open50dpdk; then
        measure "$server" open50dpdk ec "${FULL13[@]}" --engine own --reuse-key-share "${dpdk[@]}" \
            --concurrency 256 --rate "$(half_peak "$server" full13dpdk)"
    fi
done
want bulkeq && echo "== 1 MiB GETs, every server on MTU $MTU frames without offloads (${SECS} s per server)"
for server in appliance nginx haproxy; do
    measure "$server" bulkeq ec --mode bulk --tls 1.3 --path /1m.bin --concurrency 4
done

TABLE=$(python3 - "$WORK/cells" "$EC_SIGN" "$RSA_SIGN" "$DERIVE" "$GCM" "$JSON" "$CMD" "$MTU" <<'PY'
import json, sys, time
cells = [json.loads(l) for l in open(sys.argv[1])]
ec_sign, rsa_sign, derive, gcm = map(float, sys.argv[2:6])
json_path, command, mtu = sys.argv[6:9]
get = {(c["server"], c["test"]): c for c in cells}
# A full handshake's server must sign once and run two X25519 operations: make its key
# share (OpenSSL's key generation is the same ladder as a derive) and agree.
limit = {"full13": 1 / (1 / ec_sign + 2 / derive), "full12": 1 / (1 / rsa_sign + 2 / derive), "bulk": gcm / 1e6, "bulkeq": gcm / 1e6}
names = {"bulkeq": f"1 MiB GETs, every server on MTU {mtu} frames, no offloads (MB/s)", "full13": "TLS 1.3 ECDSA P-256 X25519, full (hs/s)", "full12": "TLS 1.2 ECDHE-RSA-2048 AES-128-GCM, full (hs/s)",
         "resume13": "TLS 1.3 PSK resumed (hs/s)", "resume12": "TLS 1.2 ticket resumed (hs/s)", "bulk": "1 MiB GETs, keep-alive (MB/s)"}
servers = ["appliance", "nginx", "haproxy"]
def rate(c, t):
    return c["bytes"] / 1e6 if t in ("bulk", "bulkeq") else c["hs"]
def cap(c, t):
    return rate(c, t) / c["busy"] if c["busy"] > 0.001 else float("nan")
out = ["| test | appliance | NGINX | HAProxy | appliance per busy core-s | NGINX per busy core-s | HAProxy per busy core-s | appliance ÷ NGINX | appliance ÷ HAProxy | limit per core | appliance ÷ limit |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
ratios = {}
def div(a, b):
    return a / b if b and b == b and a == a else float("nan")
for c in cells:
    t = c["test"]
    c["rate"] = rate(c, t)
    c["unit"] = "MB/s" if t in ("bulk", "bulkeq") else "handshakes/s"
    c["per_busy_core_s"] = cap(c, t)
for t in ["full13", "full12", "resume13", "resume12", "bulk", "bulkeq"]:
    if not all((s, t) in get for s in servers):
        continue
    cs = [get[(s, t)] for s in servers]
    caps = [cap(c, t) for c in cs]
    lim = limit.get(t)
    ratios[t] = {"appliance_vs_nginx": div(caps[0], caps[1]), "appliance_vs_haproxy": div(caps[0], caps[2]),
                 "limit_per_core": lim, "appliance_vs_limit": div(caps[0], lim) if lim else None}
    row = [names[t]] + [f"{rate(c, t):,.0f} ({100 * c['busy']:.0f}% busy)" for c in cs] + [f"{x:,.0f}" for x in caps]
    row += [f"{caps[0] / caps[1]:.2f}", f"{caps[0] / caps[2]:.2f}"]
    row += [f"{lim:,.0f}" if lim else "—", f"{caps[0] / lim:.2f}" if lim else "—"]
    out.append("| " + " | ".join(row) + " |")
out_frames = ""
# The same per busy server CPU with the softirq and ksoftirqd work on that CPU counted
# for every server: a kernel peer's sends run the client kernel's TCP receive there, as
# the appliance's af_packet kicks do inside its loop (its loop cycles already hold them).
for t, label in (("full13", "TLS 1.3 ECDSA P-256 X25519, full"), ("resume13", "TLS 1.3 PSK resumed"),
                 ("resume12", "TLS 1.2 ticket resumed"), ("bulk", "1 MiB GETs"),
                 ("bulkeq", f"1 MiB GETs on MTU {mtu} frames, no offloads")):
    if not all((s, t) in get for s in servers):
        continue
    cs = [get[(s, t)] for s in servers]
    caps = [rate(c, t) / c["cpu_busy"] if c["cpu_busy"] > 0.001 else float("nan") for c in cs]
    ratios[t + "_cpu"] = {"appliance_vs_nginx": div(caps[0], caps[1]), "appliance_vs_haproxy": div(caps[0], caps[2])}
    unit = "MB/s" if t in ("bulk", "bulkeq") else "hs/s"
    row = [f"{label}, per busy server CPU incl. softirq and ksoftirqd ({unit})"] + [f"{rate(c, t):,.0f} ({100 * c['cpu_busy']:.0f}% CPU)" for c in cs]
    row += [f"{x:,.0f}" for x in caps] + [f"{div(caps[0], caps[1]):.2f}", f"{div(caps[0], caps[2]):.2f}", "", ""]
    out.append("| " + " | ".join(row) + " |")
if all((s, "bulk") in get for s in servers):
    a = get[("appliance", "bulk")]
    if a.get("bytes_total"):
        per = 2**20 / a["bytes_total"]
        out_frames = f"appliance port frames per MiB delivered: {a['frames_in'] * per:,.0f} received, {a['frames_out'] * per:,.0f} sent"
for t, label in (("open50", "open loop at ½ own peak, TLS 1.3 full"), ("open50own", "open loop at ½ own peak, TLS 1.3 full, loadgen's own engine"),
                 ("open50dpdk", "open loop at ½ own peak, TLS 1.3 full, loadgen's own engine on its DPDK stack")):
    if not all((s, t) in get for s in servers):
        continue
    cs = [get[(s, t)] for s in servers]
    ratios[t] = {s + "_p99_over_p50": div(c["p99"], c["p50"]) for s, c in zip(servers, cs)}
    out.append(f"| {label}: p50 / p99 latency (µs) | " + " | ".join(f"{c['p50']:,} / {c['p99']:,} at {c['ops']:,.0f}/s" for c in cs) + " | | | | | | | |")
    a = cs[0]
    if a.get("own_p50") is not None:
        out.append(f"| the same, the appliance's own share: ClientHello in to its first answer out (`tls_first_answer_us`), p50 / p99 (µs) | {a['own_p50']:,.0f} / {a['own_p99']:,.0f} | | | | | | | | | |")
errs = {s: sum(c["errors"] for c in cells if c["server"] == s) for s in servers}
out.append("| errors over all tests | " + " | ".join(str(errs[s]) for s in servers) + " | | | | | | | |")
out.append("")
if out_frames:
    out.append(out_frames + " (both legs: backend and client).")
    out.append("")
def finite(v):   # JSON has no NaN: a ratio that cannot be computed is null
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [finite(x) for x in v]
    return v
with open(json_path, "w") as f:
    json.dump(finite({"command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mtu": int(mtu),
               "limits": {"p256_sign_per_s": ec_sign, "rsa2048_sign_per_s": rsa_sign,
                          "x25519_derive_per_s": derive, "aes128gcm_bytes_per_s": gcm},
               "cells": cells, "ratios": ratios}), f, indent=1)
client_rows = [(s, t) for s in servers for t in ("full13", "full13own", "full13dpdk") if (s, t) in get]
if client_rows:
  out.append("Client cost, TLS 1.3 ECDSA P-256 X25519 full handshakes: loadgen's CPU per handshake beside the server's busy time per handshake; their ratio is how many server cores one loadgen core can keep busy. On the kernel's TCP the client's CPU is its getrusage, and its TCP receive work runs in the softirq of whoever sent the segment (the server's core, flattering the client and burdening the server); with --dpdk it is the polling thread's busy time and the client does all its own TCP work.")
  out.append("")
  out.append("| server | client | handshakes/s | client CPU µs/hs | server busy µs/hs | server cores per client core |")
  out.append("|---|---|---:|---:|---:|---:|")
clients = {"full13": "libssl (no verify)", "full13own": "own (no verify, reused key share)",
           "full13dpdk": "own on DPDK (--dpdk, no verify, reused key share)"}
for s in servers:
    for t, label in clients.items():
        if (s, t) not in get:
            continue
        c = get[(s, t)]
        server_us = 1e6 * c["busy"] / c["hs"] if c["hs"] else float("nan")
        cpu = c["cpu_us"] or float("nan")
        out.append(f"| {s} | {label} | {c['hs']:,.0f} | {cpu:,.0f} | {server_us:,.0f} | {server_us / cpu:.2f} |")
# The ceiling of that ratio: a client with a reused key share and no certificate check
# must still agree once with the server's fresh share (one X25519 derive), while a server
# at its own limit signs and runs two X25519 operations. No overhead on either side.
client_floor = 1e6 / derive
server_floor = 1e6 / limit["full13"]
if ("appliance", "full13dpdk") in get:
  out.append("")
  out.append(f"Ceiling from `openssl speed` in this run: the cheapest possible client (one X25519 derive, {client_floor:.1f} µs) against a server at its limit (one P-256 signature and two X25519 operations, {server_floor:.1f} µs) is {server_floor / client_floor:.2f} server cores per client core; against the appliance's DPDK-client busy time above it is {1e6 * get[('appliance', 'full13dpdk')]['busy'] / max(get[('appliance', 'full13dpdk')]['hs'], 1e-9) / client_floor:.2f}.")
busy_us = lambda c: 1e6 * c["busy"] / c["hs"] if c["hs"] else float("nan")
if ("appliance", "full13own") in get and ("appliance", "full13pq") in get:
  own, pq = get[("appliance", "full13own")], get[("appliance", "full13pq")]
  out.append("")
  out.append(f"Post-quantum hybrid X25519MLKEM768 (appliance only; own engine, reused key share): {pq['hs']:,.0f} full handshakes/s, server busy {busy_us(pq):,.0f} µs per handshake against {busy_us(own):,.0f} µs with X25519 in the same run ({busy_us(pq) / busy_us(own):.2f}×); client CPU {pq['cpu_us'] or float('nan'):,.0f} µs per handshake; errors {pq['errors']}.")
res = [get[(s, t)] for s in servers for t in ("resume13", "resume12") if (s, t) in get]
bad = [f"{c['server']} {c['test']}" for c in res if c["handshakes"] and c["resumed"] < 0.9 * c["handshakes"]]
print("\n".join(out))
if bad:
    print(f"\nResumption below 90% of handshakes in: {', '.join(bad)} (the resumed rows then mix in full handshakes).")
PY
)
echo
echo "$TABLE"
echo "(cells and ratios as JSON: $JSON)"
if [ "$SMOKE" = 1 ]; then
    # The smoke run checks that every cell ran and the table came out; its numbers mean nothing.
    # Per server: full13 full12 resume13 resume12 bulk open50 full13own open50own,
    # full13dpdk open50dpdk bulkeq (11 x 3), and full13pq for the appliance.
    expected=34
    cells=$(wc -l < "$WORK/cells")
    if [ "$cells" -ne "$expected" ]; then echo "smoke: $cells of $expected cells ran" >&2; exit 1; fi
    python3 -c "
import json, sys
bad = [c for c in map(json.loads, open('$WORK/cells')) if c['ops'] <= 0]
if bad: sys.exit(f'smoke: cells with no successful operation: {bad}')
"
    echo "smoke: all $expected cells ran"
fi
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## TLS suite: appliance vs NGINX vs HAProxy, $(date -u +%Y-%m-%d)"
        echo
        echo "Command: \`$CMD\`. Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), DPDK $(pkg-config --modversion libdpdk), $(openssl version | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3), $(haproxy -v | head -1 | cut -d' ' -f1-3)."
        echo "Servers pinned to CPU $LAST (appliance: one busy-polling core, $([ "$PRIMITIVES" = aws-lc ] && echo "AWS-LC primitives" || echo "OpenSSL primitives")); backend nginx and loadgen (libssl, one thread, no certificate check) on CPU 0; MTU $MTU on every veth; ${SECS} s per cell; 32 connections in flight (bulk: 4)."
        echo "Rates are client-bound; the capacity columns divide each rate by the server's busy core fraction over the same seconds. Limits per core from \`openssl speed\`: P-256 sign $EC_SIGN/s, RSA-2048 sign $RSA_SIGN/s, X25519 derive $DERIVE/s (one sign and two X25519 operations, key share and agreement, per full handshake), AES-128-GCM $GCM B/s at 16 KiB."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
