#!/usr/bin/env bash
# L4 proxy benchmark: the appliance (DPDK net_af_packet, smoltcp) beside HAProxy in TCP
# mode (Debian's, kernel stack) on the same box, in one run, same backend, same client.
#
#   bash tools/bench/l4.sh [--duration SECS] [--no-record]
#
# Topology (all namespaces made here, deleted at the end):
#   NAME-a  appliance on veth NAME-a0 (DPDK), 10.77.0.1:80 -> nginx 10.77.0.2/.3:8080
#   NAME-k  haproxy on veth NAME-k0 (kernel), 10.77.1.1:80 -> nginx 10.77.1.2/.3:8080
#   NAME-h  nginx (backend, one worker) and the client (httpload)
# The proxies are pinned to the last CPU; nginx and the client to CPU 0. With two cores
# the client side is the limit, so besides the rate the table gives each proxy's own
# CPU cost per connection / per GB: the appliance from its busy-cycle accounting,
# HAProxy from its process CPU time (/proc/PID/stat), and the capacity per proxy core
# that follows (rate / busy fraction). HAProxy's kernel softirq work runs partly on the
# client's CPU and is not in its process time: the HAProxy figures flatter it.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=10
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: l4.sh [--duration SECS] [--no-record]" >&2; exit 2 ;;
    esac
done
CMD="bash tools/bench/l4.sh --duration $DURATION"

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli -p tools

. tools/lib.sh
need_two_cpus
test_net bl 'ip netns del "$NAME-k" 2>/dev/null'
[ -n "${BENCH_DEBUG:-}" ] && trap 'cat "$WORK"/*.log "$WORK"/nginx.err 2>/dev/null; test_net_cleanup' EXIT
kernel_peer_net

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www"   # nginx workers run as www-data
head -c 1024 /dev/urandom | base64 -w0 > "$WORK/www/small.html"
head -c $((256 << 20)) /dev/urandom > "$WORK/www/big.bin"
backend_nginx nginx

cat > "$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    cpu-map 1/all $LAST
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend l4
    bind 10.77.1.1:80
    default_backend web
backend web
    balance roundrobin
    server b1 10.77.1.2:8080
    server b2 10.77.1.3:8080
CONF
ip netns exec "$NAME-k" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!
pinned haproxy "$HAPROXY_PID" "$LAST"

cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
[[vserver]]
name = "web"
listen = "10.77.0.1:80"
mode = "tcp"
backends = ["10.77.0.2:8080", "10.77.0.3:8080"]
TOML
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
wait_control "$WORK/control.sock" "$WORK/appliance.log"
sleep 1

# Busy cycles of the appliance's core, and CPU ticks of HAProxy's process.
appl_busy() { "${CTL[@]}" --json stats | python3 -c 'import json,sys; c=json.load(sys.stdin)["cores"][0]["loops"]; print(c["busy_cycles"], c["busy_cycles"]+c["idle_cycles"])'; }
hap_ticks() { awk '{print $14+$15}' "/proc/$HAPROXY_PID/stat"; }
HZ=$(getconf CLK_TCK)

# run NAME TARGET ARGS...: prints "rate bytes_per_sec busy_fraction"
run() {
    local who=$1 target=$2; shift 2
    local b0 t0 b1 t1 out
    if [ "$who" = appliance ]; then read -r b0 t0 < <(appl_busy); else b0=$(hap_ticks); t0=$(date +%s.%N); fi
    out=$("${H[@]}" taskset -c 0 "$BIN/httpload" --target "$target" --duration "${DURATION}s" --json "$@")
    if [ "$who" = appliance ]; then
        read -r b1 t1 < <(appl_busy)
        busy=$(python3 -c "print(($b1-$b0)/max(1,($t1-$t0)))")
    else
        b1=$(hap_ticks); t1=$(date +%s.%N)
        busy=$(python3 -c "print(($b1-$b0)/$HZ/($t1-$t0))")
    fi
    python3 -c "import json; d=json.loads('$out'); print(d['requests_per_sec'], d['bytes_per_sec'], $busy, d['errors'])"
}

echo "== warm-up"
"${H[@]}" curl -s -o /dev/null http://10.77.0.1/small.html
"${H[@]}" curl -s -o /dev/null http://10.77.1.1/small.html

declare -A R
for who in appliance haproxy; do
    if [ "$who" = appliance ]; then T=10.77.0.1:80; else T=10.77.1.1:80; fi
    echo "== $who: new connections (32 clients, 1 KiB responses, ${DURATION}s)"
    R[$who-cps]=$(run "$who" "$T" --path /small.html --concurrency 32)
    echo "   ${R[$who-cps]}"
    echo "== $who: bulk (2 keep-alive clients, 256 MiB responses, ${DURATION}s)"
    R[$who-bulk]=$(run "$who" "$T" --path /big.bin --concurrency 2 --keepalive)
    echo "   ${R[$who-bulk]}"
done

TABLE=$(python3 - "${R[appliance-cps]}" "${R[haproxy-cps]}" "${R[appliance-bulk]}" "${R[haproxy-bulk]}" <<'PY'
import sys
a_c, h_c, a_b, h_b = [list(map(float, x.split())) for x in sys.argv[1:5]]
def row(name, a, h, unit, scale):
    ar, hr = a * scale, h * scale
    return f"| {name} | {ar:,.1f} {unit} | {hr:,.1f} {unit} | {ar / hr:.2f} |"
lines = ["| measure | appliance | HAProxy 2.6 (TCP mode) | appliance ÷ HAProxy |", "|---|---|---|---|"]
lines.append(row("new connections/s (client-limited)", a_c[0], h_c[0], "conn/s", 1))
lines.append(row("proxy core busy during it", a_c[2], h_c[2], "%", 100))
# capacity: connections per busy core-second; cost: busy µs per connection
lines.append(row("connections per busy core-second", a_c[0] / a_c[2], h_c[0] / h_c[2], "conn/s", 1))
lines.append(f"| busy µs per connection | {1e6 * a_c[2] / a_c[0]:.1f} µs | {1e6 * h_c[2] / h_c[0]:.1f} µs | {(a_c[2] / a_c[0]) / (h_c[2] / h_c[0]):.2f} (lower is better) |")
lines.append(row("bulk throughput (client-limited)", a_b[1], h_b[1], "MB/s", 1e-6))
lines.append(row("proxy core busy during it", a_b[2], h_b[2], "%", 100))
lines.append(row("MB/s per busy core", a_b[1] / a_b[2], h_b[1] / h_b[2], "MB/s", 1e-6))
lines.append(f"| errors (conn test, bulk test) | {int(a_c[3])}, {int(a_b[3])} | {int(h_c[3])}, {int(h_b[3])} | |")
print("\n".join(lines))
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## L4 proxy vs HAProxy, $(date -u +%Y-%m-%d)"
        echo
        echo "Command: \`$CMD\`. Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), DPDK $(pkg-config --modversion libdpdk), $(haproxy -v | head -1 | cut -d' ' -f1-3)."
        echo "Proxies pinned to CPU $LAST (appliance: idle = \"busy\"); nginx backend and httpload client on CPU 0."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
