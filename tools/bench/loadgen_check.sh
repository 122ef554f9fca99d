#!/usr/bin/env bash
# Validates loadgen's handshake rate against `openssl s_time` where both measure the
# same thing: one connection at a time, a full handshake each, no certificate check,
# against `openssl s_server -www` and nginx (one worker) on loopback. Also shows what
# loadgen reaches with 16 connections in flight from the same single client core.
#
#   bash tools/bench/loadgen_check.sh [--seconds N] [--no-record]
#
# Servers are pinned to the last CPU, clients to CPU 0. s_time's own "real seconds" is
# a whole number, so its rate here is its connection count over the wall time of the
# run, measured around it.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_RUN=5
RECORD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --no-record) RECORD=0; shift ;;
    *) echo "usage: loadgen_check.sh [--seconds N] [--no-record]" >&2; exit 2 ;;
    esac
done
case "$SECONDS_RUN" in ''|*[!0-9]*) echo "--seconds: a whole number of seconds" >&2; exit 2 ;; esac
CMD="bash tools/bench/loadgen_check.sh --seconds $SECONDS_RUN"

tools/setup.sh --bench
cargo build --release -q -p tools

. tools/lib.sh
need_two_cpus
WORK=$(mktemp -d /tmp/appliance-lgcheck.XXXXXX)
PIDS=()
trap 'stop_pids "${PIDS[@]:-}"; rm -rf "$WORK"' EXIT
chmod 755 "$WORK"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
P_S=24431
P_N=24432
taskset -c "$LAST" openssl s_server -accept "127.0.0.1:$P_S" -cert "$WORK/cert.pem" -key "$WORK/key.pem" \
    -www -quiet </dev/null >"$WORK/s_server.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity $(python3 -c "print(format(1 << $LAST, 'b'))");
daemon off;
user root;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$P_N ssl;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / { return 200 "ok\n"; }
    }
}
CONF
nginx -c "$WORK/nginx.conf" &
PIDS+=($!)
for p in $P_S $P_N; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

# s_time_rate PORT FLAG: full handshakes per wall-clock second, one at a time.
s_time_rate() {
    local t0 t1 n
    t0=$(date +%s.%N)
    n=$(taskset -c 0 openssl s_time -connect "127.0.0.1:$1" -new "$2" -time "$SECONDS_RUN" 2>&1 \
        | awk '/connections in .* real seconds/ {print $1}')
    t1=$(date +%s.%N)
    python3 -c "print(f'{$n / ($t1 - $t0):.1f}')"
}
# loadgen_rate PORT VERSION CONCURRENCY: handshakes per second and the error count.
loadgen_rate() {
    taskset -c 0 "$BIN/loadgen" --target "127.0.0.1:$1" --no-verify --mode full --tls "$2" \
        --concurrency "$3" --duration "${SECONDS_RUN}s" --json --quiet \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["handshakes_per_sec"], d["error_count"])'
}

ROWS=()
for v in 1.3 1.2; do
    flag="-tls1_${v#1.}"
    for server in s_server nginx; do
        if [ $server = s_server ]; then port=$P_S; else port=$P_N; fi
        echo "== TLS $v against $server: s_time -new, loadgen --concurrency 1, loadgen --concurrency 16 (${SECONDS_RUN} s each)"
        st=$(s_time_rate "$port" "$flag")
        read -r lg lg_err < <(loadgen_rate "$port" "$v" 1)
        read -r lg16 lg16_err < <(loadgen_rate "$port" "$v" 16)
        echo "   s_time $st/s, loadgen $lg/s ($lg_err errors), loadgen x16 $lg16/s ($lg16_err errors)"
        ROWS+=("$v $server $st $lg $lg_err $lg16 $lg16_err")
    done
done

TABLE=$(python3 - "${ROWS[@]}" <<'PY'
import sys
out = ["| TLS | server | s_time -new (hs/s) | loadgen, 1 connection (hs/s) | loadgen ÷ s_time | loadgen, 16 connections (hs/s) | errors |",
       "|---|---|---:|---:|---:|---:|---:|"]
for row in sys.argv[1:]:
    v, server, st, lg, e1, lg16, e16 = row.split()
    st, lg, lg16 = float(st), float(lg), float(lg16)
    out.append(f"| {v} | {server} | {st:,.0f} | {lg:,.0f} | {lg / st:.2f} | {lg16:,.0f} | {int(e1) + int(e16)} |")
print("\n".join(out))
PY
)
echo
echo "$TABLE"
if [ "$RECORD" = 1 ]; then
    {
        echo
        echo "## loadgen validated against openssl s_time, $(date -u +%Y-%m-%d)"
        echo
        echo "Command: \`$CMD\`. Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(. /etc/os-release; echo "$PRETTY_NAME"), $(openssl version | cut -d' ' -f1-2), $(nginx -v 2>&1 | cut -d' ' -f3)."
        echo "ECDSA P-256 certificate, default groups and suites, no certificate verification on either client; servers on CPU $LAST, clients on CPU 0, loopback."
        echo
        echo "$TABLE"
    } >> BENCHMARKS.md
    echo "(appended to BENCHMARKS.md)"
fi
