"""The injected corpus passes the real API server's validation wherever the input does.

Every input of ``../shared/corpus/injection`` is injected offline as if its namespace opted in,
and each object the API server knows is sent, before and after, as a server-side apply dry run
into a test namespace. The API server's own validation (unknown fields, duplicate names, the
native-sidecar rules, ports, probes) must accept the output of every object whose input it
accepts; inputs it rejects (some are deliberately broken) are only counted.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.core.exceptions import LoadResourceError

from sidecarkit.injection import Facts, inject
from sidecarkit.k8s import manifests
from tests.support import kube as k

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "injection"
INDEX = json.loads((CORPUS / "index.json").read_text()) if CORPUS.exists() else []
OPTED_IN = Facts(namespace_labels={"sidecarkit.io/inject": "true"})

pytestmark = pytest.mark.skipif(not INDEX, reason="../shared/corpus is not next to the repository")


def _objects(document: Any) -> list[Any]:
    if isinstance(document, dict) and document.get("kind") == "List":
        return [item for item in document.get("items") or [] if isinstance(item, dict)]
    return [document] if isinstance(document, dict) else []


def _placed(obj: Any, namespace: str, serial: int) -> Any:
    """``obj`` as plain JSON in ``namespace``, with a name (apply needs one)."""
    plain = json.loads(json.dumps(obj))
    metadata = plain.setdefault("metadata", {})
    metadata["namespace"] = namespace
    metadata.pop("generateName", None)
    metadata.setdefault("name", f"generated-{serial}")
    return plain


def _verdict(kube: Client, obj: Any) -> str | None:
    """None when the API server accepts ``obj``, else its message."""
    try:
        k.apply_dry_run(kube, obj)
    except ApiError as exc:
        return str(exc.status.message)
    return None


def test_injected_corpus_objects_pass_where_their_inputs_pass(kube: Client) -> None:
    namespace = k.namespace(kube, "corpus", labels={"sidecarkit.io/inject": "true"})
    checked, rejected_inputs, unknown_kinds = [], [], set()
    serial = 0
    for entry in INDEX:
        if entry["parse_error"]:
            continue
        text = (CORPUS / entry["file"]).read_text()
        for doc in manifests.load_stream(text, source=entry["file"]):
            new, _ = inject(copy.deepcopy(doc.data), cluster=OPTED_IN)
            for before, after in zip(_objects(doc.data), _objects(new), strict=True):
                serial += 1
                where = f"{entry['file']} document {doc.index} ({before.get('kind')})"
                try:
                    problem = _verdict(kube, _placed(before, namespace, serial))
                except LoadResourceError:
                    unknown_kinds.add(f"{before.get('apiVersion')} {before.get('kind')}")
                    continue
                if problem is not None:
                    rejected_inputs.append(f"{where}: {problem}")
                    continue
                after_problem = _verdict(kube, _placed(after, namespace, serial))
                assert after_problem is None, (
                    f"{where}: input accepted, injected output not: {after_problem}"
                )
                checked.append(where)

    print(f"{len(checked)} objects accepted before and after injection")
    print(f"unknown to the API server: {sorted(unknown_kinds)}")
    print("inputs the API server rejects:", *rejected_inputs, sep="\n  ")
    assert len(checked) >= 30
