"""Settings of ``sidecarkit agent metrics``: flags, ``SIDECARKIT_METRICS_*`` env, or YAML.

Flags and env win over the YAML file (``--config``), which wins over the defaults. The pod's
identity comes from the Downward API env the ``metrics`` injection profile sets
(``SIDECARKIT_POD_NAME``, ``SIDECARKIT_POD_NAMESPACE``, ``SIDECARKIT_NODE_NAME``) and becomes
the labels ``pod``, ``namespace`` and ``node``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from sidecarkit import durations
from sidecarkit.agents.identity import IDENTITY_ENV, identity_labels, parse_labels
from sidecarkit.agents.metrics import mapping, relabeling, statsd

__all__ = ["IDENTITY_ENV", "Settings", "Target", "from_mapping", "identity_labels"]

_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint to scrape, and the labels its series get, as a Prometheus scrape target."""

    url: str
    """The endpoint, e.g. ``http://127.0.0.1:8080/metrics``."""
    labels: tuple[tuple[str, str], ...] = ()
    """Labels of this target alone (``job: app``), added after the pod's identity."""
    honor_labels: bool | None = None
    """When the app's own label clashes with one the agent adds: True keeps the app's, False
    keeps the agent's and renames the app's ``exported_<name>`` (Prometheus's default); None
    follows the agent-wide ``honor_labels``."""
    interval: float | None = None
    """Seconds between this target's scrapes; None for the agent-wide ``interval``."""
    timeout: float | None = None
    """Seconds this target's scrape may take; None for the agent-wide ``timeout``."""

    @property
    def address(self) -> str:
        """``host:port`` of the URL, what Prometheus puts in ``instance``."""
        return urllib.parse.urlsplit(self.url).netloc.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the metrics agent does, grouped by concern."""

    targets: tuple[Target, ...] = ()
    """App endpoints to scrape, e.g. ``http://127.0.0.1:8080/metrics``; none is fine (StatsD)."""
    annotations_file: str | None = None
    """The pod's annotations as a Downward API file; with no ``targets``, the
    ``prometheus.io/scrape|port|path|scheme`` annotations in it name the target (see
    ``discovering``)."""
    target_label: str = "instance"
    """Label that tells targets apart, set to each target's ``host:port`` as Prometheus sets
    ``instance``: two targets exposing the same series stay two series. Empty turns it off
    (then the same series from two targets is a conflict: the first target's is kept and the
    other is reported)."""
    honor_labels: bool = False
    """Default of each target's ``honor_labels``: False, as in Prometheus, so the labels the
    agent adds always win and the app's clashing ones become ``exported_<name>``."""
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
    series_limit: int = 0
    """Most samples one target may expose (Prometheus's ``sample_limit``); past it the scrape
    fails. 0, the default, for none: memory is bounded by ``memory_limit`` instead, so a large
    ordinary target (kube-state-metrics with 100,000 series) is not refused."""
    body_size_limit: int = 0
    """Most bytes of one scrape's body, after gzip; 0 (the default) for none."""
    label_limit: int = 0
    """Most labels one sample may have, as the target exposes it; 0 for none."""
    label_name_length_limit: int = 0
    """Longest label name, in characters; 0 for none."""
    label_value_length_limit: int = 0
    """Longest label value, in characters; 0 for none."""
    memory_limit: int = 512 << 20
    """Bytes the scraped series may hold in all, by the agent's estimate (see
    ``reading.estimate``): a scrape that would pass it fails as it reads, before the memory is
    taken. 512 MiB holds about 700,000 kube-state-metrics series while they are scraped again;
    set it to what the container's memory limit leaves after the agent's own ~60 MiB."""
    statsd_series_limit: int = 10_000
    """Most series StatsD may create; past it new series are dropped and counted."""
    statsd_mappings: tuple[mapping.Rule, ...] = ()
    """statsd_exporter-style rules giving dotted StatsD names a metric name and labels
    (YAML ``statsd_mappings``, see ``mapping``)."""
    statsd_ttl: float = 0.0
    """Seconds a StatsD series may go without a line before it is forgotten; 0, the default
    (as statsd_exporter's), keeps every series."""
    remote_write_url: str | None = None
    """Prometheus remote_write 1.0 endpoint to push to, e.g. http://prometheus:9090/api/v1/write."""
    remote_write_bearer_token_file: str | None = None
    """A file holding the bearer token for remote_write (``Authorization: Bearer``), read
    before every push so a rotated token is used at once, as Prometheus reads
    ``credentials_file``."""
    remote_write_username: str | None = None
    """The user of HTTP basic auth for remote_write; the password comes from
    ``remote_write_password_file``."""
    remote_write_password_file: str | None = None
    """A file holding the basic-auth password for remote_write, read before every push."""
    remote_write_ca_file: str | None = None
    """PEM CA certificates that sign an https remote_write receiver's certificate, instead of
    the system's."""
    remote_write_wal_dir: str | None = None
    """A directory for remote_write's write-ahead log: samples the receiver has not taken
    survive an outage longer than the memory backlog (32 MiB) and a restart of the agent, and
    are replayed in order. Unset keeps the backlog in memory only."""
    remote_write_wal_size: int = 256 << 20
    """Most bytes the WAL may take on disk; past it the oldest samples are dropped and counted
    (``sidecarkit_metrics_remote_write_dropped_samples_total``). 256 MiB holds 50-80 pushes
    of a 100,000-series target (3-5 MB each): a quarter of an hour at a 15 s interval; a
    small app's minutes become days."""
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
        "annotations_file",
        "target_label",
        "honor_labels",
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
        "body_size_limit",
        "label_limit",
        "label_name_length_limit",
        "label_value_length_limit",
        "memory_limit",
        "statsd_series_limit",
        "statsd_ttl",
        "statsd_mappings",
        "remote_write_url",
        "remote_write_bearer_token_file",
        "remote_write_username",
        "remote_write_password_file",
        "remote_write_ca_file",
        "remote_write_wal_dir",
        "remote_write_wal_size",
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
        if not isinstance(targets, list):
            raise ValueError(
                f"{source}: targets must be a list of http(s) URLs or of mappings with url, "
                "labels and honor_labels"
            )
        changes["targets"] = tuple(
            _target(t, f"{source}: targets[{i}]") for i, t in enumerate(targets)
        )
    if "target_label" in data:
        name = str(data["target_label"] or "")
        if name and _LABEL_NAME.fullmatch(name) is None:
            raise ValueError(
                f"{source}: target_label {name!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*); "
                "use e.g. instance, or an empty value to add none"
            )
        changes["target_label"] = name
    if "honor_labels" in data:
        changes["honor_labels"] = _flag(data["honor_labels"], f"{source}: honor_labels")
    for key in ("remote_write_url", "pushgateway_url"):
        if data.get(key):
            url = str(data[key])
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{source}: {key} must be an http(s) URL")
            changes[key] = url
    for key in (
        "remote_write_bearer_token_file",
        "remote_write_username",
        "remote_write_password_file",
        "remote_write_ca_file",
        "remote_write_wal_dir",
    ):
        if data.get(key):
            changes[key] = str(data[key])
    merged = {
        **{
            k: getattr(settings, k)
            for k in (
                "remote_write_bearer_token_file",
                "remote_write_username",
                "remote_write_password_file",
            )
        },
        **changes,
    }
    if bool(merged["remote_write_username"]) != bool(merged["remote_write_password_file"]):
        raise ValueError(
            f"{source}: basic auth needs both remote_write_username and remote_write_password_file"
        )
    if merged["remote_write_username"] and merged["remote_write_bearer_token_file"]:
        raise ValueError(
            f"{source}: remote_write takes basic auth or a bearer token, not both; drop one"
        )
    if "push_job" in data:
        changes["push_job"] = str(data["push_job"])
    for key in ("interval", "timeout", "push_interval"):
        if key in data:
            value = durations.setting(data[key], f"{source}: {key}")
            if value <= 0:
                raise ValueError(f"{source}: {key} must be positive")
            changes[key] = value
    if "statsd_ttl" in data:
        ttl = durations.setting(data["statsd_ttl"], f"{source}: statsd_ttl")
        if ttl < 0:
            raise ValueError(f"{source}: statsd_ttl must be 0 (never) or a positive duration")
        changes["statsd_ttl"] = ttl
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
    for key in ("host", "statsd_host", "statsd_socket", "annotations_file"):
        if key in data and data[key] is not None:
            changes[key] = str(data[key])
    if "statsd_series_limit" in data:
        try:
            limit = int(str(data["statsd_series_limit"]))
        except ValueError:
            limit = 0
        if limit < 1:
            raise ValueError(f"{source}: statsd_series_limit must be a positive whole number")
        changes["statsd_series_limit"] = limit
    for key in (
        "series_limit",
        "label_limit",
        "label_name_length_limit",
        "label_value_length_limit",
    ):
        if key in data:
            try:
                limit = int(str(data[key]))
            except ValueError:
                limit = -1
            if limit < 0:
                raise ValueError(f"{source}: {key} must be a whole number, 0 for no limit")
            changes[key] = limit
    for key in ("body_size_limit", "memory_limit", "remote_write_wal_size"):
        if key in data:
            changes[key] = _size(data[key], f"{source}: {key}")
    if changes.get("remote_write_wal_size", 64 << 10) < 64 << 10:
        raise ValueError(
            f"{source}: remote_write_wal_size must be at least 64KiB (one segment); "
            "e.g. 256MiB, the default"
        )
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
    if "statsd_mappings" in data:
        rules = data["statsd_mappings"]
        if not isinstance(rules, list):
            raise ValueError(f"{source}: statsd_mappings must be a list of rules")
        changes["statsd_mappings"] = tuple(
            mapping.rule_from(
                r if isinstance(r, dict) else {}, where=f"{source}: statsd_mappings[{i}]"
            )
            for i, r in enumerate(rules)
        )
    if "relabel" in data:
        rules = data["relabel"]
        if not isinstance(rules, list):
            raise ValueError(f"{source}: relabel must be a list of rules")
        changes["rules"] = tuple(
            relabeling.rule_from(r if isinstance(r, dict) else {}, where=f"{source}: relabel[{i}]")
            for i, r in enumerate(rules)
        )
    return replace(settings, **changes)


_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
}


def _size(value: object, where: str) -> int:
    """Bytes from ``536870912``, ``512MiB``, ``64MB``, ``1GiB``; 0 for no limit."""
    text = str(value).strip().lower().replace(" ", "")
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits) :]
    try:
        number = float(digits)
    except ValueError:
        number = -1.0
    if unit not in _UNITS or number < 0:
        raise ValueError(
            f"{where}: {value!r} is not a size; write bytes or e.g. 64MiB, 512MB, 1GiB "
            "(0 for no limit)"
        )
    return int(number * _UNITS[unit])


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{where}: {value!r} is not true or false")


def _target(data: object, where: str) -> Target:
    """A target from a URL or from ``{url, labels, honor_labels}``."""
    if isinstance(data, str):
        data = {"url": data}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a URL or a mapping with url, labels, honor_labels")
    accepted = {"url", "labels", "honor_labels", "interval", "timeout"}
    unknown = set(data) - accepted
    if unknown:
        raise ValueError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; accepted: {', '.join(sorted(accepted))}"
        )
    periods: dict[str, float] = {}
    for key in ("interval", "timeout"):
        if key in data:
            periods[key] = durations.setting(data[key], f"{where}.{key}")
            if periods[key] <= 0:
                raise ValueError(f"{where}.{key} must be positive")
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}: url must be an http(s) URL, e.g. http://127.0.0.1:8080/metrics")
    labels = parse_labels(data["labels"], where) if "labels" in data else ()
    honor = _flag(data["honor_labels"], f"{where}.honor_labels") if "honor_labels" in data else None
    return Target(url, tuple(labels), honor, periods.get("interval"), periods.get("timeout"))
