#!/usr/bin/env bash
# Records per segment and client-observed latency with and without coalescing, for an
# HTTP/1.1 response stream through a `tls` vserver, in one run.
#
#   bash tools/bench/transmit.sh [--responses N] [--size BYTES] [--piece BYTES] [--no-record]
#
# The appliance (DPDK net_af_packet on a veth, one busy poll-mode core on the last CPU)
# has three TLS 1.3 vservers on one backend (tests/py/transmit_backend.py, CPU 0), which
# answers each request with a SIZE-byte body written in PIECE-byte pieces (TCP_NODELAY,
# so each piece can leave as its own segment):
#   none     [vserver.transmit] timer = "0ms", psh = false: a record per backend read;
#   default  the defaults: seal at PSH, FIN, a full record, or after 1 ms;
#   http     http = true, psh = false: seal at each response's end (and full records).
# One client (tests/py/transmit_client.py, CPU 0) sends N requests one after another on
# one connection and counts the records each response came in and how long it waited.
# Per mode: records and bytes per record (the appliance's counters), TCP data segments
# to the client and records per segment, client latency p50/p99, and each against
# "none" (÷ none).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESPONSES=300
SIZE=20000
PIECE=500
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --responses) RESPONSES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --piece) PIECE=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: transmit.sh [--responses N] [--size BYTES] [--piece BYTES] [--no-record]" >&2; exit 2 ;;
    esac
done
CMD="bash tools/bench/transmit.sh --responses $RESPONSES --size $SIZE --piece $PIECE"

tools/setup.sh
cargo build --release -q -p appliance -p cli

. tools/lib.sh
need_two_cpus
test_net bt
"${H[@]}" taskset -c 0 python3 tests/py/transmit_backend.py 10.77.0.2 9000 >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=appliance.test -addext subjectAltName=DNS:appliance.test \
    -keyout "$WORK/ec.key" -out "$WORK/ec.pem" 2>/dev/null

vserver() { # name port transmit-lines
    printf '[[vserver]]\nname = "%s"\nlisten = "10.77.0.1:%s"\nmode = "tls"\nbackends = ["10.77.0.2:9000"]\n' "$1" "$2"
    printf '[vserver.tls]\ncertificates = [{ chain = "ec.pem", key = "ec.key" }]\nversions = ["1.3"]\ntickets = false\n'
    printf '[vserver.transmit]\n%b\n' "$3"
}
{
    cat <<TOML
$(bench_toml_head)
TOML
    vserver none 4431 'timer = "0ms"\npsh = false'
    vserver default 4432 ''
    vserver http 4433 'http = true\npsh = false'
} > "$WORK/appliance.toml"
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
wait_control "$WORK/control.sock" "$WORK/appliance.log"
sleep 0.5

# counters: "records record_bytes segments"
counters() {
    "$BIN/appliancectl" --socket "$WORK/control.sock" --json stats | python3 -c '
import json, sys
p = json.load(sys.stdin)["cores"][0]["proxy"]
print(p["tls_records_out"], p["tls_record_bytes_out"], p["tls_segments_out"])'
}

ROWS=()
BASE=""
for MODE in none default http; do
    case $MODE in none) PORT=4431 ;; default) PORT=4432 ;; http) PORT=4433 ;; esac
    # The appliance publishes segment counts every 256 loop iterations: let them settle.
    sleep 0.2
    read -r r0 b0 s0 < <(counters)
    "${H[@]}" taskset -c 0 python3 tests/py/transmit_client.py "$WORK/ec.pem" "$PORT" bench \
        "$RESPONSES" "$SIZE" "$PIECE" >"$WORK/client-$MODE.json"
    sleep 0.2
    read -r r1 b1 s1 < <(counters)
    LINE=$(python3 - "$WORK/client-$MODE.json" "$r0" "$b0" "$s0" "$r1" "$b1" "$s1" "$RESPONSES" "$BASE" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
r0, b0, s0, r1, b1, s1, n = (int(x) for x in sys.argv[2:9])
base = json.loads(sys.argv[9]) if sys.argv[9] else None
lat = sorted(s["seconds"] * 1e3 for s in v["steps"])
pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
rec, segs = r1 - r0, s1 - s0
row = dict(records=rec / n, bpr=(b1 - b0) / max(rec, 1), segs=segs / n, rps=rec / max(segs, 1),
           p50=pct(50), p99=pct(99))
ratio = lambda k: f"{row[k] / base[k]:.2f}×" if base else "1.00×"
print(json.dumps(row))
print(f"| {{mode}} | {row['records']:.1f} ({ratio('records')}) | {row['bpr']:,.0f} | {row['segs']:.1f} | "
      f"{row['rps']:.2f} | {row['p50']:.2f} ({ratio('p50')}) | {row['p99']:.2f} ({ratio('p99')}) |")
PY
)
    JSONROW=$(echo "$LINE" | head -1)
    [ -z "$BASE" ] && BASE=$JSONROW
    ROWS+=("$(echo "$LINE" | tail -1 | sed "s/{mode}/$MODE/")")
done

TABLE=$(printf '%s\n' \
    "| transmit | records/response (÷ none) | bytes/record | segments/response | records/segment | latency p50 ms (÷ none) | p99 ms (÷ none) |" \
    "|---|---:|---:|---:|---:|---:|---:|" "${ROWS[@]}")
echo
echo "$RESPONSES responses of $SIZE body bytes, written by the backend in $PIECE-byte pieces; TLS 1.3 AES-128-GCM"
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "### Transmittal conditions: coalescing an HTTP response stream ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r))"
        echo
        echo "\`$CMD\`: one TLS 1.3 connection, $RESPONSES requests one after another, each answered with a"
        echo "$SIZE-byte body the backend writes in $PIECE-byte pieces (TCP_NODELAY). Backend and client on CPU 0,"
        echo "the poll-mode core (busy) on CPU $LAST. Records and segments from the appliance's counters,"
        echo "latency (request written to whole response read) from the client."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
