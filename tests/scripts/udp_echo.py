#!/usr/bin/env python3
"""A UDP echo server that logs one line per datagram it receives (its length and the
first 24 bytes in hex), so a test can count what reached it, and in which order.

usage: udp_echo.py IP PORT
"""
import socket, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("echoing", flush=True)
while True:
    d, a = s.recvfrom(65535)
    print(len(d), d[:24].hex(), flush=True)
    s.sendto(d, a)
