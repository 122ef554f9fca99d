#!/usr/bin/env python3
"""Where a poll-mode core's time goes, by phase of the loop, from a perf profile.

    PERF=/tmp/r.perf PERF_CELL=resume12 PERF_CALL_GRAPH="--call-graph dwarf,16384" \\
        bash tools/bench/tls.sh --only resume12 --seconds 5 --no-record --json /tmp/r.json
    perf script -i /tmp/r.perf | python3 tools/bench/perf_phases.py [--per N --unit hs]

Each sample of the appliance's poll thread is given to the phase of the loop it was
taken in: the most specific phase (see PHASES) that any frame below `Driver::poll_once`
names, inlined frames included, so malloc, memcpy and libcrypto count where they were
called from. With `--per N` (the
cell's operations, e.g. handshakes from the JSON file) and `--secs S` (the cell's length)
it prints µs of the core per operation for each phase: perf's cpu-clock samples of a
busy-polling thread cover the whole core, idle polls included.
"""

import argparse
import re
import sys

# (phase, pattern on a frame's symbol), most specific first: a sample goes to the first
# phase any frame of its stack (below the loop) matches, so a handshake job that a
# connection handler ran inline counts as the job, and the engine's record work inside
# a handler's step as the engine.
PHASES = [
    ("handshake crypto jobs (run inline)", r"crypto_offload::job::run|Offload::run_jobs"),
    ("record jobs", r"Offload::(submit_records|lend)|RecordJob"),
    ("TLS engine (messages, records, transcript)", r"^tls::"),
    ("TX: af_packet kick (sendto), with the softirqs it runs (the peer's kernel TCP)",
     r"__libc_sendto|packet_sendmsg|tlsa_tx_burst"),
    ("RX: af_packet ring burst", r"PortQueue>::rx_burst|tlsa_rx_burst"),
    ("TCP ingress: flow table and smoltcp", r"netstack::Stack<T>::ingress"),
    ("TCP egress and TCP timers", r"netstack::Stack<T>::(egress|poll_timers)"),
    ("steering channels between cores", r"SteerEndpoint|crossbeam_channel"),
    ("driver timers", r"driver::timers|fire_timers|timer_wheel"),
    ("connection handlers (accept, pumps, close)",
     r"appliance::conn::|driver::Conns<H>::|Handler>::step"),
    ("core housekeeping (stats, control)", r"housekeeping"),
    ("clock reads", r"now_us|clock_gettime|Instant"),
]


def frames(block):
    """The symbols of one sample's stack, root first."""
    out = []
    for line in block.split("\n")[1:]:
        line = line.strip()
        if not line:
            continue
        m = re.match(r"[0-9a-f]+ (.*?)(\+0x[0-9a-f]+)? \(", line)
        out.append(m.group(1) if m else line)
    return list(reversed(out))


def phase_of(stack):
    """The phase of one sample (its stack root first)."""
    loop = [i for i, f in enumerate(stack) if "poll_once" in f]
    below = stack[loop[-1] + 1:] if loop else stack
    for name, pat in PHASES:
        if any(re.search(pat, f) for f in below):
            return name
    if loop:
        return "the loop itself (poll_once)"
    if any("run_poll_loop" in f for f in stack):
        return "between iterations: the idle spin and the loop's cycle accounting"
    return "unattributed (a stack perf could not unwind to the loop)"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--per", type=float, help="operations in the profiled cell")
    p.add_argument("--secs", type=float, help="the cell's length in seconds")
    p.add_argument("--unit", default="op")
    p.add_argument("--thread", default="poll-core")
    a = p.parse_args()
    text = sys.stdin.read()
    counts = {}
    total = 0
    for block in re.split(r"\n(?=\S)", text):
        if not block.startswith(a.thread):
            continue
        ph = phase_of(frames(block))
        counts[ph] = counts.get(ph, 0) + 1
        total += 1
    if not total:
        sys.exit(f"no samples of a thread named {a.thread}*")
    per = a.per and a.secs and a.secs * 1e6 / a.per
    head = f"| phase | share of the core | µs per {a.unit} |" if per else "| phase | share of the core |"
    print(head)
    print("|---|---:|---:|" if per else "|---|---:|")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        share = n / total
        if per:
            print(f"| {name} | {100 * share:.1f}% | {share * per:.2f} |")
        else:
            print(f"| {name} | {100 * share:.1f}% |")
    if per:
        print(f"| all of the core (samples: {total}) | 100% | {per:.2f} |")


if __name__ == "__main__":
    main()
