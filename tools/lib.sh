#!/usr/bin/env bash
# Shared by tools/demo.sh and tools/bench/*.sh (sourced, not run).

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
        target/release/appliancectl --socket "$sock" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the appliance did not start; its log:" >&2
    cat "$log" >&2
    return 1
}
