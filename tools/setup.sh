#!/usr/bin/env bash
# Installs what building, testing and running the appliance needs on Debian 12, and
# nothing that is already there. Called by tools/demo.sh and tools/test.sh, so the
# README's two commands work on a fresh machine. Safe to run again.
#
#   tools/setup.sh            build + test + demo needs
#   tools/setup.sh --bench    also the benchmark peers (haproxy, nginx, wrk); tools/test.sh
#                             asks for them too, for the TLS suite's smoke run
set -euo pipefail

packages=(
    pkg-config libdpdk-dev dpdk   # DPDK 22.11: headers, libraries and PMD plugins
    build-essential                # cc for the DPDK shim
    iproute2 ethtool iputils-ping  # test networks: namespaces, veth, offloads, ping
    curl python3                   # clients and the demo/test HTTP backend
    libssl-dev openssl             # OpenSSL 3: libcrypto for the TLS engine, the CLI for test certificates
    python3-prometheus-client      # the tests parse the metrics endpoint with Prometheus' own parser
    util-linux                     # setpriv: the tests call the control socket as another user
    redis-server                   # session-store's repository tier: its tests start their own server
    nftables                       # the cluster tests drop a share of the cluster's datagrams (the kernel may lack netem)
    chromium                       # the status page test renders it in headless Chromium
)
if [ "${1:-}" = "--bench" ]; then
    packages+=(haproxy nginx-light wrk)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # nginx and haproxy are benchmark peers the scripts start themselves: keep Debian
    # from starting their system services on install (policy-rc.d, exit 101 = "not now").
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "setup: cargo is in \$HOME/.cargo/bin; add it to PATH" >&2
    else
        echo "setup: no Rust toolchain (cargo) found; install one with rustup (https://rustup.rs)" >&2
    fi
    exit 1
fi
