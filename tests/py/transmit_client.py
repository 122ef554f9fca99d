"""A TLS client that sees records: Python's ssl over memory BIOs, fed one record at a
time from the raw socket, so it reports how many application-data records carried
each piece of what it read (TLS 1.3 session tickets carry none and are not counted).

Usage: transmit_client.py CAFILE PORT SCENARIO [ARGS]   (scenarios: transmit_backend.py;
"stream N", and "bench COUNT SIZE PIECE": COUNT requests for a SIZE-byte body)
Prints one JSON object: records (plaintext bytes per record), and per scenario step
the records it took and how long it waited.
"""
import json
import socket
import ssl
import sys
import time

from transmit_backend import http_response

ca, port, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
raw = socket.create_connection(("10.77.0.1", port), timeout=10)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="appliance.test")
pending = b""   # raw bytes not yet split into records
records = []    # plaintext bytes per record that carried application data
eof = False


def flush():
    data = out.read()
    if data:
        raw.sendall(data)


def next_record():
    """Feeds one whole record into the TLS object; False at the end of the stream."""
    global pending, eof
    while len(pending) < 5 or len(pending) < 5 + int.from_bytes(pending[3:5], "big"):
        b = raw.recv(65536)
        if not b:
            eof = True
            return False
        pending += b
    n = 5 + int.from_bytes(pending[3:5], "big")
    inc.write(pending[:n])
    pending = pending[n:]
    return True


while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        flush()
        if not next_record():
            sys.exit("closed during the handshake")
flush()


def send(b):
    tls.write(b)
    flush()


def read_exactly(n):
    """Reads n plaintext bytes; returns (records they came in, seconds waited)."""
    t0 = time.monotonic()
    got, recs = 0, 0
    while got < n:
        if not next_record():
            sys.exit(f"stream ended after {got} of {n} bytes")
        try:
            b = tls.read(1 << 20)
        except ssl.SSLWantReadError:
            continue  # a record with no application data
        except ssl.SSLZeroReturnError:
            b = b""
        if not b:
            sys.exit(f"close_notify after {got} of {n} bytes")
        records.append(len(b))
        recs += 1
        got += len(b)
    return recs, time.monotonic() - t0


result = {"version": tls.version(), "steps": []}
if scenario == "stream":
    n = int(sys.argv[4])
    send(b"stream %d\n" % n)
    r, dt = read_exactly(n)
    result["steps"].append({"records": r, "seconds": dt})
elif scenario == "http":
    send(b"http\n")
    for kind in ["cl", "chunked", "204"]:
        send(b"GET %s\n" % kind.encode())
        r, dt = read_exactly(sum(len(p) for p in http_response(kind)))
        result["steps"].append({"records": r, "seconds": dt, "kind": kind})
elif scenario == "bench":
    # COUNT responses of SIZE body bytes written in PIECE-byte pieces, one at a time.
    count, size, piece = (int(x) for x in sys.argv[4:7])
    send(b"http\n")
    want = sum(len(p) for p in http_response("body", size, piece))
    for _ in range(count):
        send(b"GET body %d %d\n" % (size, piece))
        r, dt = read_exactly(want)
        result["steps"].append({"records": r, "seconds": dt})
elif scenario == "psh":
    send(b"psh\n")
    for _ in range(3):
        r, dt = read_exactly(300)
        result["steps"].append({"records": r, "seconds": dt})
        send(b"next\n")
elif scenario in ("fin", "timer"):
    t0 = time.monotonic()
    send(scenario.encode() + b"\n")
    r, _ = read_exactly(300)
    result["steps"].append({"records": r, "seconds": time.monotonic() - t0})
    if scenario == "fin":
        # Then close_notify and the end of the stream.
        # (Python's SSLObject returns b"" for a close_notify, or raises.)
        try:
            while next_record():
                try:
                    if tls.read(1 << 20) == b"":
                        result["close_notify"] = True
                except ssl.SSLWantReadError:
                    continue
        except ssl.SSLZeroReturnError:
            result["close_notify"] = True
result["records"] = records
print(json.dumps(result))
