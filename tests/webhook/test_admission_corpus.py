"""Every AdmissionReview body in ``../shared/corpus/admission`` over real HTTPS.

The corpus' expectations, as we answer them: ``mutate`` gets an allowed response with a
JSONPatch that, applied with an RFC 6902 library, gives a pod that keeps every injection
invariant; ``allow-no-patch`` and UPDATEs get allowed with no patch; v1beta1 reviews are
answered in v1beta1; malformed bodies get HTTP 400 with what is wrong, except a review with a
uid whose object is not a pod, which is allowed unchanged. ``dryRun`` changes nothing.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from tests.support import pods, webhooks
from tests.webhook.conftest import CORPUS

ADMISSION = CORPUS / "admission"
INDEX = json.loads((ADMISSION / "index.json").read_text()) if ADMISSION.exists() else []
pytestmark = pytest.mark.skipif(not INDEX, reason="../shared/corpus is not next to the repository")


def _body(entry: dict[str, Any]) -> bytes:
    text: str = (ADMISSION / str(entry["file"])).read_text()
    text = text.replace("TEST_NAMESPACE_REPLACE_ME", "shop")
    if entry["expectation"] == "object-only":
        wrapped = webhooks.review_for(json.loads(text))
        return json.dumps(wrapped).encode()
    return text.encode()


@pytest.fixture(params=INDEX, ids=[e["file"] for e in INDEX])
def entry(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param  # type: ignore[no-any-return]


def test_the_corpus_is_all_there() -> None:
    assert len(INDEX) >= 18


def test_each_body_gets_the_right_answer(entry: dict[str, Any], client: webhooks.Client) -> None:
    body = _body(entry)
    status, raw = client.request("POST", "/inject/namespace", body)
    expectation = entry["expectation"]
    sent = json.loads(body)
    if expectation == "error-response" and not (
        isinstance(sent, dict)
        and isinstance(sent.get("request"), dict)
        and sent["request"].get("uid")
    ):
        assert status == 400
        assert raw.startswith(b"sidecarkit: not an AdmissionReview: ")
        return
    assert status == 200, raw
    answer = json.loads(raw)
    request = sent["request"]
    assert answer["apiVersion"] == sent["apiVersion"]
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == request["uid"]
    assert isinstance(answer["response"]["allowed"], bool)
    ops = webhooks.patch_of(answer)
    if expectation in ("allow-no-patch", "mutate-or-allow-per-policy", "error-response"):
        assert answer["response"]["allowed"] is True
        assert ops == []
        return
    assert expectation in ("mutate", "mutate-no-side-effects", "version-handling", "object-only")
    assert answer["response"]["allowed"] is True
    assert ops, "expected a patch"
    assert not any(op["path"] in ("/metadata/name", "/metadata/namespace") for op in ops), (
        "the webhook must not invent a name or namespace"
    )
    original = request["object"]
    patched = jsonpatch.apply_patch(copy.deepcopy(original), ops)
    pods.assert_only_extended(original, patched)
    pods.assert_names_unique(patched)
    assert patched.get("spec", {}).get("ephemeralContainers") == original.get("spec", {}).get(
        "ephemeralContainers"
    )


def test_dry_run_gets_the_same_answer(entry: dict[str, Any], client: webhooks.Client) -> None:
    sent = json.loads(_body(entry))
    if not (isinstance(sent, dict) and isinstance(sent.get("request"), dict)):
        return
    answers = []
    for dry_run in (True, False):
        variant = copy.deepcopy(sent)
        variant["request"]["dryRun"] = dry_run
        answers.append(client.request("POST", "/inject/namespace", json.dumps(variant).encode()))
    assert answers[0] == answers[1]


def test_the_object_webhook_leaves_pods_without_the_label_alone(client: webhooks.Client) -> None:
    """Through ``/inject`` only the pod's own label opts in: corpus pods carry none."""
    sent = json.loads(_body({"file": "connaisseur/02_pod.json", "expectation": "mutate"}))
    answer = json.loads(client.request("POST", "/inject", json.dumps(sent).encode())[1])
    assert answer["response"] == {"uid": sent["request"]["uid"], "allowed": True}
