"""AdmissionReview on the wire: typed, checked, and answered in the version it came in.

The API server sends ``admission.k8s.io/v1`` (and, from older configurations,
``v1beta1``, which has the same shape); the answer must carry the same apiVersion and echo the
request's ``uid``. A body we cannot read as a review at all gets HTTP 400 with what was wrong;
everything after that is answered with a review, allowed or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NotRequired, TypedDict

import orjson
import pybase64

from sidecarkit.webhook import patches

__all__ = [
    "API_VERSIONS",
    "AdmissionRequest",
    "AdmissionResponse",
    "AdmissionReview",
    "BadReview",
    "Review",
    "allow",
    "deny",
    "encode_patch",
    "parse",
]

API_VERSIONS: Final = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
#: Warnings past 4096 characters in total are dropped by the API server; each is kept short.
_WARNING_CHARS: Final = 240


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict, total=False):
    uid: str
    kind: GroupVersionKind
    namespace: str
    name: str
    operation: str
    object: dict[str, Any]
    oldObject: dict[str, Any] | None
    dryRun: bool


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[str]
    patch: NotRequired[str]
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]


class AdmissionReview(TypedDict, total=False):
    apiVersion: str
    kind: str
    request: AdmissionRequest
    response: AdmissionResponse


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer; the message says why (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Review:
    """A request we can answer: at least an apiVersion we speak and a uid to echo."""

    api_version: str
    uid: str
    request: dict[str, Any]


def parse(body: bytes) -> Review:
    """Check the envelope of an AdmissionReview; raise BadReview saying what is wrong."""
    if not body:
        raise BadReview("empty body; send an AdmissionReview as JSON")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadReview(f"body is a JSON {type(data).__name__}, not an AdmissionReview object")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if kind != "AdmissionReview":
        raise BadReview(f"kind is {kind!r}; expected 'AdmissionReview'")
    if api_version not in API_VERSIONS:
        raise BadReview(f"apiVersion is {api_version!r}; expected one of {', '.join(API_VERSIONS)}")
    request = data.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise BadReview("request.uid is missing, empty, not a string or longer than 128")
    return Review(api_version=str(api_version), uid=uid, request=request)


def _envelope(review: Review, response: AdmissionResponse) -> bytes:
    out: AdmissionReview = {
        "apiVersion": review.api_version,
        "kind": "AdmissionReview",
        "response": response,
    }
    return orjson.dumps(out)


def _warnings(warnings: Sequence[str]) -> list[str]:
    return [w if len(w) <= _WARNING_CHARS else w[: _WARNING_CHARS - 1] + "…" for w in warnings]


def encode_patch(ops: Sequence[patches.Operation], *, json: bytes | None = None) -> str:
    """``ops`` as the response's ``patch`` field: base64 of the JSON; empty for no change.

    ``json`` is ``orjson.dumps(list(ops))`` when the caller has it already.

    pybase64 (SIMD) writes the same standard alphabet, with padding, as the standard library,
    in a fraction of the time: a patch that inserts sidecars is kilobytes, and the standard
    library's encoder was a tenth of the instructions of a whole admission.
    """
    if not ops:
        return ""
    return pybase64.b64encode_as_string(orjson.dumps(list(ops)) if json is None else json)


def allow(
    review: Review,
    ops: Sequence[patches.Operation] = (),
    *,
    warnings: Sequence[str] = (),
    patch: str = "",
) -> bytes:
    """An allowed response, with a base64 JSONPatch when there is anything to change.

    ``patch`` is ``encode_patch(ops)`` when the caller has it already.
    """
    response: AdmissionResponse = {"uid": review.uid, "allowed": True}
    patch = patch or encode_patch(ops)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = patch
    if warnings:
        response["warnings"] = _warnings(warnings)
    return _envelope(review, response)


def deny(review: Review, *, code: int, message: str) -> bytes:
    """A refusal; the API server shows ``message`` to whoever created the object."""
    response: AdmissionResponse = {
        "uid": review.uid,
        "allowed": False,
        "status": {"code": code, "message": message},
    }
    return _envelope(review, response)
