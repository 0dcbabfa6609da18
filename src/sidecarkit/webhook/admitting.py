"""Answering one admission review with the injection core. Pure: no I/O, no clock, no logging.

The object is injected exactly as ``sidecarkit inject`` would inject it, and the answer is the
JSONPatch from the original to the result. Only CREATE is handled: the webhook is registered for
it alone, and anything else is allowed unchanged. ``dryRun`` needs nothing special, because
answering has no side effects.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecarkit import errors
from sidecarkit.injection import configs, facts, injecting, reports
from sidecarkit.webhook import patches, reviews

__all__ = ["Outcome", "admit"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer, and how to count it."""

    body: bytes
    decision: str
    """``patched``, ``allowed`` (nothing to change) or ``denied``."""
    reason: str
    """The deciding reason code, for metrics and logs."""
    error: BaseException | None = None
    """An unexpected exception that led to a denial, for the server to log."""


def admit(review: reviews.Review, config: configs.Config, cluster: facts.Facts) -> Outcome:
    """Answer ``review``; never raises."""
    request = review.request
    if request.get("operation") != "CREATE":
        return Outcome(reviews.allow(review), "allowed", "not-create")
    obj = request.get("object")
    if not isinstance(obj, dict):
        message = "request.object is missing or not an object; nothing to admit"
        return Outcome(reviews.deny(review, code=400, message=message), "denied", "bad-object")
    try:
        new, report = injecting.inject(obj, config, cluster, location="request.object")
        ops = patches.diff(obj, new) if new is not obj else []
    except errors.InputError as exc:
        message = f"sidecarkit: {exc}"
        return Outcome(reviews.deny(review, code=400, message=message), "denied", "bad-input")
    except Exception as exc:
        message = f"sidecarkit: internal error while injecting: {type(exc).__name__}: {exc}"
        return Outcome(
            reviews.deny(review, code=500, message=message), "denied", "internal-error", exc
        )
    warnings = [f"sidecarkit: {r.code}: {r.message}" for r in _reasons(report) if r.code.is_warning]
    reason = str(_reasons(report)[-1].code) if _reasons(report) else "none"
    body = reviews.allow(review, ops, warnings=warnings)
    return Outcome(body, "patched" if ops else "allowed", reason)


def _reasons(report: reports.Report) -> tuple[reports.Reason, ...]:
    return tuple(r for d in report.decisions for r in d.reasons)
