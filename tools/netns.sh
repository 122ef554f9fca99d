#!/usr/bin/env bash
# Test network for the appliance: two network namespaces joined by a veth pair.
#
#   NAME-a   the appliance's namespace: holds NAME-a0, the end DPDK drives through
#            net_af_packet. No IP address on it: smoltcp owns 10.77.0.1, and with
#            the appliance in its own namespace nothing it receives can ever be
#            routed anywhere else by the kernel.
#   NAME-h   the hosts' namespace: NAME-h0 carries 10.77.0.2/24 and 10.77.0.3/24
#            (clients and backends live here).
#
# Offloads are off on both ends (otherwise af_packet sees unfinished checksums and
# 64 KiB super-segments) and IPv6 is off (no router solicitations on the wire).
#
#   tools/netns.sh up NAME      create (replacing any leftover of the same NAME)
#   tools/netns.sh down NAME    delete (deleting a namespace deletes its veth end)
#
# NETNS_MTU=9000 gives both ends that MTU (jumbo frames; the appliance then needs the
# same `mtu` in [dataplane] and an af_packet ring frame that holds one).
set -euo pipefail

cmd=${1:?usage: netns.sh up|down NAME}
name=${2:?usage: netns.sh up|down NAME}
if [ ${#name} -gt 10 ]; then
    echo "netns.sh: NAME must be at most 10 characters (interface names are limited to 15)" >&2
    exit 2
fi
A="$name-a"; H="$name-h"

down() {
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$H" 2>/dev/null || true
}

case "$cmd" in
up)
    down
    ip netns add "$A"
    ip netns add "$H"
    ip link add "${name}-a0" type veth peer name "${name}-h0"
    ip link set "${name}-a0" netns "$A"
    ip link set "${name}-h0" netns "$H"
    ip netns exec "$A" sysctl -qw "net.ipv6.conf.all.disable_ipv6=1"
    ip netns exec "$H" sysctl -qw "net.ipv6.conf.all.disable_ipv6=1"
    # The clients close first, so each connection they make waits 60 s in TIME_WAIT: at
    # thousands of connections per second one destination's 28,000 default ephemeral
    # ports run out and connect() slows down searching. Reuse TIME_WAIT ports (safe with
    # TCP timestamps) from a wider range, as load tools do. This namespace only.
    ip netns exec "$H" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65535"
    ip netns exec "$A" ip link set lo up
    ip netns exec "$H" ip link set lo up
    ip netns exec "$A" ip link set "${name}-a0" up
    ip netns exec "$H" ip addr add 10.77.0.2/24 dev "${name}-h0"
    ip netns exec "$H" ip addr add 10.77.0.3/24 dev "${name}-h0"
    ip netns exec "$H" ip link set "${name}-h0" up
    for ns_if in "$A:${name}-a0" "$H:${name}-h0"; do
        ip netns exec "${ns_if%%:*}" ethtool -K "${ns_if#*:}" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
        if [ -n "${NETNS_MTU:-}" ]; then
            ip netns exec "${ns_if%%:*}" ip link set "${ns_if#*:}" mtu "$NETNS_MTU"
        fi
    done
    ;;
down)
    down
    ;;
*)
    echo "netns.sh: unknown command $cmd (up|down)" >&2
    exit 2
    ;;
esac
