#!/usr/bin/env python3
"""Count the TCP segments of one TLS handshake on an interface (raw AF_PACKET socket).

usage: segments.py IFACE SERVER_IP SERVER_PORT SECONDS

Prints "ready" once capturing, then after SECONDS (or the first connection's FIN) one
JSON line: for the first connection to SERVER_IP:SERVER_PORT, the payload sizes of
every data segment in order with their direction, and which handshake message types the
server's first data segment carries in the clear.
"""
import json, socket, struct, sys, time

iface, server_ip, server_port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((iface, 0))
s.settimeout(0.2)
print("ready", flush=True)
server = socket.inet_aton(server_ip)
client_port = None
segs = []
seen = set()
end = time.time() + seconds
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
        continue
    ihl = (f[14] & 0x0F) * 4
    ip_total = struct.unpack("!H", f[16:18])[0]
    src, dst = f[26:30], f[30:34]
    t = 14 + ihl
    sport, dport, seq = struct.unpack("!HHI", f[t:t + 8])
    flags = f[t + 13]
    doff = (f[t + 12] >> 4) * 4
    payload = f[t + doff:14 + ip_total]
    if src == server and sport == server_port:
        direction, cport = "s", dport
    elif dst == server and dport == server_port:
        direction, cport = "c", sport
    else:
        continue
    if client_port is None:
        client_port = cport
    if cport != client_port:
        continue
    if payload and (direction, seq) not in seen:  # skip retransmissions
        seen.add((direction, seq))
        segs.append((direction, payload))
    if flags & 0x01 and direction == "s":
        break

first_server = next((p for d, p in segs if d == "s"), b"")
types = []
i = 0
while i + 5 <= len(first_server):
    typ, ln = first_server[i], struct.unpack("!H", first_server[i + 3:i + 5])[0]
    body = first_server[i + 5:i + 5 + ln]
    if typ == 22:
        j = 0
        while j + 4 <= len(body):
            mlen = int.from_bytes(body[j + 1:j + 4], "big")
            types.append(body[j])
            j += 4 + mlen
    else:
        types.append("record-%d" % typ)
    i += 5 + ln
print(json.dumps({
    "segments": [[d, len(p)] for d, p in segs],
    "first_server_messages": types,
    "first_server_len": len(first_server),
    "first_server_complete": i == len(first_server),
}), flush=True)
