"""Reading exposition bytes: whole lines out of chunks in linear time, with limits checked as
the bytes come in, never after a full parse.

Lines: a chunk without a newline is kept as it is, not joined to what came before; the pieces
are joined once, when the newline arrives, so a long line streamed in small chunks costs time
in proportion to its length, not to its square.

Limits (``Limits``, all off at 0): the body's size, its samples, the labels of a sample and
their lengths, and an estimate of the memory the parse holds. They are checked after every
chunk, before the next is read, so a target over a limit costs at most one chunk more than
the limit. A limit passed raises ``LimitExceeded``, which names the limit, the figure and the
setting that raises it.

The memory estimate is ``SAMPLE_BYTES`` per line plus ``BYTE_COST`` per byte read: measured
on real shapes (a kube-state-metrics line of 117 bytes holds about 700 bytes once parsed, a
20-byte line about 260), it errs on the high side. Lines stand in for samples there, and in
the sample limit until the line count passes it; then the samples are counted exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sidecarkit.agents.metrics import exposition

__all__ = ["BYTE_COST", "SAMPLE_BYTES", "LimitExceeded", "Limits", "Reader", "estimate"]

#: Bytes a parsed sample holds besides its text (objects, tuples, list slots).
SAMPLE_BYTES: Final = 200
#: Bytes held per byte of exposition text read (the label values, names, and their objects).
BYTE_COST: Final = 5


def estimate(*, lines: int, size: int) -> int:
    """The memory a parse of ``lines`` lines and ``size`` bytes holds, in bytes."""
    return lines * SAMPLE_BYTES + size * BYTE_COST


@dataclass(frozen=True, slots=True)
class Limits:
    """What one scrape may read; 0 means no limit."""

    body_bytes: int = 0
    samples: int = 0
    labels: int = 0
    label_name_length: int = 0
    label_value_length: int = 0
    memory_bytes: int = 0
    """The most the parse may hold, by ``estimate``."""


#: No limits: shared by every reader given none (``Limits`` is frozen).
_UNLIMITED: Final = Limits()


class LimitExceeded(ValueError):
    """A scrape over one of its limits; ``limit`` names which (``body_bytes``, ``samples``,
    ``labels``, ``label_name_length``, ``label_value_length``, ``memory_bytes``)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class Reader:
    """Whole lines from chunks, and the limits, for one parse."""

    __slots__ = (
        "_checked",
        "_exact_at",
        "_label_bound",
        "_pending",
        "_pending_bytes",
        "fed",
        "limits",
        "lines",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or _UNLIMITED
        self.fed = 0
        self.lines = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._exact_at = self.limits.samples
        self._checked: dict[int, int] = {}
        lengths = [n for n in (self.limits.label_name_length, self.limits.label_value_length) if n]
        # A line no longer than this cannot break a label limit: each label takes at least 5
        # characters (a="",), and a name or value is no longer than its line.
        bounds = [*lengths]
        if self.limits.labels:
            bounds.append(5 * self.limits.labels + 3)
        self._label_bound = min(bounds) if bounds else 0

    def complete_lines(self, data: bytes, *, first_line: int) -> list[str]:
        """The lines ``data`` completes, decoded; the rest is kept for the next chunk."""
        self.fed += len(data)
        limits = self.limits
        if limits.body_bytes and self.fed > limits.body_bytes:
            raise LimitExceeded(
                "body_bytes",
                f"the body is over {limits.body_bytes} bytes (body_size_limit); raise it, or "
                "expose fewer series",
            )
        cut = data.rfind(b"\n") + 1
        if not cut:
            if data:
                self._pending.append(data)
                self._pending_bytes += len(data)
                self._check_memory()
            return []
        if self._pending:
            self._pending.append(data[:cut])
            head = b"".join(self._pending)
        else:
            head = data[:cut] if cut < len(data) else data
        rest = data[cut:]
        self._pending = [rest] if rest else []
        self._pending_bytes = len(rest)
        lines, _ = exposition.complete_lines(head, first_line=first_line)
        self.lines += len(lines)
        return lines

    def rest(self) -> bytes:
        """What follows the last newline."""
        return b"".join(self._pending)

    def check(self, lines: list[str], families: Iterable[exposition.Family]) -> None:
        """The limits after ``lines`` (just parsed) added samples to ``families``."""
        limits = self.limits
        self._check_memory()
        if limits.samples and self.lines > self._exact_at:
            families = list(families)
            count = sum(len(f.samples) for f in families)
            if count > limits.samples:
                raise LimitExceeded(
                    "samples",
                    f"over {limits.samples} samples (series_limit); raise it, or drop series "
                    "with a relabel rule",
                )
            # No need to count again before this many more lines could pass the limit.
            self._exact_at = self.lines + (limits.samples - count)
        if self._label_bound and lines and max(map(len, lines)) > self._label_bound:
            self._check_labels(families)

    def _check_memory(self) -> None:
        budget = self.limits.memory_bytes
        if budget and estimate(lines=self.lines, size=self.fed) > budget:
            raise LimitExceeded(
                "memory_bytes",
                f"reading it would take the agent past its memory budget ({budget >> 20} MiB "
                "left for this target, memory_limit); raise memory_limit, or expose fewer "
                "series",
            )

    def _check_labels(self, families: Iterable[exposition.Family]) -> None:
        limits = self.limits
        for family in families:
            samples = family.samples
            start = self._checked.get(id(family), 0)
            for s in samples[start:]:
                labels = s.labels
                if limits.labels and len(labels) > limits.labels:
                    raise LimitExceeded(
                        "labels",
                        f"{s.name} has {len(labels)} labels, over {limits.labels} (label_limit)",
                    )
                for name, value in labels:
                    if limits.label_name_length and len(name) > limits.label_name_length:
                        raise LimitExceeded(
                            "label_name_length",
                            f"{s.name} has a label name of {len(name)} characters, over "
                            f"{limits.label_name_length} (label_name_length_limit)",
                        )
                    if limits.label_value_length and len(value) > limits.label_value_length:
                        raise LimitExceeded(
                            "label_value_length",
                            f"{s.name} has a {name} of {len(value)} characters, over "
                            f"{limits.label_value_length} (label_value_length_limit)",
                        )
            self._checked[id(family)] = len(samples)
