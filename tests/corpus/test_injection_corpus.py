"""Conformance over the injector inputs other projects wrote (``../shared/corpus/injection``).

Every input is injected as if its namespace opted in, through the same stream handling the CLI
uses, and must keep the invariants in ``support/pods.py``: the output parses, validates against
the Kubernetes 1.33 schema with no error the input did not have, keeps original containers and
pod fields, leaves non-workloads alone, is idempotent, and uninjects back to the input.

Our policy for the corpus' suggested expectations: another mesh's opt-out annotation
(``sidecar.istio.io/inject: "false"``) is not ours, so those pods are injected; our own opt-out
is checked on every input instead. hostNetwork pods are skipped by both built-in profiles. OpenShift DeploymentConfigs are a
built-in workload kind, so where the corpus allows passing them through or injecting them
(``passthrough-or-inject``), they are injected.
Pods carrying another injector's sidecars get ours beside them, never a duplicate of ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sidecarkit.injection import Facts, inject, uninject
from sidecarkit.k8s import manifests, workloads
from tests.support import pods, schema

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "injection"
INDEX = json.loads((CORPUS / "index.json").read_text()) if CORPUS.exists() else []
OPTED_IN = Facts(namespace_labels={"sidecarkit.io/inject": "true"})
OPTED_OUT = Facts(namespace_labels={"sidecarkit.io/inject": "false"})

pytestmark = pytest.mark.skipif(not INDEX, reason="../shared/corpus is not next to the repository")


def _objects(document: Any) -> list[Any]:
    """The objects of a document: itself, or the items of a List."""
    if isinstance(document, dict) and document.get("kind") == "List":
        return list(document.get("items") or [])
    return [document]


def _load(entry: dict[str, Any]) -> tuple[str, list[manifests.Document]]:
    text = (CORPUS / entry["file"]).read_text()
    return text, manifests.load_stream(text, source=entry["file"])


@pytest.fixture(params=INDEX, ids=[e["file"] for e in INDEX])
def entry(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param  # type: ignore[no-any-return]


def test_the_corpus_is_all_there() -> None:
    assert len(INDEX) >= 34


def test_injection_keeps_every_invariant(entry: dict[str, Any]) -> None:
    _, documents = _load(entry)
    expectation = entry["expectation"]
    injected_any = False
    for doc in documents:
        new, _ = inject(doc.data, cluster=OPTED_IN, location=f"document {doc.index}")
        text = manifests.dump(doc, new)
        reparsed = manifests.load_stream(text, source="output")
        assert len(reparsed) == 1
        assert pods.plain(reparsed[0].data) == pods.plain(new)
        for before, after in zip(_objects(doc.data), _objects(new), strict=True):
            if not isinstance(before, dict) or workloads.pod_template(before) is None:
                assert pods.plain(after) == pods.plain(before)
                continue
            if pods.plain(after) == pods.plain(before):
                continue
            injected_any = True
            pods.assert_only_extended(before, after)
            pods.assert_names_unique(after)
            if schema.has_schema(pods.plain(before)):
                added = schema.errors(pods.plain(after)) - schema.errors(pods.plain(before))
                assert not added, f"injection added schema errors: {sorted(added)}"
        again, second = inject(new, cluster=OPTED_IN)
        assert again is new, "injecting twice changed the output"
        assert not second.changed
        back, _ = uninject(new)
        assert pods.plain(back) == pods.plain(doc.data)
    if (
        expectation.startswith(("inject", "already-injected", "skip"))
        and "per-policy" not in expectation
    ):
        assert injected_any, f"{entry['file']}: expected an injection"
    if expectation == "passthrough" or "per-policy" in expectation:
        assert not injected_any, f"{entry['file']}: expected no change"


def test_our_opt_out_leaves_every_input_byte_identical(entry: dict[str, Any]) -> None:
    text, documents = _load(entry)
    out = []
    for doc in documents:
        new, report = inject(doc.data, cluster=OPTED_OUT)
        assert not report.changed
        out.append(manifests.dump(doc, new))
    assert "".join(out) == text


def test_outputs_of_valid_inputs_validate_against_the_1_33_schema(entry: dict[str, Any]) -> None:
    _, documents = _load(entry)
    for doc in documents:
        new, _ = inject(doc.data, cluster=OPTED_IN)
        for before, after in zip(_objects(doc.data), _objects(new), strict=True):
            if not schema.has_schema(pods.plain(before)):
                continue
            if not schema.errors(pods.plain(before)):
                schema.validate(pods.plain(after))
                kubernetes_validate.validate(pods.plain(after), schema.VERSION, strict=True)
