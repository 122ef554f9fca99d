#!/usr/bin/env bash
# Handshake crypto inline on the poll-mode core vs on the crypto worker pool, in one run.
#
#   sudo bash tools/bench/crypto_pool.sh [--duration SECS] [--clients N] [--no-record]
#
# The appliance (DPDK net_af_packet on a veth, one poll-mode core on the last CPU) runs
# a TLS 1.3 ECDSA P-256 vserver; N `openssl s_time -new` processes on CPU 0 make full
# handshakes (X25519) for SECS seconds, once per mode:
#   inline  crypto runs on the poll-mode core ([crypto] workers = 0, the default);
#   pool    one crypto worker pinned to CPU 0 (beside the clients: this box has two).
# Per mode it prints the server-side handshake rate (from the appliance's counters),
# the poll-mode core's busy time per handshake (its cycle accounting), the worker
# thread's CPU time per handshake (its own clock, so time the clients on the same CPU
# take is not counted), and what one poll-mode core could carry at that cost.
# The physical limit per core comes from `openssl speed` in the same run: one P-256
# signature plus one X25519 derive per handshake. The clients are the limit on two
# CPUs, so the rate column is not capacity; the per-handshake costs are.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=10
CLIENTS=2
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: crypto_pool.sh [--duration SECS] [--clients N] [--no-record]" >&2; exit 2 ;;
    esac
done
CMD="sudo bash tools/bench/crypto_pool.sh --duration $DURATION --clients $CLIENTS"

tools/setup.sh
cargo build --release -q -p appliance -p cli

. tools/lib.sh
need_two_cpus
test_net bc
mkdir -p "$WORK/www"
echo ok > "$WORK/www/index.html"
"${H[@]}" taskset -c 0 python3 tools/www.py 10.77.0.2 8080 "$WORK/www" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.test \
    -keyout "$WORK/ec.key" -out "$WORK/ec.pem" 2>/dev/null

# The physical limit of one core: a P-256 signature and an X25519 derive per handshake.
speed() { openssl speed -seconds 2 "$@" 2>/dev/null; }
SIGN=$(speed ecdsap256 | awk '/256 bits ecdsa \(nistp256\)/ {print $(NF-1); exit}')
DERIVE=$(speed ecdhx25519 | awk '/253 bits ecdh \(X25519\)/ {print $NF; exit}')
LIMIT=$(python3 -c "print(round(1/(1/$SIGN + 1/$DERIVE)))")

# stats: "tls13_handshakes poll_busy_s worker_busy_s"
stats() {
    target/release/appliancectl --socket "$WORK/control.sock" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
c = s["cores"][0]
busy = c["loops"]["busy_cycles"] / s["cycles_per_second"]
w = sum(x["cpu_ns"] for x in s["crypto"]["workers"]) / 1e9
print(c["proxy"]["tls13_handshakes"], busy, w)'
}

ROWS=()
for MODE in inline pool; do
    CRYPTO=""
    [ "$MODE" = pool ] && CRYPTO=$'[crypto]\nworkers = 1\ncpus = [0]'
    cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
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
    ip netns exec "$NAME-a" target/release/appliance --config "$WORK/appliance.toml" >"$WORK/appliance-$MODE.log" 2>&1 &
    APID=$!
    PIDS+=($APID)
    wait_control "$WORK/control.sock" "$WORK/appliance-$MODE.log"
    sleep 1
    read -r h0 b0 w0 < <(stats)
    CPIDS=()
    for i in $(seq "$CLIENTS"); do
        "${H[@]}" taskset -c 0 openssl s_time -connect 10.77.0.1:443 -new -tls1_3 \
            -time "$DURATION" >"$WORK/s_time-$MODE-$i.log" 2>&1 &
        CPIDS+=($!)
    done
    for p in "${CPIDS[@]}"; do wait "$p" || true; done
    read -r h1 b1 w1 < <(stats)
    ROWS+=("$(python3 -c "
h = $h1 - $h0
poll = ($b1 - $b0) / max(h, 1) * 1e6
work = ($w1 - $w0) / max(h, 1) * 1e6
print(f'| $MODE | {h / $DURATION:,.0f} | {poll:.1f} | {work:.1f} | {1e6 / max(poll, 0.001):,.0f} | {1e6 / max(poll, 0.001) / $LIMIT:.2f} |')
")")
    stop_pids "$APID"
done

TABLE=$(printf '%s\n' \
    "| crypto | handshakes/s (client-bound) | poll-core busy µs/handshake | worker CPU µs/handshake | handshakes/s one poll core could carry | ÷ limit |" \
    "|---|---:|---:|---:|---:|---:|" "${ROWS[@]}")
echo
echo "TLS 1.3 full handshakes, ECDSA P-256, X25519; $CLIENTS s_time clients on CPU 0, ${DURATION}s per mode"
echo "limit per core (openssl speed): $SIGN P-256 signs/s, $DERIVE X25519 derives/s -> $LIMIT handshakes/s"
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "### Crypto inline vs worker pool ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r))"
        echo
        echo "\`$CMD\`: TLS 1.3 full handshakes (ECDSA P-256, X25519), $CLIENTS \`openssl s_time -new\` clients on CPU 0,"
        echo "the poll-mode core on CPU $LAST; the worker (pool mode) on CPU 0. Limit per core from \`openssl speed\`:"
        echo "$SIGN signs/s and $DERIVE derives/s, so $LIMIT handshakes/s."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
