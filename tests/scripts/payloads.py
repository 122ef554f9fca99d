#!/usr/bin/env python3
"""Capture the TCP and UDP payloads to and from one address:port on an interface (raw
AF_PACKET socket), for checking that nothing readable crosses it.

usage: payloads.py IFACE IP PORT SECONDS OUTFILE

Prints "ready" once capturing; after SECONDS writes every payload seen, in order, to
OUTFILE and prints one JSON line: {"segments": N, "bytes": B}.
"""
import json, socket, struct, sys, time

iface, ip, port, seconds, out = sys.argv[1], socket.inet_aton(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((iface, 0))
s.settimeout(0.2)
print("ready", flush=True)
data = bytearray()
n = 0
end = time.time() + seconds
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] not in (6, 17):
        continue
    ihl = (f[14] & 0x0F) * 4
    ip_total = struct.unpack("!H", f[16:18])[0]
    src, dst = f[26:30], f[30:34]
    t = 14 + ihl
    sport, dport = struct.unpack("!HH", f[t:t + 4])
    if not ((src == ip and sport == port) or (dst == ip and dport == port)):
        continue
    hl = (f[t + 12] >> 4) * 4 if f[23] == 6 else 8
    payload = f[t + hl:14 + ip_total]
    if payload:
        n += 1
        data += payload
with open(out, "wb") as fh:
    fh.write(data)
print(json.dumps({"segments": n, "bytes": len(data)}), flush=True)
