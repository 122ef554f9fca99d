"""A backend for the transmittal tests: each connection's first line names how it
writes (small pieces, with TCP_NODELAY so each piece leaves as its own segment).

    stream N    N bytes in 100-byte writes, then wait for the client to close
    http        answer "GET cl|chunked|204" lines with HTTP/1.1 responses written in
                100-byte pieces (1 ms apart), and "GET body SIZE PIECE" with a SIZE-byte
                body written in PIECE-byte pieces at once; keep-alive
    fin         300 bytes in three writes, then close
    psh         three rounds of: 300 bytes in one write, wait for a line
    timer       300 bytes in three writes, then wait for the client to close

Usage: transmit_backend.py ADDR PORT
"""
import socket
import sys
import threading
import time


def pieces(sock, data, size=100, pause=0.0002):
    for i in range(0, len(data), size):
        sock.sendall(data[i:i + size])
        time.sleep(pause)


def http_response(kind, size=0, piece=100):
    if kind == "body":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
        body = b"x" * size
        return [head] + [body[i:i + piece] for i in range(0, size, piece)]
    if kind == "cl":
        body = b"a" * 1000
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        return [head] + [body[i:i + 100] for i in range(0, len(body), 100)]
    if kind == "chunked":
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        return [head] + [b"64\r\n" + b"c" * 100 + b"\r\n" for _ in range(10)] + [b"0\r\n\r\n"]
    return [b"HTTP/1.1 204 No Content\r\n\r\n"]


def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = conn.makefile("rb")
    try:
        words = f.readline().split()
        if not words:
            return
        what = words[0].decode()
        if what == "stream":
            pieces(conn, bytes(i % 251 for i in range(int(words[1]))))
            f.read()
        elif what == "http":
            for line in f:
                w = line.split()
                if w[1] == b"body":
                    for p in http_response("body", int(w[2]), int(w[3])):
                        conn.sendall(p)
                    continue
                for p in http_response(w[1].decode()):
                    conn.sendall(p)
                    time.sleep(0.001)
        elif what == "fin":
            pieces(conn, b"f" * 300, pause=0.001)
        elif what == "psh":
            for _ in range(3):
                conn.sendall(b"p" * 300)
                f.readline()
        elif what == "timer":
            pieces(conn, b"t" * 300, pause=0.001)
            f.read()
    finally:
        conn.close()


def main():
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
