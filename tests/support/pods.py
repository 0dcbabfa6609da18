"""Invariants every injection must keep, shared by the corpus and the property tests."""

from __future__ import annotations

import json
from typing import Any

from sidecarkit.injection import policy
from sidecarkit.k8s import manifests, workloads


def plain(obj: Any) -> Any:
    return manifests.to_plain(obj)


def status_of(template: dict[str, Any]) -> dict[str, Any]:
    return json.loads(template["metadata"]["annotations"][policy.STATUS_ANNOTATION])  # type: ignore[no-any-return]


def _by_name(items: Any) -> dict[str, Any]:
    return {c["name"]: c for c in items or ()}


def assert_only_extended(before: dict[str, Any], after: dict[str, Any]) -> None:
    """The injected pod keeps every original container and pod field; it only adds.

    Original containers keep their relative order; each is equal to its original except for
    volumeMounts and env entries appended at the end (and, for wrapped legacy Job containers, a
    command prefix), all of which the status annotation records.
    """
    before_t, after_t = workloads.pod_template(before), workloads.pod_template(after)
    assert before_t is not None
    assert after_t is not None
    b, a = plain(before_t["spec"]), plain(after_t["spec"])
    status = status_of(plain(after_t))
    recorded = status["app"]
    for key in ("containers", "initContainers"):
        originals = [c["name"] for c in b.get(key) or ()]
        kept = [c["name"] for c in a.get(key) or () if c["name"] in originals]
        assert kept == originals, f"{key}: order of original containers changed"
        for name, original in _by_name(b.get(key)).items():
            new = dict(_by_name(a.get(key))[name])
            record = recorded.get(name) if key == "containers" else None
            for field in ("volumeMounts", "env"):
                old_items = original.get(field) or []
                new_items = new.get(field) or []
                assert new_items[: len(old_items)] == old_items, f"{name}.{field} changed"
                extra = new_items[len(old_items) :]
                if extra:
                    assert record is not None, f"{name}.{field} extended without a record"
                    names = record["mounts"] if field == "volumeMounts" else record["env"]
                    ident = "mountPath" if field == "volumeMounts" else "name"
                    assert [e[ident] for e in extra] == names
                if field in original:
                    new[field] = old_items
                else:
                    new.pop(field, None)
            if record and record["wrapped"]:
                new["command"] = new["command"][4:]
            assert new == original, f"container {name} changed"
    for key, value in b.items():
        if key in ("containers", "initContainers"):
            continue
        if key == "volumes":
            kept = [v for v in a.get("volumes") or () if v in value]
            assert kept == value, "original volumes changed"
            continue
        assert a.get(key) == value, f"pod field {key} changed"
    for key in ("labels", "annotations"):
        old = (plain(before_t).get("metadata") or {}).get(key) or {}
        new_meta = (plain(after_t).get("metadata") or {}).get(key) or {}
        for k, v in old.items():
            assert new_meta.get(k) == v, f"metadata.{key}.{k} changed"


def assert_names_unique(obj: dict[str, Any]) -> None:
    template = workloads.pod_template(obj)
    assert template is not None
    spec = template["spec"]
    names = [c["name"] for k in ("initContainers", "containers") for c in spec.get(k) or ()]
    assert len(names) == len(set(names)), names
    volumes = [v["name"] for v in spec.get("volumes") or ()]
    assert len(volumes) == len(set(volumes)), volumes
