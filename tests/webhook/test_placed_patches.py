"""The webhook's recorded patch equals the full diff, on every input we have.

For a pod injected for the first time, ``admitting`` answers with what placing recorded
(``placing.Record``) instead of diffing the pod; the answer must be the very operations, in
the very order, that the full ``patches.diff`` gives, or the answer bytes would change. Inputs: every object
of the golden files, of ``../shared/corpus/injection`` and of ``../shared/corpus/admission``,
each as it is and opted in with several profile sets and both modes, in a regular pod, in a
Job (run to completion: wrapped commands) and through its own kind.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
from ruamel.yaml import YAML

from sidecarkit import errors
from sidecarkit.injection import configs, facts, injecting, placing
from sidecarkit.k8s import workloads
from sidecarkit.webhook import admitting, patches, reviews
from tests.webhook.conftest import CORPUS

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VARIANTS = (
    None,
    ("logs", None),
    ("logs,metrics", None),
    ("metrics, logs", "legacy"),
    ("proxy", None),
    ("logs,proxy", "legacy"),
    ("mtls,logs", "native"),
)


def _documents() -> Iterator[tuple[str, Any]]:
    yaml = YAML(typ="safe", pure=True)
    files = sorted(p for p in GOLDEN.glob("*.yaml") if not p.name.endswith(".injected.yaml"))
    files += sorted((CORPUS / "injection").rglob("*.yaml"))
    files += sorted((CORPUS / "injection").rglob("*.yml"))
    for path in files:
        try:
            docs = list(yaml.load_all(path.read_text()))
        except Exception:  # corpus files that are meant not to parse
            continue
        for i, doc in enumerate(docs):
            yield f"{path.name}[{i}]", doc
    for path in sorted((CORPUS / "admission").rglob("*.json")):
        try:
            body = json.loads(path.read_text())
        except ValueError:
            continue
        request = body.get("request") if isinstance(body, dict) else None
        obj = request.get("object") if isinstance(request, dict) else body
        yield path.name, obj


def _plain(doc: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(doc))
    except TypeError:
        return None


def _variants(doc: Any) -> Iterator[Any]:
    """``doc`` as it is and opted in with each of ``VARIANTS``, itself and as a Job's pod."""
    for variant in VARIANTS:
        if not isinstance(doc, dict):
            return
        if variant is None:
            yield doc
            continue
        for as_job in (False, True):
            obj = copy.deepcopy(doc)
            try:
                template = workloads.pod_template(obj)
            except errors.InputError:
                continue
            if template is None or not isinstance(template.get("spec"), dict):
                continue
            metadata = template.setdefault("metadata", {})
            if not isinstance(metadata, dict):
                continue
            labels = metadata.setdefault("labels", {}) or {}
            annotations = metadata.setdefault("annotations", {}) or {}
            if not isinstance(labels, dict) or not isinstance(annotations, dict):
                continue
            metadata["labels"] = {**labels, "sidecarkit.io/inject": "true"}
            annotations = {**annotations, "sidecarkit.io/profiles": variant[0]}
            if variant[1] is not None:
                annotations["sidecarkit.io/mode"] = variant[1]
            metadata["annotations"] = annotations
            if as_job:
                template["spec"] = {**template["spec"], "restartPolicy": "Never"}
            yield obj


def _cases() -> list[tuple[str, Any]]:
    cases = []
    for name, doc in _documents():
        for n, obj in enumerate(_variants(doc)):
            plain = _plain(obj)
            if isinstance(plain, dict):
                cases.append((f"{name}#{n}", plain))
    return cases


CASES = _cases()


def test_there_are_enough_inputs_and_most_injections_are_recorded() -> None:
    injected = recorded = 0
    for _, obj in CASES:
        record = placing.Record()
        try:
            new, _ = injecting.inject(obj, location="x", plain=True, record=record)
        except errors.InputError:
            continue
        injected += new is not obj
        recorded += new is not obj and record.complete and record.uses == 1
    assert len(CASES) >= 300
    assert injected >= 300
    assert recorded >= 300


@pytest.mark.parametrize(("name", "obj"), CASES, ids=[c[0] for c in CASES])
def test_the_answer_patch_equals_the_full_diff(name: str, obj: Any) -> None:
    config, cluster = configs.Config(), facts.Facts()
    before = copy.deepcopy(obj)
    verdict = admitting.decide({"operation": "CREATE", "object": obj}, config, cluster)
    assert obj == before, "deciding must not modify the object"
    try:
        new, _ = injecting.inject(obj, config, cluster, location="request.object", plain=True)
    except errors.InputError:
        assert verdict.decision == "denied"
        return
    full = patches.diff(obj, new) if new is not obj else []
    assert list(verdict.ops) == full
    assert verdict.patch == reviews.encode_patch(full), "the answer's bytes must be the diff's"
    assert jsonpatch.apply_patch(copy.deepcopy(obj), list(verdict.ops)) == new
