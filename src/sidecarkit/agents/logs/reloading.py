"""What a reload of the log agent's config may change, worked out before anything is touched.

A reload (SIGHUP, or the ``--config`` file changed, as a mounted ConfigMap does by swapping its
``..data`` symlink) applies the new config between two batches: stages, sinks and their
``match`` rules, labels, batching and retry settings. What was read is never read again and
nothing read is skipped: the files stay open at their positions, and the batch being filled is
sealed under the old routes first.

Some settings shape what is already open and keep their running values until the agent
restarts (``FIXED``, and a leading ``multiline`` stage, which lives in the parsers of the open
files); a reload that changes them says so in the log and applies the rest. No I/O here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from sidecarkit.agents.logs import sinks, stages
from sidecarkit.agents.logs.settings import Settings, effective_sources

__all__ = ["FIXED", "check_sources", "fixed_changes", "keep_fixed", "lane_spec"]

FIXED: Final = (
    "sources",
    "offsets_dir",
    "host",
    "port",
    "max_line",
    "long_lines",
    "read_size",
    "exit_when_done",
    "lifecycle_dir",
)
"""Settings a reload leaves as they run: the files followed and how they are read, where
offsets are saved, the port of /metrics. Changing them needs a restart."""


def _leading(chosen: tuple[stages.Stage, ...]) -> tuple[stages.Stage, ...]:
    return chosen[:1] if chosen and isinstance(chosen[0], stages.Multiline) else ()


def fixed_changes(old: Settings, new: Settings) -> list[str]:
    """The keys of ``FIXED`` (and a leading multiline stage) that ``new`` changes."""
    changed = [key for key in FIXED if key != "sources" and getattr(old, key) != getattr(new, key)]
    if old.sources != new.sources:
        changed.insert(0, "sources")
    if _leading(old.stages) != _leading(new.stages):
        changed.append("stages[0] (multiline)")
    return changed


def keep_fixed(old: Settings, new: Settings) -> Settings:
    """``new`` with the settings of ``FIXED`` and the leading multiline stage of ``old``."""
    rest = new.stages[len(_leading(new.stages)) :]
    kept = replace(new, stages=_leading(old.stages) + rest)
    return replace(kept, **{key: getattr(old, key) for key in FIXED})


def check_sources(new: Settings) -> None:
    """Raise ValueError when ``new`` could not start as it is (as at start-up)."""
    effective_sources(new)


def lane_spec(spec: sinks.Spec) -> sinks.Spec:
    """What decides whether a reload keeps a running sink: everything but its ``match`` rule,
    which the router applies, so a rule changed alone keeps the sink and its connection."""
    return replace(spec, match=None)
