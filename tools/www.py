"""The demo's and benchmarks' HTTP backend: Python's static file server with a listen
backlog that load does not overflow (http.server's default of 5 drops SYNs under 16
concurrent connections, and each drop costs the client a 1 s SYN retransmission).

Usage: www.py ADDR PORT DIRECTORY [--tls CERT KEY]

With --tls it serves HTTPS (TLS 1.2 and 1.3, OpenSSL's session tickets on): the demo's
TLS backend behind a re-encrypting vserver.
"""
import functools
import http.server
import ssl
import sys


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    addr, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    handler = functools.partial(Handler, directory=root)
    server = Server((addr, port), handler)
    if sys.argv[4:5] == ["--tls"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
