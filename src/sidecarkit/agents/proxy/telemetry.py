"""The proxy's golden metrics, named as Linkerd names them, and their text exposition.

``request_total``, ``response_total{classification,status_code}``, ``response_latency_ms``
(histogram, Linkerd's buckets), ``tcp_open_connections``, ``tcp_open_total``,
``tcp_close_total``, ``tcp_read_bytes_total`` and ``tcp_write_bytes_total``, each labelled
``direction`` (inbound, outbound), ``upstream`` (the service) and, for requests, ``endpoint``
(the address that answered); TCP series carry ``peer`` (``src``: the client side, ``dst``: the
endpoint side). Dashboards written for Linkerd's proxy read them with the label names changed.

On the hot path a request costs a few integer additions on a per-series object found once per
connection or endpoint, not a label-tuple lookup per metric; rendering does the rest at scrape
time. No I/O here.
"""

from __future__ import annotations

import bisect
from typing import Final

__all__ = ["LATENCY_BUCKETS_MS", "Registry", "RequestSeries", "TcpSeries"]

LATENCY_BUCKETS_MS: Final = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)  # fmt: skip
_BOUNDS: Final = tuple(float(b) for b in LATENCY_BUCKETS_MS)


class RequestSeries:
    """Requests through one (direction, upstream, endpoint)."""

    __slots__ = (
        "buckets", "grpc", "labels", "latency_sum", "local", "requests", "responses", "retries",
    )  # fmt: skip

    def __init__(self, labels: str, *, local: bool = False) -> None:
        self.labels = labels
        self.local = local
        """The proxy's own answers (no endpoint): shown once there is one, not as a stray 0."""
        self.requests = 0
        self.responses: dict[int, int] = {}
        self.buckets = [0] * (len(_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.retries = 0
        self.grpc: dict[tuple[int, int], int] = {}
        """gRPC responses by (HTTP status, ``grpc-status``)."""

    def respond(self, status: int, seconds: float) -> None:
        responses = self.responses
        responses[status] = responses.get(status, 0) + 1
        ms = seconds * 1000.0
        self.buckets[bisect.bisect_left(_BOUNDS, ms)] += 1
        self.latency_sum += ms

    def respond_grpc(self, status: int, grpc_status: int | None, seconds: float) -> None:
        """An HTTP/2 response; with ``grpc_status`` it is counted with that label (Linkerd's
        classification: any status but OK is a failure)."""
        if grpc_status is None:
            self.respond(status, seconds)
            return
        key = (status, grpc_status)
        self.grpc[key] = self.grpc.get(key, 0) + 1
        ms = seconds * 1000.0
        self.buckets[bisect.bisect_left(_BOUNDS, ms)] += 1
        self.latency_sum += ms


class TcpSeries:
    """Connections on one side of one listener."""

    __slots__ = ("closed", "labels", "open", "opened", "read", "written")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.open = 0
        self.opened = 0
        self.closed = 0
        self.read = 0
        self.written = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**pairs: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


class Registry:
    """Every series of one proxy process, plus gauges read from the running agent."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], RequestSeries] = {}
        self.tcp: dict[tuple[str, str, str], TcpSeries] = {}
        self.gauges: dict[str, tuple[str, dict[str, float]]] = {}
        self.counters: dict[str, tuple[str, dict[str, float]]] = {}

    def request_series(self, direction: str, upstream: str, endpoint: str) -> RequestSeries:
        key = (direction, upstream, endpoint)
        series = self.requests.get(key)
        if series is None:
            labels = _labels(direction=direction, upstream=upstream, endpoint=endpoint)
            series = self.requests[key] = RequestSeries(labels, local=not endpoint)
        return series

    def tcp_series(self, direction: str, upstream: str, peer: str) -> TcpSeries:
        key = (direction, upstream, peer)
        series = self.tcp.get(key)
        if series is None:
            labels = _labels(direction=direction, upstream=upstream, peer=peer)
            series = self.tcp[key] = TcpSeries(labels)
        return series

    def set_gauge(self, name: str, help_text: str, labels: dict[str, str], value: float) -> None:
        self.gauges.setdefault(name, (help_text, {}))[1][_labels(**labels)] = value

    def add_counter(self, name: str, help_text: str, labels: dict[str, str], amount: float) -> None:
        values = self.counters.setdefault(name, (help_text, {}))[1]
        key = _labels(**labels)
        values[key] = values.get(key, 0.0) + amount

    def render(self) -> bytes:
        out: list[str] = []
        reqs = sorted(
            (s for s in self.requests.values() if s.requests or s.responses or not s.local),
            key=lambda s: s.labels,
        )
        out += ["# HELP request_total Requests sent on.", "# TYPE request_total counter"]
        out += [f"request_total{{{s.labels}}} {s.requests}" for s in reqs]
        out += [
            "# HELP response_total Responses, by status and success or failure (5xx, no answer).",
            "# TYPE response_total counter",
        ]
        for s in reqs:
            for status, count in sorted(s.responses.items()):
                kind = "failure" if status >= 500 else "success"
                out.append(
                    f'response_total{{{s.labels},classification="{kind}",'
                    f'status_code="{status}"}} {count}'
                )
            for (status, code), count in sorted(s.grpc.items()):
                kind = "failure" if status >= 500 or code else "success"
                out.append(
                    f'response_total{{{s.labels},classification="{kind}",'
                    f'grpc_status="{code}",status_code="{status}"}} {count}'
                )
        out += [
            "# HELP response_latency_ms Time from request to response head, milliseconds.",
            "# TYPE response_latency_ms histogram",
        ]
        for s in reqs:
            running = 0
            for bound, count in zip((*LATENCY_BUCKETS_MS, "+Inf"), s.buckets, strict=True):
                running += count
                out.append(f'response_latency_ms_bucket{{{s.labels},le="{bound}"}} {running}')
            out.append(f"response_latency_ms_sum{{{s.labels}}} {s.latency_sum:.3f}")
            out.append(f"response_latency_ms_count{{{s.labels}}} {running}")
        out += ["# HELP retry_total Retries sent.", "# TYPE retry_total counter"]
        out += [f"retry_total{{{s.labels}}} {s.retries}" for s in reqs if s.retries]
        tcp = sorted(self.tcp.values(), key=lambda s: s.labels)
        for name, kind, attr, help_text in (
            ("tcp_open_connections", "gauge", "open", "Connections open now."),
            ("tcp_open_total", "counter", "opened", "Connections opened."),
            ("tcp_close_total", "counter", "closed", "Connections closed."),
            ("tcp_read_bytes_total", "counter", "read", "Bytes read from the peer."),
            ("tcp_write_bytes_total", "counter", "written", "Bytes written to the peer."),
        ):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            out += [f"{name}{{{s.labels}}} {getattr(s, attr)}" for s in tcp]
        for table, kind in ((self.gauges, "gauge"), (self.counters, "counter")):
            for name, (help_text, values) in sorted(table.items()):
                out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                out += [f"{name}{{{k}}} {v:g}" for k, v in sorted(values.items())]
        return ("\n".join(out) + "\n").encode()
