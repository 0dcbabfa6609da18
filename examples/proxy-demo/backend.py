"""One backend of the demo's `orders` service: answers GET / with its port, or, with --fail,
always 503 (a broken instance the proxy should stop sending traffic to)."""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--fail", action="store_true", help="answer every request with 503")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status = 503 if args.fail else 200
            body = f"orders backend on port {args.port}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *values: object) -> None:
            pass  # the proxy's metrics tell the story

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    state = "failing (503 to everything)" if args.fail else "healthy"
    print(f"orders backend on 127.0.0.1:{args.port}, {state}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
