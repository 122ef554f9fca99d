"""The demo's and benchmarks' HTTP backend: Python's static file server with a listen
backlog that load does not overflow (http.server's default of 5 drops SYNs under 16
concurrent connections, and each drop costs the client a 1 s SYN retransmission).

Usage: www.py ADDR PORT DIRECTORY
"""
import functools
import http.server
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
    Server((addr, port), handler).serve_forever()


if __name__ == "__main__":
    main()
