#!/usr/bin/env bash
# UDP relay benchmark: secure datagrams against plain RFC 1928 datagrams through the
# same socks5 vserver (plain_udp = true), in one run, for 64- and 1200-byte payloads.
#
#   bash tools/bench/datagrams.sh [--duration SECS] [--no-record]
#
# Topology (tools/netns.sh): the appliance on NAME-a0 (DPDK, one core on the last CPU),
# 10.77.0.1:1080; in the hosts' namespace on CPU 0 the echo server (dgramload echo,
# 10.77.0.3:7) and the client (dgramload run, one association, 32 datagrams in
# flight). Per mode and size: echoes per second, the appliance's busy µs per relayed
# datagram (its busy cycles over the datagrams it relayed, both directions), and then
# the round trip p50/p99 with the client sending at half the closed-loop rate (in
# bursts each millisecond). Three rounds; the table gives medians.
# The client and the echo server share CPU 0, so the rates are client-limited; the
# busy µs per datagram is the appliance's own cost.
# WireGuard beside it: only where the kernel has it (`ip link add ... type wireguard`);
# the row says when it does not.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=5
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: datagrams.sh [--duration SECS] [--no-record]" >&2; exit 2 ;;
    esac
done
CMD="bash tools/bench/datagrams.sh --duration $DURATION"

tools/setup.sh --bench
cargo build --release -q -p appliance -p cli -p tools

. tools/lib.sh
need_two_cpus
test_net bd

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/ec.key" -out "$WORK/ec.pem" -subj /CN=appliance.test \
    -addext subjectAltName=DNS:appliance.test 2>/dev/null

cat > "$WORK/appliance.toml" <<TOML
$(bench_toml_head)
[[vserver]]
name = "socks"
listen = "10.77.0.1:1080"
mode = "socks5"
[vserver.tls]
certificates = [{ chain = "$WORK/ec.pem", key = "$WORK/ec.key" }]
[vserver.socks]
auth = ["none"]
allow = ["10.77.0.3/32:7"]
plain_udp = true
TOML
ip netns exec "$NAME-a" "$BIN/appliance" --config "$WORK/appliance.toml" >"$WORK/appliance.log" 2>&1 &
PIDS+=($!)
CTL=("$BIN/appliancectl" --socket "$WORK/control.sock")
wait_control "$WORK/control.sock" "$WORK/appliance.log"
"${H[@]}" taskset -c 0 "$BIN/dgramload" echo --listen 10.77.0.3:7 --seconds 900 2>"$WORK/echo.log" &
PIDS+=($!)
sleep 1

# busy cycles, cycles per second, datagrams relayed (both ways)
appl() {
    "${CTL[@]}" --json stats | python3 -c 'import json,sys
s=json.load(sys.stdin); c=s["cores"][0]
print(c["loops"]["busy_cycles"], s["cycles_per_second"], c["proxy"]["dgram_up"]+c["proxy"]["dgram_down"])'
}
LOAD=("${H[@]}" taskset -c 0 "$BIN/dgramload" run --server 10.77.0.1:1080 --ca "$WORK/ec.pem"
      --name appliance.test --target 10.77.0.3:7 --seconds "$DURATION")

# measure MODE SIZE: prints "echoes_per_sec busy_us_per_datagram p50 p99 (half load)"
measure() {
    local mode=$1 size=$2 flag=() b0 hz d0 b1 d1 out rate lat
    [ "$mode" = plain ] && flag=(--plain)
    read -r b0 hz d0 < <(appl)
    out=$("${LOAD[@]}" --size "$size" --window 32 "${flag[@]}")
    read -r b1 hz d1 < <(appl)
    rate=$(python3 -c "import json; print(int(json.loads('$out')['echoes_per_sec'] / 2))")
    lat=$("${LOAD[@]}" --size "$size" --rate "$rate" "${flag[@]}")
    python3 -c "import json
o=json.loads('$out'); l=json.loads('$lat')
print(o['echoes_per_sec'], 1e6*($b1-$b0)/$hz/max(1,$d1-$d0), l['p50_us'], l['p99_us'], l['echoed']/max(1,l['sent']))"
}

# Three rounds, the modes alternating, so that drift hits both; the table takes each
# column's median.
declare -A R
for round in 1 2 3; do
    for size in 64 1200; do
        for mode in plain protected; do
            echo "== round $round: $mode, $size-byte payloads, ${DURATION}s closed loop then ${DURATION}s at half its rate"
            r=$(measure "$mode" "$size")
            echo "   $r"
            R[$mode-$size]="${R[$mode-$size]:-}$r;"
        done
    done
done
if ip link add "bdwg$$" type wireguard 2>/dev/null; then
    ip link del "bdwg$$"
    WG="the kernel has WireGuard, but this script does not measure it yet"
else
    WG="not measured: this kernel ($(uname -r)) has no WireGuard (ip link add ... type wireguard: unknown device type)"
fi

# Where datagrams were lost, on the appliance's side (whatever is not here was lost
# in the hosts' namespace: the client's or the echo server's socket buffers on the
# shared CPU 0).
DROPS=$("${CTL[@]}" --json stats | python3 -c 'import json,sys
c=json.load(sys.stdin)["cores"][0]
d={f"{g}.{k}": v for g in ("queue","stack","proxy") for k, v in c[g].items()
   if isinstance(v, int) and v and any(w in k for w in ("drop","full","miss","no_buffer","too_big","foreign"))}
print(", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "none")')
echo "appliance-side drops over the run: $DROPS"
TABLE=$(python3 - "${R[plain-64]}" "${R[protected-64]}" "${R[plain-1200]}" "${R[protected-1200]}" "$WG" <<'PY'
import statistics, sys
def med(arg):
    rows = [list(map(float, r.split())) for r in arg.split(";") if r.strip()]
    return [statistics.median(col) for col in zip(*rows)]
p64, s64, p1200, s1200 = [med(x) for x in sys.argv[1:5]]
lines = ["| payload | relay | echoes/s (client-limited) | appliance busy µs per datagram | protected ÷ plain (cost) | round trip p50 / p99 at half load | delivered at half load |",
         "|---|---|---|---|---|---|---|"]
for size, p, s in ((64, p64, s64), (1200, p1200, s1200)):
    lines.append(f"| {size} B | plain RFC 1928 | {p[0]:,.0f} | {p[1]:.2f} | | {p[2]:.0f} / {p[3]:.0f} µs | {100*p[4]:.1f}% |")
    lines.append(f"| {size} B | secure datagrams | {s[0]:,.0f} | {s[1]:.2f} | {s[1]/p[1]:.2f} (goal ≤ 1.3) | {s[2]:.0f} / {s[3]:.0f} µs | {100*s[4]:.1f}% |")
lines.append(f"| | WireGuard | {sys.argv[5]} | | | | |")
print("\n".join(lines))
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## UDP relay: secure datagrams vs plain, $(date -u +%Y-%m-%d)"
        echo
        echo "Command: \`$CMD\`. Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r), DPDK $(pkg-config --modversion libdpdk). Appliance on CPU $LAST (one core, idle = busy); echo server and client (dgramload, one association, 32 in flight) on CPU 0."
        echo
        echo "$TABLE"
        echo
        echo "Appliance-side drop counters over the whole run: $DROPS."
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
