#!/usr/bin/env bash
# Handshake crypto inline on the poll-mode cores vs on the crypto worker pool, with one
# and with two poll-mode cores, in one run.
#
#   bash tools/bench/crypto_pool.sh [--duration SECS] [--no-record]
#
# The appliance (DPDK net_af_packet on a veth) runs a TLS 1.3 ECDSA P-256 vserver;
# loadgen (own engine, no certificate check, one reused key share, 32 connections, pinned
# to CPU 0) makes full X25519 handshakes for SECS seconds, once per row:
#   inline 1 core   one busy-polling core on the last CPU, crypto on it (workers = 0);
#   pool 1 core     the same core, one crypto worker pinned to CPU 0 (beside loadgen);
#   inline 2 cores  poll-mode cores on both CPUs (qpairs=2), crypto on them;
#   pool 2 cores    both cores and one crypto worker (not pinned: a worker may not share
#                   a poll-mode core's pin).
# The two-core rows use the adaptive idle policy, so the core on CPU 0 gives loadgen the
# CPU while it waits; the box has no third CPU, so every thread there is time-shared.
# The backend is one nginx worker on CPU 0.
# Per row: the server-side handshake rate (the appliance's counters), the poll-mode
# cores' busy time per handshake (their cycle accounting, summed), the worker's CPU time
# per handshake (its own clock), loadgen's CPU per handshake, and the handshakes one
# server core-second carries at the summed server cost (poll busy + worker CPU). The
# physical limit per core comes from `openssl speed` in the same run: one P-256
# signature and two X25519 operations (key share and agreement) per handshake.
# On this box loadgen shares CPU 0 with the worker or a poll core, so the rate column is
# what the box did, not what the appliance could do; the per-handshake costs are the
# comparison.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=10
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: crypto_pool.sh [--duration SECS] [--no-record]" >&2; exit 2 ;;
    esac
done
CMD="bash tools/bench/crypto_pool.sh --duration $DURATION"

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli -p tools

. tools/lib.sh
need_two_cpus
test_net bc
mkdir -p "$WORK/www"
echo ok > "$WORK/www/index.html"
chmod 755 "$WORK" "$WORK/www"   # nginx workers run as www-data
# The appliance opens a backend connection per client, handshake only or not: the
# backend must keep up with thousands of connections a second (a Python server does
# not, and the appliance then runs out of ports on connections the backend has not
# closed yet).
backend_nginx backend
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.test \
    -keyout "$WORK/ec.key" -out "$WORK/ec.pem" 2>/dev/null

speed() { openssl speed -seconds 2 "$@" 2>/dev/null; }
SIGN=$(speed ecdsap256 | awk '/256 bits ecdsa \(nistp256\)/ {print $(NF-1); exit}')
DERIVE=$(speed ecdhx25519 | awk '/253 bits ecdh \(X25519\)/ {print $NF; exit}')
LIMIT=$(python3 -c "print(round(1/(1/$SIGN + 2/$DERIVE)))")

# stats: "handshakes poll_busy_s worker_cpu_s" summed over every core and worker
stats() {
    "$BIN/appliancectl" --socket "$WORK/control.sock" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
h = sum(c["proxy"]["tls13_handshakes"] for c in s["cores"])
busy = sum(c["loops"]["busy_cycles"] for c in s["cores"]) / s["cycles_per_second"]
w = sum(x["cpu_ns"] for x in s["crypto"]["workers"]) / 1e9
print(h, busy, w)'
}

ROWS=()
for ROW in "inline|1|$LAST|busy|0" "pool|1|$LAST|busy|1" "inline|2|0, $LAST|adaptive|0" "pool|2|0, $LAST|adaptive|1"; do
    IFS='|' read -r MODE NCORES CORES IDLE WORKERS <<<"$ROW"
    CRYPTO=""
    if [ "$WORKERS" -gt 0 ]; then
        CRYPTO=$'[crypto]\nworkers = 1'
        [ "$NCORES" = 1 ] && CRYPTO+=$'\ncpus = [0]'
    fi
    cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head "$CORES" "$IDLE")
$CRYPTO
[[vserver]]
name = "tls"
listen = "10.77.0.1:443"
mode = "tls"
backends = ["10.77.0.2:8080"]
[vserver.tls]
certificates = [{ chain = "ec.pem", key = "ec.key" }]
versions = ["1.3"]
tickets = false
TOML
    LOG="$WORK/appliance-$MODE$NCORES.log"
    ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$LOG" 2>&1 &
    APID=$!
    PIDS+=($APID)
    wait_control "$WORK/control.sock" "$LOG"
    sleep 1
    echo "== $MODE, $NCORES poll-mode core(s) [$CORES], ${DURATION}s"
    read -r h0 b0 w0 < <(stats)
    "${H[@]}" "$BIN/loadgen" --target 10.77.0.1:443 --engine own --no-verify --reuse-key-share \
        --tls 1.3 --groups X25519 --concurrency 32 --cpus 0 --duration "${DURATION}s" --json \
        >"$WORK/loadgen.json" 2>"$WORK/loadgen.err" || { cat "$WORK/loadgen.err" >&2; exit 1; }
    read -r h1 b1 w1 < <(stats)
    ROWS+=("$(python3 - "$WORK/loadgen.json" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
h = $h1 - $h0
poll = ($b1 - $b0) / max(h, 1) * 1e6
work = ($w1 - $w0) / max(h, 1) * 1e6
server = poll + work
errors = ", ".join(f"{v} {k}" for k, v in r["errors"].items()) or "0"
print(f"| $MODE | $NCORES | {h / $DURATION:,.0f} | {poll:.1f} | {work:.1f} | {r['client_cpu_us_per_op']:.1f} | {server:.1f} | {1e6 / max(server, 0.001):,.0f} | {1e6 / max(server, 0.001) / $LIMIT:.2f} | {errors} |")
PY
)")
    echo "${ROWS[-1]}"
    stop_pids "$APID"
done

TABLE=$(printf '%s\n' \
    "| crypto | poll-mode cores | handshakes/s | poll-core busy µs/hs | worker CPU µs/hs | loadgen CPU µs/hs | server µs/hs (busy + worker) | hs per server core-s | ÷ limit | errors |" \
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" "${ROWS[@]}")
echo
echo "TLS 1.3 full handshakes, ECDSA P-256, X25519; loadgen (own engine) on CPU 0, ${DURATION}s per row"
echo "limit per core (openssl speed): $SIGN P-256 signs/s, $DERIVE X25519 ops/s -> $LIMIT handshakes/s"
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "### Crypto inline vs worker pool, one and two poll-mode cores ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r))"
        echo
        echo "\`$CMD\`: TLS 1.3 full handshakes (ECDSA P-256, X25519) from loadgen \`--engine own --no-verify"
        echo "--reuse-key-share\` (32 connections, pinned to CPU 0). One core: busy polling on CPU $LAST, the"
        echo "worker pinned to CPU 0. Two cores: CPUs 0 and $LAST, adaptive idle, the worker not pinned."
        echo "Limit per core from \`openssl speed\`: $SIGN signs/s and $DERIVE X25519 ops/s (two per"
        echo "handshake), so $LIMIT handshakes/s."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
