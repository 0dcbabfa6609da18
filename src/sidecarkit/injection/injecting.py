"""``inject`` and ``uninject``: the pure core behind the CLI and the webhook.

Theory of operation, for one object:

1. Find its pod template (``k8s.workloads``); kinds without one pass through untouched.
2. Decide opt-in from labels and namespace facts (``policy.opt_in``); skipped pods are untouched.
3. Read the annotations into a selection of profiles, settings and modes (``policy.select``).
4. On a deep copy: strip what an earlier injection recorded (``statuses.strip``), render each
   profile, check conflicts (``conflicts.check``), place the parts (``placing.place``).
5. If the new content hash equals the recorded one, return the *original* object: nothing to do.

The input is never modified. An unchanged object is returned as the same object, which lets the
YAML shell write it back byte for byte. Objects may be plain dicts or ruamel's round-trip
subclasses; only the mapping and sequence protocols are used, so comments survive the copy.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

from sidecarkit import errors
from sidecarkit.injection import (
    configs,
    conflicts,
    facts,
    placing,
    policy,
    profiles,
    reports,
    statuses,
)
from sidecarkit.k8s import workloads

__all__ = ["inject", "uninject"]

Code = reports.Code
Reason = reports.Reason
Document = Any
_Handler = Callable[[MutableMapping[str, Any], str], tuple[Any, reports.Decision]]


def inject(
    document: Document,
    config: configs.Config | None = None,
    cluster: facts.Facts | None = None,
    *,
    location: str = "document 1",
) -> tuple[Document, reports.Report]:
    """Return ``document`` with sidecars injected where it asks for them, and the report.

    ``document`` is one Kubernetes object (a ``kind: List`` is handled item by item), or None
    for an empty YAML document. Raises an InputError subclass for pods that cannot be injected
    as asked, naming the object and the fix.
    """
    config = config or configs.Config()
    cluster = cluster or facts.Facts()

    def handle(obj: MutableMapping[str, Any], where: str) -> tuple[Any, reports.Decision]:
        return _inject_object(obj, config, cluster, where)

    return _walk(document, handle, location)


def uninject(
    document: Document, *, location: str = "document 1"
) -> tuple[Document, reports.Report]:
    """Return ``document`` without anything the ``sidecarkit.io/status`` annotations record."""
    return _walk(document, _uninject_object, location)


def _walk(document: Document, handle: _Handler, location: str) -> tuple[Document, reports.Report]:
    if document is None:
        reason = Reason(Code.EMPTY_DOCUMENT, "the document is empty")
        return document, reports.Report((reports.Decision(location, "-", (reason,), False),))
    if not isinstance(document, dict):
        reason = Reason(
            Code.UNSUPPORTED_KIND,
            f"a {type(document).__name__} is not a Kubernetes object; passed through",
        )
        return document, reports.Report((reports.Decision(location, "-", (reason,), False),))
    if document.get("kind") == "List" and isinstance(document.get("items"), list):
        return _walk_list(document, handle, location)
    new, decision = handle(document, location)
    return new, reports.Report((decision,))


def _walk_list(
    document: MutableMapping[str, Any], handle: _Handler, location: str
) -> tuple[Document, reports.Report]:
    report = reports.Report()
    changed: dict[int, Any] = {}
    for index, item in enumerate(document["items"]):
        new, sub = _walk(item, handle, f"{location}, items[{index}]")
        report += sub
        if new is not item:
            changed[index] = new
    if not changed:
        return document, report
    result = copy.deepcopy(document)
    for index, new in changed.items():
        result["items"][index] = new
    return result, report


def _skip(location: str, obj: MutableMapping[str, Any], reason: Reason) -> reports.Decision:
    return reports.Decision(location, workloads.describe(obj), (reason,), False)


def _inject_object(
    obj: MutableMapping[str, Any],
    config: configs.Config,
    cluster: facts.Facts,
    location: str,
) -> tuple[Any, reports.Decision]:
    target = workloads.describe(obj)
    if workloads.template_path(obj.get("kind")) is None:
        return obj, _skip(
            location,
            obj,
            Reason(
                Code.UNSUPPORTED_KIND,
                f"kind {obj.get('kind')!r} has no pod template; passed through",
            ),
        )
    template = workloads.pod_template(obj)
    if template is None:
        return obj, _skip(
            location,
            obj,
            Reason(Code.NO_POD_TEMPLATE, "the object has no pod template spec; passed through"),
        )
    labels = _mapping(template, "labels", target)
    annotations = _mapping(template, "annotations", target)
    skipped = policy.opt_in(labels, cluster, target=target)
    if skipped is not None:
        if policy.STATUS_ANNOTATION in annotations:
            skipped = Reason(
                skipped.code,
                skipped.message
                + (
                    "; it still has sidecars from an earlier injection, which "
                    "`sidecarkit uninject` removes"
                ),
            )
        return obj, _skip(location, obj, skipped)

    selection = policy.select(annotations, config, cluster, target=target)
    old = (
        statuses.decode(annotations[policy.STATUS_ANNOTATION], target=target)
        if policy.STATUS_ANNOTATION in annotations
        else None
    )
    result = _copy(obj)
    new_template = workloads.pod_template(result)
    assert new_template is not None
    _check_shape(new_template["spec"], target)
    if old is not None:
        statuses.strip(new_template, old)

    reasons = list(selection.reasons)
    spec = new_template["spec"]
    host_network = spec.get("hostNetwork") is True
    run_to_completion = spec.get("restartPolicy") in ("Never", "OnFailure")
    rendered: list[conflicts.Rendered] = []
    for profile in selection.chosen:
        if host_network and not profile.allow_host_network:
            reasons.append(
                Reason(
                    Code.SKIPPED_HOST_NETWORK,
                    f"profile {profile.name} does not work in a hostNetwork pod: its ports would "
                    "be the node's; skipped",
                    profile.name,
                )
            )
            continue
        mode = selection.modes[profile.name]
        ctx = profiles.Context(mode=mode, run_to_completion=run_to_completion)
        values = tuple(selection.values[profile.name].items())
        if sum(len(v) for _, v in values) <= _CACHEABLE_SETTINGS:
            parts = _render(profile.render, values, ctx)
        else:  # huge annotation values: render, but don't keep them alive in the cache
            parts = profile.render(dict(values), ctx)
        rendered.append(conflicts.Rendered(profile.name, mode, parts))
    if run_to_completion and any(
        r.mode is profiles.Mode.LEGACY and r.parts.sidecars for r in rendered
    ):
        rendered.append(placing.lifecycle_parts())

    if not rendered:
        if not selection.chosen:
            reasons.append(
                Reason(
                    Code.SKIPPED_NO_PROFILES,
                    f"annotation {policy.PROFILES_ANNOTATION} names no profile; nothing to inject",
                )
            )
        if old is None:
            return obj, reports.Decision(location, target, tuple(reasons), False)
        reasons.append(Reason(Code.UNINJECTED, "removed the sidecars of an earlier injection"))
        return result, reports.Decision(location, target, tuple(reasons), True)

    conflicts.check(spec, rendered, target=target)
    status, warnings = placing.place(new_template, rendered, run_to_completion=run_to_completion)
    reasons.extend(warnings)
    summary = ", ".join(
        f"{r.profile} ({r.mode})" for r in rendered if r.profile != placing.LIFECYCLE
    )
    if old is not None and old.hash == status.hash:
        reasons.append(Reason(Code.UP_TO_DATE, f"already has {summary}; nothing to do"))
        return obj, reports.Decision(location, target, tuple(reasons), False)
    if old is not None:
        reasons.append(Reason(Code.REINJECTED, f"replaced earlier sidecars with {summary}"))
    else:
        reasons.append(Reason(Code.INJECTED, f"added {summary}"))
    return result, reports.Decision(location, target, tuple(reasons), True)


def _uninject_object(obj: MutableMapping[str, Any], location: str) -> tuple[Any, reports.Decision]:
    target = workloads.describe(obj)
    template = workloads.pod_template(obj)
    if template is None:
        code = (
            Code.UNSUPPORTED_KIND
            if workloads.template_path(obj.get("kind")) is None
            else Code.NO_POD_TEMPLATE
        )
        return obj, _skip(location, obj, Reason(code, "nothing to remove; passed through"))
    annotations = _mapping(template, "annotations", target)
    if policy.STATUS_ANNOTATION not in annotations:
        return obj, _skip(
            location,
            obj,
            Reason(
                Code.NOT_INJECTED, f"no {policy.STATUS_ANNOTATION} annotation; nothing to remove"
            ),
        )
    status = statuses.decode(annotations[policy.STATUS_ANNOTATION], target=target)
    result = _copy(obj)
    new_template = workloads.pod_template(result)
    assert new_template is not None
    statuses.strip(new_template, status)
    names = ", ".join(p.name for p in status.profiles if p.name != placing.LIFECYCLE)
    reason = Reason(Code.UNINJECTED, f"removed {names or 'the injected parts'}")
    return result, reports.Decision(location, target, (reason,), True)


#: Settings longer than this in total are rendered but not cached (memory stays bounded).
_CACHEABLE_SETTINGS = 4096


@functools.lru_cache(maxsize=512)
def _render(
    render: profiles.Renderer, values: tuple[tuple[str, str], ...], ctx: profiles.Context
) -> profiles.Parts:
    """Rendering is pure, and the same few settings come back for every pod of a workload.

    Keyed by the render function itself, which is new for every loaded config, so a reloaded
    profile never gets an old profile's parts. The parts are shared: nobody may mutate them.
    """
    return render(dict(values), ctx)


def _copy(obj: MutableMapping[str, Any]) -> Any:
    """A deep copy; plain JSON data (the webhook's) goes through orjson, many times faster."""
    if type(obj) is dict:
        try:
            return orjson.loads(orjson.dumps(obj))
        except TypeError:
            pass  # not plain JSON after all (a YAML timestamp, say): copy it the slow way
    return copy.deepcopy(obj)


def _mapping(template: MutableMapping[str, Any], key: str, target: str) -> MutableMapping[str, Any]:
    metadata = template.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise errors.ManifestError(f"{target}: the pod template's metadata must be a mapping")
    value = metadata.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.ManifestError(
            f"{target}: the pod template's metadata.{key} must be a mapping of strings"
        )
    return value


def _check_shape(spec: MutableMapping[str, Any], target: str) -> None:
    """Refuse pod specs whose lists we would have to edit but cannot read."""
    for key in ("containers", "initContainers", "volumes"):
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
            raise errors.ManifestError(
                f"{target}: spec.{key} of the pod template must be a list of objects; "
                "fix the manifest"
            )
    for c in spec.get("containers") or ():
        for key in ("env", "volumeMounts", "command"):
            value = c.get(key)
            if value is not None and not isinstance(value, list):
                raise errors.ManifestError(
                    f"{target}: spec.containers[{c.get('name')}].{key} must be a list; "
                    "fix the manifest"
                )
