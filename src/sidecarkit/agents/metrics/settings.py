"""Settings of ``sidecarkit agent metrics``: flags, ``SIDECARKIT_METRICS_*`` env, or YAML.

Flags and env win over the YAML file (``--config``), which wins over the defaults. The pod's
identity comes from the Downward API env the ``metrics`` injection profile sets
(``SIDECARKIT_POD_NAME``, ``SIDECARKIT_POD_NAMESPACE``, ``SIDECARKIT_NODE_NAME``) and becomes
the labels ``pod``, ``namespace`` and ``node``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sidecarkit import durations
from sidecarkit.agents.identity import IDENTITY_ENV, identity_labels, parse_labels
from sidecarkit.agents.metrics import relabeling, statsd

__all__ = ["IDENTITY_ENV", "Settings", "from_mapping", "identity_labels"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the metrics agent does, grouped by concern."""

    targets: tuple[str, ...] = ()
    """App endpoints to scrape, e.g. ``http://127.0.0.1:8080/metrics``; none is fine (StatsD)."""
    interval: float = 15.0
    """Seconds between scrapes; Prometheus's usual 15 s so freshness matches the scraper's."""
    timeout: float = 10.0
    """Seconds one scrape may take before it counts as failed (``up`` 0)."""
    host: str = "0.0.0.0"
    """Address of the merged ``/metrics``: every interface, so the cluster's Prometheus can reach
    it."""
    port: int = 15101
    """Port of ``/metrics``, ``/healthz`` and ``/ready`` (the profile's ``admin-port``)."""
    statsd_host: str = "127.0.0.1"
    """Address of the StatsD receiver; loopback, because only the pod's own app should send."""
    statsd_port: int = 8125
    """UDP port of the StatsD receiver; 0 turns it off."""
    statsd_socket: str | None = None
    """A Unix datagram socket for StatsD as well, e.g. ``/var/run/sidecarkit/statsd.sock``."""
    buckets: tuple[float, ...] = statsd.DEFAULT_BUCKETS
    """Histogram buckets for StatsD timers and histograms, in seconds for timers."""
    labels: tuple[tuple[str, str], ...] = ()
    """Labels added to every series: the pod's identity, then static ones."""
    rules: tuple[relabeling.Rule, ...] = ()
    """Relabel rules applied to scraped and received series before enrichment."""
    series_limit: int = 50_000
    """Most series one target may expose; past it the scrape fails with a clear metric."""
    statsd_series_limit: int = 10_000
    """Most series StatsD may create; past it new series are dropped and counted."""
    remote_write_url: str | None = None
    """Prometheus remote_write 1.0 endpoint to push to, e.g. http://prometheus:9090/api/v1/write."""
    pushgateway_url: str | None = None
    """Pushgateway to push to, e.g. http://pushgateway:9091; the pod's identity is the group."""
    push_interval: float | None = None
    """Seconds between pushes; unset means the scrape interval."""
    push_job: str = "sidecarkit"
    """The Pushgateway ``job`` of this pod's group."""


def from_mapping(data: Mapping[str, Any], *, source: str, base: Settings | None = None) -> Settings:
    """Settings from a YAML mapping (or a CLI's collected options); ValueError says where."""
    settings = base or Settings()
    allowed = {
        "targets",
        "interval",
        "timeout",
        "host",
        "port",
        "statsd_host",
        "statsd_port",
        "statsd_socket",
        "buckets",
        "labels",
        "relabel",
        "series_limit",
        "statsd_series_limit",
        "remote_write_url",
        "pushgateway_url",
        "push_interval",
        "push_job",
    }
    unknown = set(data) - allowed
    if unknown:
        accepted = ", ".join(sorted(allowed))
        raise ValueError(f"{source}: unknown setting {sorted(unknown)[0]!r}; accepted: {accepted}")
    changes: dict[str, Any] = {}
    if "targets" in data:
        targets = data["targets"]
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        if not isinstance(targets, list) or not all(
            isinstance(t, str) and t.startswith(("http://", "https://")) for t in targets
        ):
            raise ValueError(
                f"{source}: targets must be http(s) URLs, e.g. http://127.0.0.1:8080/metrics"
            )
        changes["targets"] = tuple(targets)
    for key in ("remote_write_url", "pushgateway_url"):
        if data.get(key):
            url = str(data[key])
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{source}: {key} must be an http(s) URL")
            changes[key] = url
    if "push_job" in data:
        changes["push_job"] = str(data["push_job"])
    for key in ("interval", "timeout", "push_interval"):
        if key in data:
            value = durations.setting(data[key], f"{source}: {key}")
            if value <= 0:
                raise ValueError(f"{source}: {key} must be positive")
            changes[key] = value
    for key in ("port", "statsd_port"):
        if key in data:
            port = data[key]
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                try:
                    port = int(str(port))
                except ValueError:
                    port = -1
                if not 0 <= port <= 65535:
                    raise ValueError(f"{source}: {key} must be a port number from 0 to 65535")
            changes[key] = int(port)
    for key in ("host", "statsd_host", "statsd_socket"):
        if key in data and data[key] is not None:
            changes[key] = str(data[key])
    for key in ("series_limit", "statsd_series_limit"):
        if key in data:
            try:
                limit = int(str(data[key]))
            except ValueError:
                limit = 0
            if limit < 1:
                raise ValueError(f"{source}: {key} must be a positive whole number")
            changes[key] = limit
    if "buckets" in data:
        try:
            changes["buckets"] = statsd.parse_buckets(
                data["buckets"]
                if isinstance(data["buckets"], str)
                else [float(b) for b in data["buckets"]]
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: buckets: {exc}") from exc
    if "labels" in data:
        changes["labels"] = (*settings.labels, *parse_labels(data["labels"], source))
    if "relabel" in data:
        rules = data["relabel"]
        if not isinstance(rules, list):
            raise ValueError(f"{source}: relabel must be a list of rules")
        changes["rules"] = tuple(
            relabeling.rule_from(r if isinstance(r, dict) else {}, where=f"{source}: relabel[{i}]")
            for i, r in enumerate(rules)
        )
    return replace(settings, **changes)
