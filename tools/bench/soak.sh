#!/usr/bin/env bash
# Soak: a long run of full TLS handshakes (each with one request) through the appliance,
# sampling what must stay flat: the daemon's resident memory, its open file descriptors,
# the mbufs of its queue's pool in use, and its open connections. Outside CI (minutes).
#
#   bash tools/bench/soak.sh [--handshakes N] [--no-record]     (default 1,000,000)
#
# Topology as the other benches: the appliance on the DPDK veth (one busy-polling core on
# the last CPU, crypto inline), an nginx backend and loadgen (its own engine: a full
# TLS 1.3 handshake and one GET per connection, 32 in flight, reused key share, no
# verification) in the hosts' namespace on CPU 0. A sample every 10 s; the table gives
# the first sample after warm-up, the last, and the largest of each column, and the
# verdict: flat when the last is within 5% (RSS) or 64 (fds, mbufs) of the first.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOTAL=1000000
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --handshakes) TOTAL=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: soak.sh [--handshakes N] [--no-record]" >&2; exit 2 ;;
    esac
done
case "$TOTAL" in ''|*[!0-9]*|0) echo "--handshakes: a positive whole number" >&2; exit 2 ;; esac
CMD="bash tools/bench/soak.sh --handshakes $TOTAL"

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli -p tools

. tools/lib.sh
need_two_cpus
test_net sk

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www"
echo "ok" > "$WORK/www/index.html"
bench_ec_cert
backend_nginx backend

cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
[[vserver]]
name = "soak"
listen = "10.77.0.1:443"
mode = "tls"
backends = ["10.77.0.2:8080"]
[vserver.tls]
certificates = [{ chain = "$WORK/ec.pem", key = "$WORK/ec.key" }]
tickets = false
session_cache = 0
TOML
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
APPLIANCE=$!
CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
wait_control "$WORK/control.sock" "$WORK/appliance.log"
# The daemon's own PID (ip netns exec execs it, so the PIDs are the same).
sample() {   # prints: seconds rss_kib fds mbufs conns handshakes
    local t=$1
    local rss fds stats
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$APPLIANCE/status")
    fds=$(ls "/proc/$APPLIANCE/fd" | wc -l)
    stats=$("${CTL[@]}" --json stats)
    python3 - "$t" "$rss" "$fds" "$stats" <<'PY'
import json, sys
t, rss, fds, stats = sys.argv[1:5]
s = json.loads(stats)
c = s["cores"][0]
p = c["proxy"]
print(t, rss, fds, c["queue"]["mbufs_in_use"], p["clients_open"], p["tls13_handshakes"] + p["tls12_handshakes"])
PY
}

echo "== soak: $TOTAL handshakes (a request each); a sample every 10 s"
: > "$WORK/samples"
"${H[@]}" taskset -c 0 "$BIN/loadgen" --target 10.77.0.1:443 --sni bench.test --no-verify \
    --engine own --reuse-key-share --mode request --path /index.html --concurrency 32 \
    --count "$TOTAL" --duration 600s --json --quiet > "$WORK/loadgen.json" &
LOADGEN=$!
PIDS+=($LOADGEN)
T0=$(date +%s)
while kill -0 "$LOADGEN" 2>/dev/null; do
    sleep 10
    sample $(( $(date +%s) - T0 )) | tee -a "$WORK/samples"
done
wait "$LOADGEN" || true
sleep 2
sample $(( $(date +%s) - T0 )) | tee -a "$WORK/samples"

TABLE=$(python3 - "$WORK/samples" "$WORK/loadgen.json" <<'PY'
import json, sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
r = json.load(open(sys.argv[2]))
# The first sample after warm-up (20 s), or the first there is.
first = next((x for x in rows if x[0] >= 20), rows[0])
last = rows[-1]
cols = ["seconds", "RSS KiB", "open fds", "mbufs in use", "open client connections", "handshakes so far"]
out = ["| sample | " + " | ".join(cols[1:]) + " |", "|---|" + "---:|" * (len(cols) - 1)]
for name, row in [("first after warm-up (%d s)" % first[0], first), ("last (%d s, after the run)" % last[0], last)]:
    out.append(f"| {name} | " + " | ".join(f"{v:,}" for v in row[1:]) + " |")
out.append("| largest | " + " | ".join(f"{max(x[i] for x in rows):,}" for i in range(1, len(cols))) + " |")
flat = {
    "RSS": last[1] <= first[1] * 1.05,
    "fds": last[2] <= first[2] + 64,
    "mbufs": last[3] <= first[3] + 64,
}
out.append("")
out.append(f"loadgen: {r['ok']:,} operations, {r['handshakes']:,} handshakes, {r['error_count']} errors, "
           f"{r['handshakes_per_sec']:,.0f} handshakes/s over {r['seconds']:.0f} s; "
           "flat: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in flat.items()) + ".")
print("\n".join(out))
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## Soak: $TOTAL TLS handshakes through one core, $(date -u +%Y-%m-%d)"
        echo
        echo "Command: \`$CMD\`. Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r), DPDK $(pkg-config --modversion libdpdk), $(openssl version | cut -d' ' -f1-2). The appliance on one busy-polling core (crypto inline, no session resumption), loadgen's own engine (full TLS 1.3 handshake and one GET per connection, 32 in flight) and the nginx backend on the other CPU. Samples every 10 s from /proc (RSS, fds) and the control socket (mbufs, connections)."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
