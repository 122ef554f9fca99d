"""Bulk both ways through a TLS echo: CONNS connections at once, each sending SIZE
bytes (its own pseudo-random stream) in 64 KiB rounds and reading every round back
before the next. Connections cycle through TLS 1.3 (the server's choice of suite:
Python cannot pick TLS 1.3 suites), TLS 1.2 AES-128-GCM, AES-256-GCM and ChaCha20. Prints one JSON object: per connection its
protocol, cipher, and "ok" or the error it saw.

Usage: bulk_client.py CA PORT CONNS SIZE
"""
import hashlib
import json
import socket
import ssl
import sys
import threading

KINDS = [
    (ssl.TLSVersion.TLSv1_3, None),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"),
    (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"),
]
ROUND = 65536


def stream(i, size):
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (i, block)).digest()
        block += 1
    return bytes(out[:size])


def run(ca, port, i, size, results):
    version, cipher = KINDS[i % len(KINDS)]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = version
    if cipher:
        ctx.set_ciphers(cipher)
    res = {"conn": i, "version": None, "cipher": None, "result": None}
    results[i] = res
    data = stream(i, size)
    try:
        with socket.create_connection(("10.77.0.1", port), timeout=60) as raw:
            with ctx.wrap_socket(raw, server_hostname="appliance.test") as s:
                res["version"], res["cipher"] = s.version(), s.cipher()[0]
                for at in range(0, size, ROUND):
                    chunk = data[at:at + ROUND]
                    s.sendall(chunk)
                    got = b""
                    while len(got) < len(chunk):
                        b = s.recv(len(chunk) - len(got))
                        if not b:
                            raise EOFError("echo ended after %d bytes" % (at + len(got)))
                        got += b
                    if got != chunk:
                        raise ValueError("echo differs at round %d" % (at // ROUND))
        res["result"] = "ok"
    except Exception as e:  # reported, not raised: the test reads every outcome
        res["result"] = "%s: %s" % (type(e).__name__, e)


def main():
    ca, port, conns, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    results = [None] * conns
    threads = [threading.Thread(target=run, args=(ca, port, i, size, results)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
