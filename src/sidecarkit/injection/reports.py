"""Decisions are data: a reason code and one sentence for everything the injector did or didn't.

The same codes feed the CLI's stderr report, ``--report json``, the webhook's admission warnings
and its metrics, so a code, once published, keeps its meaning.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Code", "Decision", "Reason", "Report"]


class Code(enum.StrEnum):
    """Why a workload came out the way it did."""

    INJECTED = "injected"
    REINJECTED = "reinjected"
    UP_TO_DATE = "up-to-date"
    UNINJECTED = "uninjected"
    NOT_INJECTED = "not-injected"
    SKIPPED_NOT_OPTED_IN = "skipped-not-opted-in"
    SKIPPED_OPTED_OUT = "skipped-opted-out"
    SKIPPED_HOST_NETWORK = "skipped-host-network"
    SKIPPED_NO_PROFILES = "skipped-no-profiles"
    UNSUPPORTED_KIND = "unsupported-kind"
    NO_POD_TEMPLATE = "no-pod-template"
    EMPTY_DOCUMENT = "empty-document"
    PROFILES_DEFAULTED = "profiles-defaulted"
    MODE_DEFAULTED = "mode-defaulted"
    LEGACY_JOB_UNWRAPPED = "legacy-job-unwrapped"
    PROMETHEUS_ANNOTATION_IGNORED = "prometheus-annotation-ignored"
    ANNOTATED = "annotated"
    """``--annotate-only`` added the opt-in label for the webhook to act on."""
    FAILED = "failed"
    """The document could not be read or injected; the CLI writes it unchanged and goes on."""

    @property
    def is_warning(self) -> bool:
        """Whether the webhook should pass this on as an admission warning."""
        return self in _WARNINGS


_WARNINGS = frozenset(
    {
        Code.SKIPPED_HOST_NETWORK,
        Code.SKIPPED_NO_PROFILES,
        Code.PROFILES_DEFAULTED,
        Code.MODE_DEFAULTED,
        Code.LEGACY_JOB_UNWRAPPED,
        Code.PROMETHEUS_ANNOTATION_IGNORED,
    }
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason code and the sentence that explains it for this workload."""

    code: Code
    message: str
    profile: str | None = None
    """The profile the reason is about, when it is about one."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened to one object: a document, or an item of a ``kind: List``."""

    location: str
    """Where the object is in the input: ``document 2`` or ``document 1, items[3]``."""
    target: str
    """``Kind/name`` of the object."""
    reasons: tuple[Reason, ...]
    changed: bool
    """Whether the object in the output differs from the input."""

    @property
    def codes(self) -> tuple[Code, ...]:
        return tuple(r.code for r in self.reasons)


@dataclass(frozen=True, slots=True)
class Report:
    """Every decision made for one input, in input order."""

    decisions: tuple[Decision, ...] = ()

    def __add__(self, other: Report) -> Report:
        return Report(self.decisions + other.decisions)

    @property
    def changed(self) -> bool:
        return any(d.changed for d in self.decisions)

    def lines(self) -> list[str]:
        """One line per reason, for people: ``location target: code: sentence``."""
        return [
            f"{d.location} {d.target}: {r.code}: {r.message}"
            for d in self.decisions
            for r in d.reasons
        ]

    def to_json(self) -> list[dict[str, Any]]:
        """The report as JSON-ready data, for ``--report json`` and for the webhook."""
        return [
            {
                "location": d.location,
                "target": d.target,
                "changed": d.changed,
                "reasons": [
                    {"code": str(r.code), "message": r.message}
                    | ({"profile": r.profile} if r.profile else {})
                    for r in d.reasons
                ],
            }
            for d in self.decisions
        ]
