#!/usr/bin/env python3
"""Opens N TLS connections and holds them idle (tools/bench/tlsscale.sh).

    hold_tls.py HOST:PORT N --ca CA.pem --sni NAME [--in-flight 256] [--hold-secs 300]

Python's ssl (OpenSSL) as a real client: N connections are opened with at most
--in-flight handshakes at a time, each handshake completed, then nothing is sent. Prints
"held N" (or "held K of N, F failed: REASON" when some failed) once all are open, then
holds them until stdin closes or --hold-secs pass, and closes them all. Bounded in count
and time.
"""

import argparse
import asyncio
import resource
import ssl
import sys


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("count", type=int)
    p.add_argument("--ca", required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--in-flight", type=int, default=256)
    p.add_argument("--hold-secs", type=float, default=300.0)
    a = p.parse_args()
    if not 1 <= a.count <= 200_000:
        p.error("count must be 1..200000")
    host, port = a.target.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 64
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            print(f"RLIMIT_NOFILE hard limit {hard} is below {want}", file=sys.stderr)
            return 2
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    ctx = ssl.create_default_context(cafile=a.ca)
    gate = asyncio.Semaphore(a.in_flight)
    held = []
    failures = []

    async def one() -> None:
        async with gate:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port), ssl=ctx, server_hostname=a.sni),
                    timeout=30,
                )
                held.append(w)
            except Exception as e:  # noqa: BLE001 - any failure is counted and named
                failures.append(repr(e))

    await asyncio.gather(*(one() for _ in range(a.count)))
    if failures:
        print(f"held {len(held)} of {a.count}, {len(failures)} failed: {failures[0]}", flush=True)
    else:
        print(f"held {len(held)}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(stdin_closed, timeout=a.hold_secs)
    except asyncio.TimeoutError:
        pass
    for w in held:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in held), return_exceptions=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
