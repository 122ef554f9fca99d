#!/usr/bin/env bash
# The cluster session cache, measured (issue 23): three appliances on one box, each in a
# namespace with a DPDK data port on a client bridge and a kernel management port on a
# cluster bridge where Redis runs; NGINX (kernel stack, one worker, its own shared
# session cache) on the client bridge beside them; one Python ssl client.
#
#   bash tools/bench/cluster.sh [--sessions N] [--no-record]
#
# It measures, in one run:
#   1. resumption behind a round robin of the three nodes (each client makes a session
#      on one node and offers it once to each node): all three peers with Redis, then
#      the nodes on their own (no [cluster], no Redis);
#   2. TLS 1.2 session-ID resumptions by where the session comes from: made on the same
#      node (local), on another node (replicated by the peer tier), and fetched from Redis
#      by a node outside the peer group; busy µs per resumed handshake on the resuming
#      node (its loop-cycle accounting), and the client's p50/p99 handshake time; NGINX
#      resuming its own sessions beside them (its worker's CPU time from /proc);
#   3. the store's memory per session (RSS before and after N sessions) and the peers'
#      replication lag in messages after the burst.
# Every loop is bounded by N; the namespaces and processes go at the end (by PID).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=2000
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --sessions) N=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: cluster.sh [--sessions N] [--no-record]" >&2; exit 2 ;;
    esac
done
case "$N" in ''|*[!0-9]*|0) echo "--sessions: a whole number, at least 1" >&2; exit 2 ;; esac
CMD="bash tools/bench/cluster.sh --sessions $N"

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli
. tools/lib.sh
need_two_cpus

P=cb$$; P=${P:0:6}
WORK=$(mktemp -d /tmp/appliance-cluster.XXXXXX)
PIDS=()
NODE_PIDS=()
cleanup() {
    stop_pids "${NODE_PIDS[@]:-}" "${PIDS[@]:-}"
    for ns in "$P-n1" "$P-n2" "$P-n3" "$P-h" "$P-k" "$P-s"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
S=(ip netns exec "$P-s")
H=(ip netns exec "$P-h")
K=(ip netns exec "$P-k")

# cable NS IF BRIDGE [ADDR]: a veth from NS to BRIDGE in the switch, offloads off.
cable() {
    local ns=$1 ifn=$2 br=$3 addr=${4:-}
    ip link add "$ifn" type veth peer name "${ifn}s"
    ip link set "$ifn" netns "$ns"
    ip link set "${ifn}s" netns "$P-s"
    "${S[@]}" ip link set "${ifn}s" master "$br"
    "${S[@]}" ip link set "${ifn}s" up
    [ -n "$addr" ] && ip netns exec "$ns" ip addr add "$addr" dev "$ifn"
    ip netns exec "$ns" ip link set "$ifn" up
    ip netns exec "$ns" ethtool -K "$ifn" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    "${S[@]}" ethtool -K "${ifn}s" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
}
newns() {
    ip netns add "$1"
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$1" ip link set lo up
}

newns "$P-s"
for br in br-data br-mgmt; do "${S[@]}" ip link add "$br" type bridge; "${S[@]}" ip link set "$br" up; done
"${S[@]}" ip addr add 10.80.0.100/24 dev br-mgmt
newns "$P-h"
cable "$P-h" "$P-h0" br-data 10.77.0.2/24
newns "$P-k"
cable "$P-k" "$P-k0" br-data 10.77.0.5/24
for i in 1 2 3; do
    newns "$P-n$i"
    cable "$P-n$i" "$P-d$i" br-data
    cable "$P-n$i" "$P-m$i" br-mgmt "10.80.0.$i/24"
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 -subj /CN=appliance.test \
    -addext subjectAltName=DNS:appliance.test -keyout "$WORK/ec.key" -out "$WORK/ec.pem" 2>/dev/null
head -c 48 /dev/urandom > "$WORK/cluster.key"
chmod 600 "$WORK/cluster.key"
mkdir -p "$WORK/www"
echo "hello" > "$WORK/www/index.html"
"${H[@]}" python3 tools/www.py 10.77.0.2 8080 "$WORK/www" > "$WORK/www.log" 2>&1 &
PIDS+=($!)
"${S[@]}" redis-server --bind 10.80.0.100 --port 6379 --save '' --appendonly no --protected-mode no \
    > "$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "Ready to accept" "$WORK/redis.log" && break; sleep 0.1; done

# NGINX terminating TLS with its own shared session cache, no tickets, one worker on the
# last CPU (the appliances' CPU too: nothing else runs there while one is measured).
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    ssl_session_cache shared:SSL:20m;
    ssl_session_tickets off;
    ssl_protocols TLSv1.2;
    server {
        listen 10.77.0.5:443 ssl;
        ssl_certificate $WORK/ec.pem;
        ssl_certificate_key $WORK/ec.key;
        location / { proxy_pass http://10.77.0.2:8080; }
    }
}
CONF
"${K[@]}" taskset -c "$LAST" nginx -c "$WORK/nginx.conf" &
PIDS+=($!)

# node I PEERS REDIS: writes node I's config (peers "1 2 3" minus itself; REDIS 1 or 0;
# PEERS empty: no [cluster]) and starts it on the last CPU.
node() {
    local i=$1 peers=$2 redis=$3 list=""
    for p in $peers; do [ "$p" != "$i" ] && list="$list\"10.80.0.$p:7946\", "; done
    {
        cat <<TOML
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "-m", "256", "--vdev=net_af_packet0,iface=$P-d$i"]
cores = [$LAST]
pin = false
address = "10.77.0.1$i/24"
[control]
socket = "$WORK/ctl-$i.sock"
stats_interval = "0s"
TOML
        if [ -n "$peers" ] || [ "$redis" = 1 ]; then
            # No peers but Redis: [cluster] for the key only (no peer tier).
            echo "[cluster]"; echo "node = \"n$i\""; echo "listen = \"10.80.0.$i:7946\""
            [ -n "$peers" ] && echo "peers = [${list%, }]"
            echo "key_file = \"$WORK/cluster.key\""
        fi
        echo "[session_store]"
        [ "$redis" = 1 ] && echo 'redis = ["10.80.0.100:6379"]'
        cat <<TOML
entries = $((N * 4))
[[vserver]]
name = "secure"
listen = "10.77.0.1$i:443"
mode = "tls"
backends = ["10.77.0.2:8080"]
[vserver.tls]
certificates = [{ chain = "$WORK/ec.pem", key = "$WORK/ec.key" }]
TOML
    } > "$WORK/node-$i.toml"
    ip netns exec "$P-n$i" "$BIN/appliance" --config "$WORK/node-$i.toml" > "$WORK/node-$i.log" 2>&1 &
    NODE_PIDS[$i]=$!
    wait_control "$WORK/ctl-$i.sock" "$WORK/node-$i.log"
}
stop_nodes() { stop_pids "${NODE_PIDS[@]:-}"; NODE_PIDS=(); }
ctl() { local i=$1; shift; "$BIN/appliancectl" --socket "$WORK/ctl-$i.sock" --json "$@"; }
# busy I: node I's busy seconds so far.
busy() { ctl "$1" stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(c["loops"]["busy_cycles"] for c in s["cores"]) / s["cycles_per_second"])'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# store_cpu PID: CPU seconds of the session store's own threads (peer tier, Redis agents).
store_cpu() {
    local t sum=0
    for t in /proc/"$1"/task/*; do
        case "$(cat "$t/comm")" in
        cluster-peer|redis-agent*) sum=$(awk -v s="$sum" '{print s + ($14 + $15) / 100}' "$t/stat") ;;
        esac
    done
    echo "$sum"
}
client() { "${H[@]}" python3 tools/bench/cluster_client.py "$WORK/ec.pem" "$@"; }
nginx_cpu() { local w; w=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1); awk '{print ($14 + $15) / 100}' "/proc/$w/stat"; }
jget() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "== 1. round robin over three nodes, all three peers with Redis ($((N / 10)) clients)"
node 1 "1 2 3" 1; node 2 "1 2 3" 1; node 3 "1 2 3" 1
for _ in $(seq 150); do
    [ "$(ctl 1 show session-store | grep -o '"up":true' | wc -l)" -ge 2 ] && break
    sleep 0.1
done
RR_ON=$(client roundrobin $((N / 10)) 10.77.0.11 10.77.0.12 10.77.0.13)
echo "   $RR_ON"
stop_nodes
# For the tiers: nodes 1 and 2 peers with Redis; node 3 outside the peer group, Redis only.
node 1 "1 2" 1; node 2 "1 2" 1; node 3 "" 1
for _ in $(seq 150); do
    ctl 1 show session-store | grep -q '"up":true' && ctl 2 show session-store | grep -q '"up":true' && break
    sleep 0.1
done

echo "== 2. resumption by tier ($N sessions each)"
tier() { # tier LABEL MAKE RESUME NODE: sessions made on MAKE, resumed on RESUME (node NODE)
    local b0 b1 t0 t1 r
    b0=$(busy "$4"); t0=$(store_cpu "${NODE_PIDS[$4]}")
    r=$(client both "$2" "$3" "$N")
    b1=$(busy "$4"); t1=$(store_cpu "${NODE_PIDS[$4]}")
    python3 - "$1" "$r" "$b0" "$b1" "$t0" "$t1" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
b0, b1, t0, t1 = (float(x) for x in sys.argv[3:7])
print(json.dumps(dict(label=label, **r, busy_s=b1 - b0, store_s=t1 - t0)))
PY
}
# Full handshakes alone, for the local row's subtraction.
b0=$(busy 1); FULL=$(client full 10.77.0.11 "$N"); b1=$(busy 1)
FULL_BUSY=$(python3 -c "print(($b1 - $b0) / $N * 1e6)")
rss0=$(rss_kb "${NODE_PIDS[2]}")
LOCAL=$(tier local 10.77.0.11 10.77.0.11 1)
PEER=$(tier peer 10.77.0.11 10.77.0.12 2)
rss1=$(rss_kb "${NODE_PIDS[2]}")
REDIS=$(tier redis 10.77.0.11 10.77.0.13 3)
LAG=$(ctl 2 show session-store | python3 -c '
import json, sys
c = json.load(sys.stdin)["cluster"]
d = c.get("replication_delay_ms") or {}
print("%s messages; the delay of the last %s writes from node 1, write to applied on node 2: p50 %s ms, p99 %s ms"
      % (c["replication_lag"], d.get("samples", 0), d.get("p50", "-"), d.get("p99", "-")))')
n0=$(nginx_cpu); client full 10.77.0.5 "$N" > /dev/null; n1=$(nginx_cpu)
c0=$(nginx_cpu); NGINX=$(client both 10.77.0.5 10.77.0.5 "$N"); c1=$(nginx_cpu)
echo "   full: $FULL ($FULL_BUSY busy µs/hs)"
for r in "$LOCAL" "$PEER" "$REDIS"; do echo "   $r"; done
echo "   nginx: $NGINX (cpu $c0 -> $c1 s)"

echo "== 3. the nodes on their own: no [cluster], no Redis"
stop_nodes
node 1 "" 0; node 2 "" 0; node 3 "" 0
RR_OFF=$(client roundrobin $((N / 10)) 10.77.0.11 10.77.0.12 10.77.0.13)
echo "   $RR_OFF"

TABLE=$(python3 - "$N" "$RR_ON" "$RR_OFF" "$FULL" "$FULL_BUSY" "$LOCAL" "$PEER" "$REDIS" "$NGINX" "$c0" "$c1" "$rss0" "$rss1" "$LAG" "$n0" "$n1" <<'PY'
import json, sys
a = sys.argv[1:]
n = int(a[0])
rr_on, rr_off, full = json.loads(a[1]), json.loads(a[2]), json.loads(a[3])
full_busy = float(a[4])
local, peer, redis, nginx = (json.loads(x) for x in a[5:9])
c0, c1, rss0, rss1, lag = float(a[9]), float(a[10]), int(a[11]), int(a[12]), a[13]
nginx_full_us = (float(a[15]) - float(a[14])) / n * 1e6
def row(label, r, busy_us, store_us=None):
    per_core = 1e6 / busy_us if busy_us > 0 else 0
    st = "—" if store_us is None else f"{store_us:,.0f}"
    return (f"| {label} | {r['resumed']:,} of {r['n']:,} | {busy_us:,.0f} | {st} | {per_core:,.0f} | "
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} |")
# Local: the node made the sessions (a full handshake each) and resumed them.
local_us = local["busy_s"] / n * 1e6 - full_busy
out = [
    f"Round robin over three nodes, each client's session offered once to every node: "
    f"**{rr_on['share']:.1%} resumed with the cluster** ({rr_on['resumed']:,} of {rr_on['resumptions']:,}), "
    f"**{rr_off['share']:.1%} with the nodes on their own** ({rr_off['resumed']:,} of {rr_off['resumptions']:,}).",
    "",
    "| TLS 1.2 session-ID resumption, session from | resumed | poll-core busy µs per handshake | store threads' CPU µs per handshake | per busy core-second | client p50 / p99 ms |",
    "|---|---:|---:|---:|---:|---:|",
    row("this node (local table)", local, local_us, local["store_s"] / n * 1e6),
    row("another node (replicated by the peer tier)", peer, peer["busy_s"] / n * 1e6, peer["store_s"] / n * 1e6),
    row("Redis (node outside the peer group)", redis, redis["busy_s"] / n * 1e6, redis["store_s"] / n * 1e6),
    row("NGINX, its own shared cache (worker CPU)", nginx, (c1 - c0) / n * 1e6 - nginx_full_us),
    "",
    f"Full TLS 1.2 handshakes on the same node: {full_busy:,.0f} busy µs each, client p50 / p99 "
    f"{full['p50_ms']:.2f} / {full['p99_ms']:.2f} ms (NGINX: {nginx_full_us:,.0f} µs of worker CPU). Memory per session on a node that "
    f"received {2 * n:,} replicated sessions: {(rss1 - rss0) * 1024 / (2 * n):,.0f} bytes of RSS. "
    f"Replication lag after the bursts: {lag}.",
]
print("\n".join(out))
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## Cluster session cache: resumption across nodes, $(date -u +%Y-%m-%d)"
        echo
        echo "Command: \`$CMD\`. Three appliances (one poll-mode core each, \`pin = false\`, all on CPU $LAST), nodes 1 and 2 peers with Redis, node 3 Redis only; NGINX 1.22 with \`ssl_session_cache shared\` on CPU $LAST; one Python ssl client on CPU 0, so rates are client-bound and busy time per handshake is the figure. The store threads' column is the CPU of the resuming node's peer-tier and Redis-agent threads over the same run (for the replicated row it includes receiving the ADDs). As for the appliance's local row, NGINX's row is the CPU of a run that makes the sessions and resumes them, less that of a run of full handshakes alone. Nodes 1–3 are all peers (with Redis) for the round robin; for the tiers node 3 leaves the peer group and shares through Redis only."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "recorded in BENCHMARKS.md"
fi
