#!/usr/bin/env bash
# Shared by tools/demo.sh and tools/bench/*.sh (sourced, not run).

# Where the binaries are: target/release unless the caller set BIN (the suite's CI smoke
# run uses the debug build the tests already made).
BIN=${BIN:-target/release}

# stop_pids PID...: TERM each process this script started, KILL what is left after 5 s.
stop_pids() {
    local pid
    for pid in "$@"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        [ -n "$pid" ] || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# wait_control SOCKET LOG: wait up to 10 s for the appliance's control socket; on
# failure print the appliance's log and return 1.
wait_control() {
    local sock=$1 log=$2
    for _ in $(seq 100); do
        "$BIN/appliancectl" --socket "$sock" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the appliance did not start; its log:" >&2
    cat "$log" >&2
    return 1
}

# test_net PREFIX [EXTRA_CLEANUP]: a work directory and the test network (tools/netns.sh
# up), with an EXIT trap (test_net_cleanup) that stops every PID in PIDS, runs
# EXTRA_CLEANUP (shell code, e.g. removing a namespace of the script's own), and deletes
# the namespaces and the work directory. Sets NAME, WORK, PIDS and H (the command
# prefix that runs in the hosts' namespace).
test_net() {
    NAME=$1$$; NAME=${NAME:0:10}
    WORK=$(mktemp -d "/tmp/appliance-$1.XXXXXX")
    PIDS=()
    TEST_NET_EXTRA_CLEANUP=${2:-}
    trap test_net_cleanup EXIT
    tools/netns.sh up "$NAME"
    H=(ip netns exec "$NAME-h")
}

test_net_cleanup() {
    # Only the processes this script started, by PID.
    stop_pids "${PIDS[@]:-}"
    if [ -n "${TEST_NET_EXTRA_CLEANUP:-}" ]; then eval "$TEST_NET_EXTRA_CLEANUP" || true; fi
    tools/netns.sh down "$NAME" || true
    rm -rf "$WORK"
}

# need_two_cpus: sets LAST, the last CPU (the servers' core; CPU 0 is the load's), or
# exits: the benchmarks pin servers and load apart.
need_two_cpus() {
    LAST=$(($(nproc) - 1))
    if [ "$LAST" -lt 1 ]; then echo "needs two CPUs" >&2; exit 1; fi
}

# pinned NAME PID CPU: waits up to 5 s until every thread of PID may run on CPU alone,
# or exits: a peer that is not pinned shares the load's CPU and its figures mean
# something else (HAProxy 2.6 ignores `cpu-map 1/1 N` with one thread, silently).
pinned() {
    local name=$1 pid=$2 cpu=$3 got=""
    for _ in $(seq 50); do
        got=$(cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^Cpus_allowed_list/ {print $2}' | sort -u | paste -sd' ')
        [ "$got" = "$cpu" ] && return 0
        sleep 0.1
    done
    echo "$name (pid $pid) may run on CPUs ${got:-?}, not on CPU $cpu alone: its pinning did not take" >&2
    exit 1
}

# bench_toml_head [CORES [IDLE]]: the appliance configuration the benchmarks share (after
# test_net and need_two_cpus): the DPDK port on the veth, the poll-mode cores (default:
# one on LAST; a list such as "0, 1" gets as many af_packet queue pairs), the idle policy
# (default busy), the control socket in WORK. Each bench appends its own [crypto] and
# [[vserver]] tables. VDEV_EXTRA (e.g. "qdisc_bypass=1,framecnt=2048") is added to the
# af_packet vdev's arguments, for experiments with the port's ring. With NETNS_MTU (jumbo
# frames on every veth) the port gets that MTU and a ring frame that holds one.
bench_toml_head() {
    local cores=${1:-$LAST} idle=${2:-busy} vdev="net_af_packet0,iface=$NAME-a0${VDEV_EXTRA:+,$VDEV_EXTRA}"
    local n mtu=""
    if [ -n "${NETNS_MTU:-}" ]; then
        vdev="$vdev,framesz=10240,blocksz=40960"
        mtu="mtu = $NETNS_MTU"
    fi
    n=$(echo "$cores" | tr ',' '\n' | wc -l)
    [ "$n" -gt 1 ] && vdev="$vdev,qpairs=$n"
    cat <<TOML
[dataplane]
driver = "dpdk"
eal_args = ["--no-huge", "--no-pci", "-m", "512", "--vdev=$vdev"]
cores = [$cores]
address = "10.77.0.1/24"
idle = "$idle"
mbufs_per_queue = 8191
$mtu
${LOOP_PHASES:+loop_phases = true}
[control]
socket = "$WORK/control.sock"
stats_interval = "0s"
TOML
}

# bench_ec_cert: a self-signed ECDSA P-256 certificate for bench.test (SAN too) in
# $WORK/ec.pem with its key in $WORK/ec.key, for the benchmarks' TLS vservers.
bench_ec_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.test \
        -addext "subjectAltName=DNS:bench.test" -keyout "$WORK/ec.key" -out "$WORK/ec.pem" 2>/dev/null
}

# bench_tls_vserver NAME LISTEN CERT [BACKEND]: an HTTP-aware `tls` vserver in front of
# BACKEND (default the benchmarks' backend, 10.77.0.2:8080) with $WORK/CERT.pem and
# CERT.key, as TOML.
bench_tls_vserver() {
    cat <<TOML
[[vserver]]
name = "$1"
listen = "$2"
mode = "tls"
backends = ["${4:-10.77.0.2:8080}"]
[vserver.tls]
certificates = [{ chain = "$3.pem", key = "$3.key" }]
[vserver.transmit]
http = true
TOML
}

# appliance_busy_s: the busy seconds of the appliance's poll-mode cores so far (their
# loop-cycle accounting), asked through the control socket in the array CTL.
appliance_busy_s() {
    "${CTL[@]}" --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(c["loops"]["busy_cycles"] for c in s["cores"]) / s["cycles_per_second"])'
}

# kernel_peer_net: after test_net, a third namespace NAME-k for the kernel-stack peers
# (nginx, HAProxy) at 10.77.1.1, joined to the hosts' namespace by a second veth, where
# the hosts get 10.77.1.2 and 10.77.1.3. The caller's test_net cleanup must delete NAME-k.
kernel_peer_net() {
    ip netns add "$NAME-k"
    ip link add "$NAME-k0" type veth peer name "$NAME-h1"
    ip link set "$NAME-k0" netns "$NAME-k"
    ip link set "$NAME-h1" netns "$NAME-h"
    ip netns exec "$NAME-k" ip link set lo up
    ip netns exec "$NAME-k" ip addr add 10.77.1.1/24 dev "$NAME-k0"
    ip netns exec "$NAME-k" ip link set "$NAME-k0" up
    ip netns exec "$NAME-h" ip addr add 10.77.1.2/24 dev "$NAME-h1"
    ip netns exec "$NAME-h" ip addr add 10.77.1.3/24 dev "$NAME-h1"
    ip netns exec "$NAME-h" ip link set "$NAME-h1" up
    if [ -n "${NETNS_MTU:-}" ]; then
        ip netns exec "$NAME-k" ip link set "$NAME-k0" mtu "$NETNS_MTU"
        ip netns exec "$NAME-h" ip link set "$NAME-h1" mtu "$NETNS_MTU"
    fi
}

# backend_nginx NAME: the benchmarks' HTTP backend, one nginx worker on CPU 0 in the hosts'
# namespace serving $WORK/www on port 8080 of every hosts' address, keep-alive without
# limit. Config, pid and error log are $WORK/NAME.{conf,pid,err}; the PID goes in PIDS.
backend_nginx() {
    local name=$1
    cat > "$WORK/$name.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/$name.pid;
error_log $WORK/$name.err;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    server { listen 8080 reuseport backlog=4096; root $WORK/www; }
}
CONF
    "${H[@]}" taskset -c 0 nginx -c "$WORK/$name.conf" &
    PIDS+=($!)
}
