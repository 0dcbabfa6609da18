"""The AdmissionReview envelope: what is refused with 400 and how answers look."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest

from sidecarkit.injection import Config, Facts
from sidecarkit.webhook import admitting, reviews


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"{", "body is not JSON"),
        (b"[1]", "body is a JSON list"),
        (b'{"kind":"Pod","apiVersion":"v1"}', "kind is 'Pod'"),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v2"}',
            "apiVersion is 'admission.k8s.io/v2'",
        ),
        (b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}', "request is missing"),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":7}}',
            "request.uid",
        ),
    ],
)
def test_bodies_that_are_not_reviews_say_why(body: bytes, message: str) -> None:
    with pytest.raises(reviews.BadReview, match=message.replace("(", r"\(")):
        reviews.parse(body)


def test_answers_echo_version_and_uid() -> None:
    review = reviews.parse(
        b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"abc"}}'
    )
    answer = orjson.loads(
        reviews.allow(review, [{"op": "add", "path": "/x", "value": 1}], warnings=["w" * 500])
    )
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    assert answer["response"]["uid"] == "abc"
    assert answer["response"]["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(answer["response"]["patch"])) == [
        {"op": "add", "path": "/x", "value": 1}
    ]
    assert len(answer["response"]["warnings"][0]) == 240
    denial = orjson.loads(reviews.deny(review, code=400, message="no"))
    assert denial["response"] == {
        "uid": "abc",
        "allowed": False,
        "status": {"code": 400, "message": "no"},
    }


@pytest.mark.parametrize("depth", [100, 500, 950])
def test_a_deeply_nested_pod_is_refused_with_400_or_admitted_never_crashes(depth: int) -> None:
    nested: Any = "leaf"
    for _ in range(depth):
        nested = {"x": nested}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"sidecarkit.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "deep": nested,
    }
    request = {"uid": "u", "operation": "CREATE", "namespace": "shop", "object": pod}
    verdict = admitting.decide(request, Config(), Facts())
    if depth >= 500:
        assert verdict.decision == "denied"
        assert verdict.status is not None
        assert verdict.status[0] == 400
        assert "nests too deeply" in verdict.status[1]
    else:
        assert verdict.decision == "patched"
