#!/usr/bin/env bash
# Bulk HTTPS through the data plane with records protected on the poll-mode core vs in
# record jobs on the crypto pool, in one run.
#
#   bash tools/bench/records.sh [--size MIB] [--rounds N] [--no-record]
#
# The appliance (DPDK net_af_packet on a veth, one poll-mode core on the last CPU) runs a
# TLS 1.3 vserver (it chooses AES-128-GCM) in front of a Python HTTP backend on CPU 0; curl on CPU 0
# downloads a SIZE MiB file N times, one connection each, per mode (uploads through
# record jobs are checked by tests/tests/dpdk_records.rs, not timed here):
#   inline        records sealed and opened on the poll-mode core ([crypto] workers = 0)
#   pool+inline   a worker on CPU 0 for handshakes, records still on the core
#                 (records = "inline")
#   pool+records  a worker on CPU 0 for handshakes and record jobs (records = "pool")
# Per mode: client MB/s, the poll-mode core's busy µs per MiB (its cycle accounting),
# the worker's CPU µs per MiB (its own clock), and records per record job. The physical
# limit from `openssl speed -evp aes-128-gcm -bytes 16384` in the same run: µs per MiB
# of one core for the encryption alone. Both CPUs are shared with the client and the
# backend, so MB/s is not capacity; the per-MiB costs are.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=64
ROUNDS=3
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: records.sh [--size MIB] [--rounds N] [--no-record]" >&2; exit 2 ;;
    esac
done
CMD="bash tools/bench/records.sh --size $SIZE --rounds $ROUNDS"

tools/setup.sh
cargo build --release -q -p appliance -p cli

. tools/lib.sh
need_two_cpus
test_net br
mkdir -p "$WORK/www"
head -c $((SIZE << 20)) /dev/urandom > "$WORK/www/big.bin"
"${H[@]}" taskset -c 0 python3 tools/www.py 10.77.0.2 8080 "$WORK/www" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
bench_ec_cert

SPEED=$(openssl speed -evp aes-128-gcm -bytes 16384 -seconds 2 2>/dev/null | awk '/^(AES-128-GCM|aes-128-gcm)/ {v=$NF} END {sub("k", "", v); print v}')
LIMIT_US=$(python3 -c "print(round((1 << 20) / ($SPEED * 1000) * 1e6, 1))")

# stats: "poll_busy_s worker_cpu_s record_jobs record_ops bytes_to_client bytes_to_backend"
stats() {
    "$BIN/appliancectl" --socket "$WORK/control.sock" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
c = s["cores"][0]
p = c["proxy"]
busy = c["loops"]["busy_cycles"] / s["cycles_per_second"]
w = sum(x["cpu_ns"] for x in s["crypto"]["workers"]) / 1e9
print(busy, w, p["record_jobs"], p["record_job_opens"] + p["record_job_seals"], p["bytes_to_client"], p["bytes_to_backend"])'
}

ROWS=()
for MODE in inline pool+inline pool+records; do
    case $MODE in
    inline) CRYPTO="" ;;
    pool+inline) CRYPTO=$'[crypto]\nworkers = 1\ncpus = [0]\nrecords = "inline"' ;;
    pool+records) CRYPTO=$'[crypto]\nworkers = 1\ncpus = [0]\nrecords = "pool"' ;;
    esac
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
TOML
    ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance-$MODE.log" 2>&1 &
    APID=$!
    PIDS+=($APID)
    wait_control "$WORK/control.sock" "$WORK/appliance-$MODE.log"
    sleep 1
    read -r b0 w0 j0 o0 d0 u0 < <(stats)
    T0=$(date +%s.%N)
    for i in $(seq "$ROUNDS"); do
        "${H[@]}" taskset -c 0 curl -sS --max-time 120 -k --resolve bench.test:443:10.77.0.1 \
            -o /dev/null https://bench.test/big.bin
    done
    T1=$(date +%s.%N)
    read -r b1 w1 j1 o1 d1 u1 < <(stats)
    ROWS+=("$(python3 -c "
mib = (($d1 - $d0) + ($u1 - $u0)) / (1 << 20)
secs = $T1 - $T0
poll = ($b1 - $b0) / mib * 1e6
work = ($w1 - $w0) / mib * 1e6
jobs = $j1 - $j0
per_job = f'{($o1 - $o0) / jobs:.1f}' if jobs else '-'
print(f'| $MODE | {mib:,.0f} | {mib * 1.048576 / secs:,.0f} | {poll:,.0f} | {work:,.0f} | {per_job} | {poll / $LIMIT_US:.1f} |')
")")
    stop_pids "$APID"
done

TABLE=$(printf '%s\n' \
    "| records | MiB moved | MB/s (client-bound) | poll-core busy µs/MiB | worker CPU µs/MiB | records per job | poll-core ÷ limit |" \
    "|---|---:|---:|---:|---:|---:|---:|" "${ROWS[@]}")
echo
echo "TLS 1.3 AES-128-GCM, $ROUNDS × $SIZE MiB down, curl and backend on CPU 0"
echo "limit per core (openssl speed -evp aes-128-gcm, 16 KiB): $SPEED kB/s -> $LIMIT_US µs/MiB"
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "### Record offload: bulk HTTPS per poll-core ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r))"
        echo
        echo "\`$CMD\`: TLS 1.3 AES-128-GCM; curl downloads $SIZE MiB $ROUNDS times,"
        echo "curl and the Python backend on CPU 0, the poll-mode core on CPU $LAST, the worker (pool modes) on CPU 0."
        echo "Limit per core from \`openssl speed -evp aes-128-gcm -bytes 16384\`: $SPEED kB/s, so $LIMIT_US µs per MiB."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
