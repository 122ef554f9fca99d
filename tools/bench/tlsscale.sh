#!/usr/bin/env bash
# TLS connection scale: what an idle TLS connection costs the appliance in memory, and
# whether a request costs the same with 100 and with 50,000 TLS connections open.
#
#   bash tools/bench/tlsscale.sh [--sizes 100,1000,10000,50000] [--seconds N]
#                                [--buffers BYTES] [--no-record]
#
# For each size N, on a freshly started appliance (one poll-mode core on the last CPU,
# busy polling, a tls vserver with an ECDSA P-256 certificate in front of an nginx
# backend): hold_tls.py (Python's ssl, CPU 0) opens N TLS 1.3 connections and holds them
# idle; the appliance's RSS before and after gives the memory per idle TLS connection.
# Then, with the N connections still open, loadgen (libssl, CPU 0) sends small keep-alive
# GETs on 16 other connections for --seconds (default 5), three times, and the
# appliance's busy loop time per request (its cycle accounting) of the cheapest round
# counts. --buffers sets [tcp]
# rx_buffer and tx_buffer (default: the appliance's defaults, 64 KiB each). A backend
# connection opens only when a client sends something (issue 29), so an idle TLS
# connection is one TCP socket and one TLS connection; after a second idle it gives back
# the pages of its empty socket buffers, and RSS is read two seconds after the last
# connection opened. Appends its table to
# BENCHMARKS.md unless --no-record.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=100,1000,10000,50000
SECS=5
BUFFERS=""
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --sizes) SIZES=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --buffers) BUFFERS=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
for n in ${SIZES//,/ }; do
    case "$n" in
    '' | *[!0-9]*) echo "--sizes: $n is not a number" >&2; exit 2 ;;
    esac
    if [ "$n" -lt 1 ] || [ "$n" -gt 60000 ]; then
        echo "--sizes: $n is outside 1..60000 (one client address's ports)" >&2; exit 2
    fi
done

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli -p tools
. tools/lib.sh
need_two_cpus
test_net ts

mkdir -p "$WORK/www"
chmod 755 "$WORK" "$WORK/www"
echo "ok" > "$WORK/www/index.html"
bench_ec_cert
backend_nginx backend
# One client address's whole port range for the held connections.
"${H[@]}" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"

CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
TCP=""
[ -n "$BUFFERS" ] && TCP="[tcp]
rx_buffer = $BUFFERS
tx_buffer = $BUFFERS"
cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
$TCP
$(bench_tls_vserver ec 10.77.0.1:443 ec)
TOML

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
stat_json() { "${CTL[@]}" --json stats; }
open_clients() { stat_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cores"][0]["proxy"]["clients_open"])'; }

: > "$WORK/rows"
for n in ${SIZES//,/ }; do
    ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
    APPLIANCE_PID=$!
    PIDS+=("$APPLIANCE_PID")
    wait_control "$WORK/control.sock" "$WORK/appliance.log"
    # Warm the process up (first handshakes, first allocations) before the baseline.
    "${H[@]}" taskset -c 0 "$BIN/loadgen" --target 10.77.0.1:443 --sni bench.test --no-verify \
        --mode request --path /index.html --count 200 --concurrency 16 --duration 20s --quiet >/dev/null
    sleep 1
    rss0=$(rss_kib "$APPLIANCE_PID")
    # Holders of at most 15,000 connections each (a process's descriptor limit here is
    # 20,000); each holds until its stdin (a FIFO whose write end this script keeps)
    # closes.
    HOLDERS=()
    FDS=()
    left=$n
    k=0
    while [ "$left" -gt 0 ]; do
        share=$((left < 15000 ? left : 15000))
        mkfifo "$WORK/hold$k.in"
        "${H[@]}" taskset -c 0 python3 tools/bench/hold_tls.py 10.77.0.1:443 "$share" \
            --ca "$WORK/ec.pem" --sni bench.test --hold-secs 600 \
            < "$WORK/hold$k.in" > "$WORK/hold$k.out" 2>&1 &
        HOLDERS+=($!)
        PIDS+=($!)
        exec {fd}>"$WORK/hold$k.in"
        FDS+=("$fd")
        for _ in $(seq 1200); do grep -q "^held" "$WORK/hold$k.out" && break; sleep 0.1; done
        if ! grep -q "^held $share\$" "$WORK/hold$k.out"; then
            echo "a holder did not open its $share connections:" >&2; cat "$WORK/hold$k.out" >&2; exit 1
        fi
        left=$((left - share))
        k=$((k + 1))
    done
    # A connection idle for a second gives back its socket buffers' pages
    # (IDLE_TRIM_US in appliance/src/conn/tls.rs): the reading comes after that.
    sleep 2
    rss1=$(rss_kib "$APPLIANCE_PID")
    open=$(open_clients)
    # Three rounds of GETs; the cheapest counts (scheduler noise only ever adds).
    : > "$WORK/rounds"
    for _ in 1 2 3; do
        b0=$(appliance_busy_s); t0=$(date +%s.%N)
        out=$("${H[@]}" taskset -c 0 "$BIN/loadgen" --target 10.77.0.1:443 --sni bench.test --no-verify \
            --mode bulk --path /index.html --concurrency 16 --duration "${SECS}s" --json --quiet)
        b1=$(appliance_busy_s); t1=$(date +%s.%N)
        python3 - "$n" "$rss0" "$rss1" "$open" "$b0" "$b1" "$t0" "$t1" "$out" >> "$WORK/rounds" <<'PY'
import json, sys
n, rss0, rss1, open_, b0, b1, t0, t1 = (float(x) for x in sys.argv[1:9])
r = json.loads(sys.argv[9])
print(json.dumps({"n": int(n), "kib_per_conn": (rss1 - rss0) / n, "open": int(open_),
    "rps": r["ops_per_sec"], "busy": (b1 - b0) / (t1 - t0),
    "busy_us_per_req": (b1 - b0) * 1e6 / max(1, r["ok"]), "errors": r["error_count"]}))
PY
    done
    python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best = min(rows, key=lambda r: r["busy_us_per_req"])
best["errors"] = sum(r["errors"] for r in rows)
print(json.dumps(best))' "$WORK/rounds" >> "$WORK/rows"
    tail -1 "$WORK/rows" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("   %6d held (%d open): %7.1f KiB each; %8.0f GETs/s, busy %4.1f%%, %6.1f busy µs per GET, errors %d"
      % (c["n"], c["open"], c["kib_per_conn"], c["rps"], 100 * c["busy"], c["busy_us_per_req"], c["errors"]))'
    for fd in "${FDS[@]}"; do exec {fd}>&-; done
    for pid in "${HOLDERS[@]}"; do wait "$pid" || true; done
    rm -f "$WORK"/hold*.in
    stop_pids "$APPLIANCE_PID"
done

TABLE=$(python3 - "$WORK/rows" "${BUFFERS:-65536 (default)}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = rows[0]["busy_us_per_req"]
print("| idle TLS connections held | appliance RSS per idle TLS connection | keep-alive GETs/s on 16 other connections | busy µs per GET (best of 3) | ratio to %d held |" % rows[0]["n"])
print("|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %.1f KiB | %s | %.1f | %.2f |" % (f'{r["n"]:,}', r["kib_per_conn"], f'{r["rps"]:,.0f}',
          r["busy_us_per_req"], r["busy_us_per_req"] / base))
print()
print("Socket buffers: rx_buffer = tx_buffer = %s bytes." % sys.argv[2])
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## TLS connection scale: idle TLS connections and the cost of a request, $(date +%Y-%m-%d)"
        echo
        echo "Command: \`bash tools/bench/tlsscale.sh --sizes $SIZES --seconds $SECS${BUFFERS:+ --buffers $BUFFERS}\`. Machine: $(nproc) CPUs ($(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')), kernel $(uname -r). Appliance on CPU $LAST (busy polling); the holder (Python ssl), loadgen and the nginx backend on CPU 0. RSS from /proc before and after the connections opened, on a fresh appliance per size."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
