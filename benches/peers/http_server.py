"""CPython http.server peer for the HTTP benchmark (benches/http.rs).

Usage: http_server.py --bind HOST:PORT --directory DIR

Serves as `python3 -m http.server --protocol HTTP/1.1 --bind HOST --directory DIR PORT`
does (ThreadingHTTPServer: a thread per connection; SimpleHTTPRequestHandler with
protocol_version HTTP/1.1, so connections are kept alive; the access log on stderr), and
differs from it only where a default would measure something other than the server, as the
echo peers do:

- TCP_NODELAY on. The handler sends a response's head and body in two writes; with Nagle's
  algorithm on, the body of a response on a kept-alive connection waits for the client's
  delayed ACK of the head (about 40 ms per request on Linux).
- request_queue_size = 1024 (sockserve's default). The default of 5 drops SYNs when wrk
  opens its connections at once, and each dropped SYN costs a 1 s retransmission.

Prints "listening on HOST:PORT" as its first stdout line, then serves forever (the harness
kills the process group).
"""

import argparse
import functools
import http.server


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--directory", required=True, help="the directory to serve")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    handler = functools.partial(Handler, directory=args.directory)
    with Server((host, int(port)), handler) as server:
        address, bound = server.server_address[:2]
        print(f"listening on {address}:{bound}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
