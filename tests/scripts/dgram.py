#!/usr/bin/env python3
"""Datagrams through a tlsocks --udp port, with a sniffer on the tunnel's interface and
forged copies of what it saw (run in the hosts' namespace, as root).

usage: dgram.py IFACE APPLIANCE_IP LOCAL_PORT COUNT TARGET_IP:PORT [impaired]

1. Sends COUNT datagrams (distinct payloads of 20..1200 bytes, each carrying the marker
   "PLAINTEXT-MARK") to 127.0.0.1:LOCAL_PORT one at a time and waits for each echo;
   every UDP frame between APPLIANCE_IP and anyone but the target on IFACE (the
   client's leg) is captured meanwhile.
2. Re-sends, as raw frames on IFACE from the same addresses and ports: the last
   protected datagram the client sent, three times (replays); that datagram with a
   sequence number 1000 higher and a flipped tag byte (a forgery); a truncated one; one
   with an unknown flags byte; a plain RFC 1928 datagram to the same target.
3. Sends COUNT2 = 20 more datagrams through tlsocks (the window did not move).
Prints one JSON line: echoes intact, whether the marker was seen on the wire, what was
forged.

With "impaired" (the path loses, reorders and duplicates): sends the COUNT datagrams
in bursts of 20 instead, takes what comes back, and prints how many distinct echoes
came back intact, how many came twice, and how many were wrong.
"""
import json, socket, struct, sys, threading, time

iface, appliance, lport, count = sys.argv[1], socket.inet_aton(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
target = sys.argv[5].split(":")
target_ip = socket.inet_aton(target[0])
MARK = b"PLAINTEXT-MARK"
frames = []
stop = threading.Event()

raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
raw.bind((iface, 0))
raw.settimeout(0.1)

def sniff():
    while not stop.is_set():
        try:
            f = raw.recv(65535)
        except socket.timeout:
            continue
        if len(f) < 42 or f[12:14] != b"\x08\x00" or f[23] != 17:
            continue
        # Between the client and the relay: the relay's leg to the target is plain
        # by design (the target is an ordinary UDP server).
        if (f[26:30] == appliance or f[30:34] == appliance) and target_ip not in (f[26:30], f[30:34]):
            frames.append(f)

if len(sys.argv) > 6 and sys.argv[6] == "impaired":
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, seen, dup, wrong = {}, set(), 0, 0
    for burst in range(0, count, 20):
        for i in range(burst, min(burst + 20, count)):
            size = 20 + (i * 37) % 1181
            body = MARK + b"-i-%05d-" % i
            body = (body * (size // len(body) + 1))[:size]
            sent[body[:len(MARK) + 9]] = body
            c.sendto(body, ("127.0.0.1", lport))
        c.settimeout(0.3)
        while True:
            try:
                d, _ = c.recvfrom(65535)
            except socket.timeout:
                break
            key = d[:len(MARK) + 9]
            if sent.get(key) != d:
                wrong += 1
            elif key in seen:
                dup += 1
            else:
                seen.add(key)
    print(json.dumps({"sent": count, "echoed": len(seen), "twice": dup, "wrong": wrong}), flush=True)
    sys.exit(0)

t = threading.Thread(target=sniff)
t.start()
time.sleep(0.3)

def exchange(n, tag):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    ok = 0
    for i in range(n):
        size = 20 + (i * 37) % 1181
        body = (MARK + b"-%s-%05d-" % (tag, i))
        body = (body * (size // len(body) + 1))[:size]
        c.sendto(body, ("127.0.0.1", lport))
        try:
            d, _ = c.recvfrom(65535)
        except socket.timeout:
            continue
        if d == body:
            ok += 1
    return ok

first = exchange(count, b"a")
time.sleep(0.3)

def ip_checksum(h):
    s = 0
    for i in range(0, len(h), 2):
        s += (h[i] << 8) + h[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def with_payload(f, payload):
    """The frame f carrying payload instead (lengths and IP checksum fixed; UDP
    checksum 0: none, which IPv4 allows)."""
    ihl = (f[14] & 0x0F) * 4
    ip = bytearray(f[14:14 + ihl])
    struct.pack_into("!H", ip, 2, ihl + 8 + len(payload))
    struct.pack_into("!H", ip, 10, 0)
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    udp = bytearray(f[14 + ihl:14 + ihl + 8])
    struct.pack_into("!H", udp, 4, 8 + len(payload))
    struct.pack_into("!H", udp, 6, 0)
    return f[:14] + bytes(ip) + bytes(udp) + payload

def payload_of(f):
    ihl = (f[14] & 0x0F) * 4
    total = struct.unpack("!H", f[16:18])[0]
    return f[14 + ihl + 8:14 + total]

to_relay = [f for f in frames if f[30:34] == appliance and payload_of(f)[:1] == b"\x81"]
forged = {}
n0 = len(frames)
if to_relay:
    last = to_relay[-1]
    for _ in range(3):
        raw.send(last)
    forged["replays"] = 3
    p = bytearray(payload_of(last))
    seq = struct.unpack("!Q", p[5:13])[0]
    struct.pack_into("!Q", p, 5, seq + 1000)
    p[-1] ^= 1
    raw.send(with_payload(last, bytes(p)))
    forged["forgeries"] = 1
    raw.send(with_payload(last, payload_of(last)[:20]))
    forged["truncated"] = 1
    raw.send(with_payload(last, b"\x42" + payload_of(last)[1:]))
    forged["unknown_flags"] = 1
    # A plain datagram naming the same target.
    plain = b"\x00\x00\x00\x01" + socket.inet_aton(target[0]) + struct.pack("!H", int(target[1])) + b"plain " + MARK
    raw.send(with_payload(last, plain))
    forged["plain"] = 1
    time.sleep(0.3)
n1 = len(frames)
second = exchange(20, b"b")
time.sleep(0.2)
stop.set()
t.join()
# What crossed the wire, without the forged frames (the plain one carries the marker).
wire = b"".join(payload_of(f) for f in frames[:n0] + frames[n1:])
print(json.dumps({
    "sent": count, "echoed": first, "after": second,
    "frames": len(frames), "to_relay": len(to_relay),
    "marker_on_wire": MARK in wire,
    "forged": forged,
}), flush=True)
