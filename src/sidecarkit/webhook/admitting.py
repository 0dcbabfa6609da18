"""Answering one admission review with the injection core. Pure: no I/O, no clock, no logging.

The object is injected exactly as ``sidecarkit inject`` would inject it, and the answer is the
JSONPatch from the original to the result. Only CREATE is handled: the webhook is registered for
it alone, and anything else is allowed unchanged. ``dryRun`` needs nothing special, because
answering has no side effects.

Deciding (``decide``) does not depend on the review's uid, so the server may reuse a verdict
for a byte-identical object under the same config and facts; ``answer`` renders a verdict for
one review.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecarkit import errors
from sidecarkit.injection import configs, facts, injecting, placing, reports
from sidecarkit.webhook import patches, reviews

__all__ = ["Outcome", "Verdict", "admit", "answer", "decide"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to answer, whoever asked."""

    decision: str
    """``patched``, ``allowed`` (nothing to change) or ``denied``."""
    reason: str
    """The deciding reason code, for metrics and logs."""
    ops: tuple[patches.Operation, ...] = ()
    patch: str = ""
    """``ops`` encoded once for the wire (base64 JSON), so a cached verdict is not re-encoded."""
    warnings: tuple[str, ...] = ()
    status: tuple[int, str] | None = None
    """(HTTP-like code, message) of a denial."""
    error: BaseException | None = None
    """An unexpected exception that led to a denial, for the server to log."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A verdict rendered for one review."""

    body: bytes
    verdict: Verdict


def _deny(code: int, message: str, reason: str, error: BaseException | None = None) -> Verdict:
    return Verdict("denied", reason, status=(code, message), error=error)


def decide(request: Mapping[str, Any], config: configs.Config, cluster: facts.Facts) -> Verdict:
    """Decide on ``request``; never raises."""
    if request.get("operation") != "CREATE":
        return Verdict("allowed", "not-create")
    obj = request.get("object")
    if not isinstance(obj, dict):
        return _deny(
            400, "request.object is missing or not an object; nothing to admit", "bad-object"
        )
    try:
        record = placing.Record()
        new, report = injecting.inject(
            obj, config, cluster, location="request.object", plain=True, record=record
        )
        ops, json = _patch(obj, new, record) if new is not obj else ([], None)
    except RecursionError:
        # orjson accepts 1,024 levels; no Kubernetes object comes near, Python's stack does.
        message = "sidecarkit: request.object nests too deeply to be a Kubernetes object"
        return _deny(400, message, "bad-object")
    except errors.InputError as exc:
        return _deny(400, f"sidecarkit: {exc}", "bad-input")
    except Exception as exc:
        message = f"sidecarkit: internal error while injecting: {type(exc).__name__}: {exc}"
        return _deny(500, message, "internal-error", exc)
    reasons = _reasons(report)
    warnings = tuple(f"sidecarkit: {r.code}: {r.message}" for r in reasons if r.code.is_warning)
    reason = str(reasons[-1].code) if reasons else "none"
    patch = reviews.encode_patch(ops, json=json)
    return Verdict("patched" if ops else "allowed", reason, tuple(ops), patch, warnings)


def answer(review: reviews.Review, verdict: Verdict) -> bytes:
    """The response body for ``review``."""
    if verdict.status is not None:
        return reviews.deny(review, code=verdict.status[0], message=verdict.status[1])
    return reviews.allow(review, patch=verdict.patch, warnings=verdict.warnings)


def admit(review: reviews.Review, config: configs.Config, cluster: facts.Facts) -> Outcome:
    """Decide on ``review`` and render the answer; never raises."""
    verdict = decide(review.request, config, cluster)
    return Outcome(answer(review, verdict), verdict)


def _patch(
    obj: dict[str, Any], new: Any, record: placing.Record
) -> tuple[list[patches.Operation], bytes | None]:
    """The operations from ``obj`` to its injected ``new``, and their JSON if known: what
    placing recorded, when it could (the same operations, in the same order, as the diff),
    else the diff."""
    if not record.complete or record.uses != 1:
        return patches.diff(obj, new), None
    return record.ops, record.json()


def _reasons(report: reports.Report) -> tuple[reports.Reason, ...]:
    return tuple(r for d in report.decisions for r in d.reasons)
