"""The quickstart's app: writes JSON logs to a directory and serves Prometheus metrics.

It knows nothing about sidecars. After a few seconds it asks the metrics sidecar for what it
serves (to show the pod's labels on its own series) and exits, which ends the demo pod.
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

REQUESTS = {"/": 0, "/items": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = "# HELP demo_requests_total Requests handled.\n# TYPE demo_requests_total counter\n"
        body += "".join(f'demo_requests_total{{route="{r}"}} {n}\n' for r, n in REQUESTS.items())
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = Path(args.log_dir) / "app.log"
    print(f"demo app: serving /metrics on :{args.port}, writing logs to {log}", flush=True)
    end = time.time() + args.seconds
    n = 0
    while time.time() < end:
        route = "/items" if n % 3 else "/"
        REQUESTS[route] += 1
        with log.open("a") as f:
            f.write(
                json.dumps({"level": "info", "msg": "handled request", "route": route, "n": n})
                + "\n"
            )
        n += 1
        time.sleep(0.5)
    try:
        with urllib.request.urlopen("http://127.0.0.1:15101/metrics", timeout=2) as response:
            lines = [
                ln
                for ln in response.read().decode().splitlines()
                if ln.startswith("demo_requests_total")
            ]
        print("demo app: the metrics sidecar serves my series with the pod's labels:", flush=True)
        for line in lines:
            print(f"demo app:   {line}", flush=True)
    except OSError as exc:
        print(f"demo app: could not reach the metrics sidecar: {exc}", flush=True)
    print("demo app: done", flush=True)


if __name__ == "__main__":
    main()
