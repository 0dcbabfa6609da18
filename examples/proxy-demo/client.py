"""The demo's app: calls the `orders` service through the proxy sidecar on localhost, then
shows what the proxy saw. The app knows one address; balancing, retries and ejecting the broken
backend are the sidecar's work."""

from __future__ import annotations

import collections
import sys
import urllib.error
import urllib.request

ORDERS = "http://127.0.0.1:18001/"
PROXY_METRICS = "http://127.0.0.1:18190/metrics"
REQUESTS = 60


def main() -> None:
    answers: collections.Counter[str] = collections.Counter()
    failed = 0
    for _ in range(REQUESTS):
        try:
            with urllib.request.urlopen(ORDERS, timeout=5) as response:
                answers[response.read().decode().strip()] += 1
        except urllib.error.HTTPError as exc:
            failed += 1
            answers[f"HTTP {exc.code}"] += 1
    print(f"app: {REQUESTS} calls to {ORDERS}, {failed} failed", flush=True)
    for answer, count in sorted(answers.items()):
        print(f"app:   {count:3d} x {answer}", flush=True)
    with urllib.request.urlopen(PROXY_METRICS, timeout=5) as response:
        metrics = response.read().decode()
    print("app: the proxy's golden metrics for orders:", flush=True)
    for line in metrics.splitlines():
        if 'upstream="orders"' in line and line.startswith(
            ("request_total", "response_total", "endpoints_ejected", "ejections")
        ):
            print(f"app:   {line}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
