"""The agent's own series: per target ``up``, ``scrape_duration_seconds``,
``scrape_samples_scraped`` and limits passed, as Prometheus reports its targets; merge
conflicts, pushes by result, and StatsD's counts. Pure: built from figures the agent keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sidecarkit.agents.metrics import exposition

__all__ = ["LIMITS", "TargetRow", "families"]

#: The limits a scrape can pass (``reading.LimitExceeded.limit``), each counted per target.
LIMITS: Final = (
    "body_bytes",
    "samples",
    "labels",
    "label_name_length",
    "label_value_length",
    "memory_bytes",
)


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One target's figures, with the labels its own series carry."""

    labels: tuple[tuple[str, str], ...]
    up: float
    duration: float
    samples: int
    limited: Mapping[str, int]


def _family(name: str, kind: str, help_text: str) -> exposition.Family:
    return exposition.Family(name, kind, help_text)


def families(
    targets: Sequence[TargetRow],
    *,
    conflicts: Mapping[str, int],
    pushes: Mapping[tuple[str, str], int],
    statsd: tuple[int, int, int, int, int],
    remote_write: tuple[int, int | None, int] | None = None,
) -> list[exposition.Family]:
    """The agent's own families; ``statsd`` is (packets, malformed lines, lines dropped at
    the series limit, set values dropped at the set cap, series expired); ``remote_write``
    (samples dropped before the receiver took them, the WAL's bytes on disk or None without
    one, WAL records found damaged)."""
    family = _family
    up = family("up", "gauge", "1 if the last scrape of the target succeeded.")
    duration = family("scrape_duration_seconds", "gauge", "How long the last scrape took.")
    scraped = family("scrape_samples_scraped", "gauge", "Samples in the last scrape.")
    limited = family(
        "sidecarkit_metrics_scrape_limit_exceeded",
        "counter",
        "Scrapes failed because the target passed a limit, by limit: body_bytes, samples, "
        "labels, label_name_length, label_value_length, memory_bytes.",
    )
    conflicted = family(
        "sidecarkit_metrics_conflicts",
        "counter",
        "Families or series left out of the merged output, by kind: a name another source "
        "uses with another type, or a series another target already gave.",
    )
    for kind, count in conflicts.items():
        conflicted.samples.append(
            exposition.Sample("sidecarkit_metrics_conflicts_total", (("kind", kind),), count)
        )
    for t in targets:
        up.samples.append(exposition.Sample("up", t.labels, t.up))
        duration.samples.append(exposition.Sample("scrape_duration_seconds", t.labels, t.duration))
        scraped.samples.append(exposition.Sample("scrape_samples_scraped", t.labels, t.samples))
        for name in LIMITS:
            limited.samples.append(
                exposition.Sample(
                    "sidecarkit_metrics_scrape_limit_exceeded_total",
                    (*t.labels, ("limit", name)),
                    t.limited.get(name, 0),
                )
            )
    own = [up, duration, scraped, limited, conflicted] if targets else [conflicted]
    if pushes:
        pushed = family("sidecarkit_metrics_pushes", "counter", "Pushes, by where and result.")
        for (to, result), count in sorted(pushes.items()):
            pushed.samples.append(
                exposition.Sample(
                    "sidecarkit_metrics_pushes_total", (("to", to), ("result", result)), count
                )
            )
        own.append(pushed)
    if remote_write is not None:
        dropped, wal_bytes, corrupt = remote_write
        rows = [
            (
                "sidecarkit_metrics_remote_write_dropped_samples",
                "counter",
                dropped,
                "Samples dropped before the remote_write receiver took them (the backlog or "
                "the WAL full, or the WAL not writable).",
            )
        ]
        if wal_bytes is not None:
            rows.append(
                (
                    "sidecarkit_metrics_remote_write_wal_bytes",
                    "gauge",
                    wal_bytes,
                    "Bytes remote_write's WAL takes on disk.",
                )
            )
            rows.append(
                (
                    "sidecarkit_metrics_remote_write_wal_corrupt_records",
                    "counter",
                    corrupt,
                    "WAL records found torn or damaged at start, never sent.",
                )
            )
        for name, kind, value, help_text in rows:
            f = family(name, kind, help_text)
            sample = name + "_total" if kind == "counter" else name
            f.samples.append(exposition.Sample(sample, (), value))
            own.append(f)
    for name, value, help_text in (
        ("sidecarkit_metrics_statsd_packets", statsd[0], "StatsD packets received."),
        ("sidecarkit_metrics_statsd_malformed", statsd[1], "Malformed StatsD lines."),
        (
            "sidecarkit_metrics_statsd_dropped",
            statsd[2],
            "StatsD lines dropped at the series limit.",
        ),
    ):
        f = family(name, "counter", help_text)
        f.samples.append(exposition.Sample(name + "_total", (), value))
        own.append(f)
    return own
