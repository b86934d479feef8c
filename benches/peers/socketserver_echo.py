"""CPython socketserver echo peers for the sockserve benchmark harness.

Usage: socketserver_echo.py {threading|forking|sync|udp} --bind HOST:PORT [--max-children N]

Prints "listening on HOST:PORT" as its first stdout line, then serves forever
(the harness kills the process group). Configuration differs from the stdlib
defaults only where a default would measure something other than the server:
request_queue_size = 1024 (the default of 5 drops SYNs under churn; sockserve's
default is 1024), TCP_NODELAY on (every server in the harness sets it) and
max_children raised above the workload's connection count (all forking
servers in the harness get the same cap).
"""

import argparse
import resource
import socketserver


class StreamEcho(socketserver.StreamRequestHandler):
    """Ping-pong echo: whatever is available is written back (not line-based).

    A reset connection (the load generator closes with RST) ends the request
    like EOF, as in every other server of the harness.
    """

    disable_nagle_algorithm = True

    def handle(self):
        read1 = self.rfile.read1
        write = self.wfile.write
        while True:
            try:
                data = read1(65536)
            except ConnectionResetError:
                return
            if not data:
                return
            write(data)


class DatagramEcho(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read())


class Tuning:
    request_queue_size = 1024


class SyncServer(Tuning, socketserver.TCPServer):
    pass


class ThreadingServer(Tuning, socketserver.ThreadingTCPServer):
    pass


class ForkingServer(Tuning, socketserver.ForkingTCPServer):
    pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["threading", "forking", "sync", "udp"])
    p.add_argument("--bind", required=True)
    p.add_argument("--max-children", type=int, default=40)
    a = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    host, port = a.bind.rsplit(":", 1)
    address = (host, int(port))
    if a.kind == "udp":
        server = socketserver.UDPServer(address, DatagramEcho)
    elif a.kind == "sync":
        server = SyncServer(address, StreamEcho)
    elif a.kind == "threading":
        server = ThreadingServer(address, StreamEcho)
    else:
        ForkingServer.max_children = a.max_children
        server = ForkingServer(address, StreamEcho)
    print("listening on %s:%d" % server.server_address[:2], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
