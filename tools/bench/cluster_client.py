#!/usr/bin/env python3
"""The cluster bench's TLS client (Python's ssl over OpenSSL 3): TLS 1.2 full handshakes
that leave session IDs (no tickets), and resumptions of them elsewhere, with each
handshake's time as the client sees it. Used by tools/bench/cluster.sh.

  cluster_client.py CA full ADDR N             N full handshakes on ADDR: prints JSON
                                                 (p50/p99 ms)
  cluster_client.py CA both MAKE_ADDR RESUME_ADDR N
                                                 N sessions on MAKE_ADDR, each resumed once on
                                                 RESUME_ADDR: prints JSON (resumed, p50/p99 ms
                                                 of the resumptions)
  cluster_client.py CA roundrobin N ADDR...      N clients: each makes a session on one node
                                                 (in turn) and resumes it once on each node,
                                                 round robin: prints JSON (share resumed)
"""
import json
import socket
import ssl
import sys
import time


def ctx(ca):
    c = ssl.create_default_context(cafile=ca)
    c.maximum_version = ssl.TLSVersion.TLSv1_2
    c.options |= ssl.OP_NO_TICKET
    return c


def handshake(c, addr, session=None):
    t0 = time.perf_counter()
    s = socket.create_connection((addr, 443), timeout=5)
    t = c.wrap_socket(s, server_hostname="appliance.test", session=session)
    ms = (time.perf_counter() - t0) * 1000
    sess, reused = t.session, t.session_reused
    t.close()
    return sess, reused, ms


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else 0


def main():
    ca, mode = sys.argv[1], sys.argv[2]
    c = ctx(ca)
    if mode == "both":
        make, resume, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
        sessions = [handshake(c, make)[0] for _ in range(n)]
        times, reused = [], 0
        t0 = time.perf_counter()
        for s in sessions:
            _, r, ms = handshake(c, resume, s)
            reused += r
            times.append(ms)
        secs = time.perf_counter() - t0
        print(json.dumps({"n": n, "resumed": reused, "p50_ms": pct(times, 0.5),
                          "p99_ms": pct(times, 0.99), "secs": secs}))
    elif mode == "full":
        addr, n = sys.argv[3], int(sys.argv[4])
        times = [handshake(c, addr)[2] for _ in range(n)]
        print(json.dumps({"n": n, "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}))
    elif mode == "roundrobin":
        n, addrs = int(sys.argv[3]), sys.argv[4:]
        tries = reused = 0
        for k in range(n):
            home = k % len(addrs)
            s = handshake(c, addrs[home])[0]
            for j in range(1, len(addrs) + 1):
                _, r, _ = handshake(c, addrs[(home + j) % len(addrs)], s)
                tries += 1
                reused += r
        print(json.dumps({"clients": n, "resumptions": tries, "resumed": reused,
                          "share": reused / max(tries, 1)}))
    else:
        sys.exit("usage: see the docstring")


if __name__ == "__main__":
    main()
