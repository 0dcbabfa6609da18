"""Scrape targets from the pod's ``prometheus.io/*`` annotations, the convention many charts
and Prometheus's ``kubernetes-pods`` example job already use.

The pod's annotations reach the agent as a Downward API file (``fieldRef:
metadata.annotations``): one ``key="value"`` per line, the value quoted as Go quotes strings.
The annotations decide the target when they hold ``prometheus.io/scrape`` (or the
``sidecarkit.io/metrics.scrape`` of the injection profile); otherwise the targets the agent
was given stay. ``prometheus.io/scrape: "true"`` asks for a scrape; ``prometheus.io/port``
names the port (required here, unless the agent was given a target: it sees no container
ports), ``prometheus.io/path`` the path (``/metrics``), ``prometheus.io/scheme`` ``http`` or
``https``. The app shares the pod's network
namespace, so the target is on 127.0.0.1. Pure but for ``read_targets``, which reads the
file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from sidecarkit.agents.metrics import settings

__all__ = ["parse_annotations", "read_targets", "targets_from"]


def parse_annotations(text: str, *, where: str) -> dict[str, str]:
    """The annotations of a Downward API file; ValueError names the line that is not
    ``key="value"``."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, equals, quoted = line.partition("=")
        if not equals or not quoted.startswith('"'):
            raise ValueError(f'{where}, line {number}: expected key="value", got {line[:60]!r}')
        try:
            value = json.loads(quoted)
        except ValueError:
            value = quoted[1:-1]  # Go escapes JSON lacks (\x..): keep the text as written
        out[key] = str(value)
    return out


def _setting(annotations: Mapping[str, str], name: str) -> str | None:
    """A setting from ``sidecarkit.io/metrics.<name>``, else ``prometheus.io/<name>``: ours
    wins, as at injection."""
    for key in (f"sidecarkit.io/metrics.{name}", f"prometheus.io/{name}"):
        if key in annotations:
            return annotations[key].strip()
    return None


def targets_from(
    annotations: Mapping[str, str],
    *,
    where: str,
    fallback: tuple[settings.Target, ...] = (),
) -> tuple[settings.Target, ...]:
    """The target the annotations ask for; ``fallback`` (the targets the agent was given)
    when they do not speak: no ``scrape`` annotation, or no port with a fallback to keep.
    ``sidecarkit.io/metrics.scrape|port|path`` win over their ``prometheus.io`` twins, as
    they do at injection. ValueError says which annotation is wrong and how to fix it."""
    scrape = _setting(annotations, "scrape")
    if scrape is None:
        return fallback
    if scrape.lower() != "true":
        return ()
    port = _setting(annotations, "port") or ""
    if not port and fallback:
        return fallback
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{where}: prometheus.io/scrape is true but prometheus.io/port is "
            f'{port or "missing"}; set it to the app\'s metrics port, e.g. "8080"'
        )
    scheme = annotations.get("prometheus.io/scheme", "http").strip().lower() or "http"
    if scheme not in ("http", "https"):
        raise ValueError(f"{where}: prometheus.io/scheme {scheme!r} is not http or https")
    path = _setting(annotations, "path") or "/metrics"
    if not path.startswith("/"):
        path = "/" + path
    return (settings.Target(f"{scheme}://127.0.0.1:{int(port)}{path}"),)


def read_targets(
    path: str, *, fallback: tuple[settings.Target, ...] = ()
) -> tuple[settings.Target, ...]:
    """The target the pod's annotations name (see ``targets_from``); ValueError when the
    file cannot be read or an annotation is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(
            f"annotations_file {path}: cannot read it ({exc}); mount the Downward API "
            "annotations there"
        ) from exc
    annotations = parse_annotations(text, where=path)
    return targets_from(annotations, where=path, fallback=fallback)
