"""An HTTPS/1.1 server with keep-alive for the loadgen tests, which counts what it
served so the tests can compare loadgen's counts with the server's view.

  GET /bytes/N   N bytes (N <= 64 MiB) with Content-Length, keep-alive
  GET /close/N   the same, then the server closes the connection (Connection: close)
  GET /status/C  an empty response with status C
  GET /stats     JSON: {"connections": handshakes completed, "requests": responses
                 sent before this one, "bytes": body bytes sent}

Usage: tls_http_server.py ADDR PORT CERT KEY
PORT 0 lets the kernel choose; the server prints "listening PORT" once it listens.
"""
import http.server
import json
import socketserver
import ssl
import sys
import threading

lock = threading.Lock()
counts = {"connections": 0, "requests": 0, "bytes": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with lock:
            counts["connections"] += 1

    def log_message(self, *args):
        pass

    def send_body(self, code, body, close=False):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        try:
            if parts[0] == "stats":
                with lock:
                    body = json.dumps(counts).encode()
                self.send_body(200, body)
                return
            n = int(parts[1])
            if parts[0] in ("bytes", "close") and 0 <= n <= 64 << 20:
                self.send_body(200, b"x" * n, close=parts[0] == "close")
                with lock:
                    counts["requests"] += 1
                    counts["bytes"] += n
                return
            if parts[0] == "status" and 100 < n < 600:
                self.send_body(n, b"")
                with lock:
                    counts["requests"] += 1
                return
        except (IndexError, ValueError):
            pass
        self.send_body(404, b"")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr, ctx):
        super().__init__(addr, Handler)
        self.ctx = ctx

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake runs in the connection's thread, not the accepting one.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


def main():
    addr, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = Server((addr, port), ctx)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
