"""The shipper's own metrics: what was read, shipped, retried, refused and given up."""

from __future__ import annotations

from dataclasses import dataclass

from sidecarkit import metering

__all__ = ["Meters"]


@dataclass(frozen=True, slots=True)
class Meters:
    read: metering.Counter
    bytes: metering.Counter
    shipped: metering.Counter
    bytes_shipped: metering.Counter
    retries: metering.Counter
    errors: metering.Counter
    rejected: metering.Counter
    dropped: metering.Counter
    inflight: metering.Gauge
    unrouted: metering.Counter

    @classmethod
    def add_to(cls, registry: metering.Registry) -> Meters:
        """Register every metric in ``registry``."""
        return cls(
            read=registry.add(
                metering.Counter("sidecarkit_logs_lines_read_total", "Lines read.", ("source",))
            ),
            bytes=registry.add(
                metering.Counter("sidecarkit_logs_bytes_read_total", "Bytes read.", ("source",))
            ),
            shipped=registry.add(
                metering.Counter(
                    "sidecarkit_logs_events_shipped_total", "Events a sink confirmed.", ("sink",)
                )
            ),
            bytes_shipped=registry.add(
                metering.Counter(
                    "sidecarkit_logs_bytes_shipped_total",
                    "Bytes of input whose events a sink confirmed.",
                    ("sink",),
                )
            ),
            retries=registry.add(
                metering.Counter(
                    "sidecarkit_logs_retries_total",
                    "Requests sent again after a failure.",
                    ("sink",),
                )
            ),
            errors=registry.add(
                metering.Counter(
                    "sidecarkit_logs_sink_errors_total",
                    "Failed requests, by sink and kind of failure.",
                    ("sink", "error"),
                )
            ),
            rejected=registry.add(
                metering.Counter(
                    "sidecarkit_logs_events_rejected_total",
                    "Events a sink refused for good (bad data), by reason.",
                    ("sink", "reason"),
                )
            ),
            dropped=registry.add(
                metering.Counter(
                    "sidecarkit_logs_events_dropped_total",
                    "Events given up: retries exhausted (max_retries), by sink.",
                    ("sink",),
                )
            ),
            inflight=registry.add(
                metering.Gauge(
                    "sidecarkit_logs_inflight_bytes",
                    "Bytes read and held until every sink they went to confirmed them.",
                )
            ),
            unrouted=registry.add(
                metering.Counter(
                    "sidecarkit_logs_events_unrouted_total",
                    "Events no sink's match rule took (dropped, their offsets committed).",
                )
            ),
        )
