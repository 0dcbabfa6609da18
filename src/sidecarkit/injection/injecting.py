"""``inject`` and ``uninject``: the pure core behind the CLI and the webhook.

Theory of operation, for one object:

1. Find its pod template (``k8s.workloads``); kinds without one pass through untouched.
2. Decide opt-in from labels and namespace facts (``policy.opt_in``); skipped pods are untouched.
3. Read the annotations into a selection of profiles, settings and modes (``policy.select``).
4. On a deep copy: strip what an earlier injection recorded (``statuses.strip``), render each
   profile, check conflicts (``conflicts.check``), place the parts (``placing.place``).
5. If the new content hash equals the recorded one, return the *original* object: nothing to do.

Steps 3 and 4 are mostly the same for every pod that asks for the same profiles with the same
settings: selection, rendering, the sets conflicts are checked against and what placement
inserts come from a cached ``plans.Plan``, and only what depends on the pod is done per pod.

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
    plans,
    policy,
    reports,
    shapes,
    sharing,
    statuses,
)
from sidecarkit.k8s import workloads

__all__ = ["Handler", "inject", "uninject", "walk"]

Code = reports.Code
Reason = reports.Reason
Document = Any
Handler = Callable[[MutableMapping[str, Any], str], tuple[Any, reports.Decision]]


def inject(
    document: Document,
    config: configs.Config | None = None,
    cluster: facts.Facts | None = None,
    *,
    location: str = "document 1",
    plain: bool = False,
    owned: bool = False,
    record: placing.Record | None = None,
) -> tuple[Document, reports.Report]:
    """Return ``document`` with sidecars injected where it asks for them, and the report.

    ``document`` is one Kubernetes object (a ``kind: List`` is handled item by item), or None
    for an empty YAML document. Raises an InputError subclass for pods that cannot be injected
    as asked, naming the object and the fix.

    ``plain`` says that ``document`` is plain JSON data (dicts, lists, str, int, float, bool,
    None, as a JSON parser returns it) and that neither it nor the result will be modified
    afterwards: instead of copies, the result then holds the parts injection leaves alone
    (shared with ``document``) and the parts it inserts (shared with other results). The
    webhook, which only diffs the two, saves the copies and most of the diff that way; the
    result is equal either way.

    ``owned`` says that the caller hands ``document`` over: it is changed in place instead of
    copied, so the result is ``document`` itself and only the report's ``changed`` tells
    whether anything was done. The CLI, which writes each document once and drops it, saves
    the copy, and ruamel's anchors and merge keys, which a copy loses, survive.

    ``record`` is filled with what placing added, when it can say (``placing.Record``): the
    webhook then answers with that instead of diffing the whole pod.
    """
    config = config or _default_config()
    cluster = cluster or facts.Facts()
    if record is not None and isinstance(document, dict) and workloads.is_list(document):
        record = None  # several templates, under items/N: not recorded

    def handle(obj: MutableMapping[str, Any], where: str) -> tuple[Any, reports.Decision]:
        return _inject_object(obj, config, cluster, where, plain=plain, owned=owned, record=record)

    return walk(document, handle, location)


def uninject(
    document: Document,
    *,
    location: str = "document 1",
    owned: bool = False,
    kinds: workloads.Kinds = workloads.NO_KINDS,
) -> tuple[Document, reports.Report]:
    """Return ``document`` without anything the ``sidecarkit.io/status`` annotations record.

    ``owned`` as for ``inject``; ``kinds``: workload kinds beyond the built-in ones (a
    config's ``workloads``).
    """

    def handle(obj: MutableMapping[str, Any], where: str) -> tuple[Any, reports.Decision]:
        return _uninject_object(obj, where, owned=owned, kinds=kinds)

    return walk(document, handle, location)


def walk(document: Document, handle: Handler, location: str) -> tuple[Document, reports.Report]:
    """Call ``handle`` on ``document``, or on each item of a ``List`` (recursively)."""
    if document is None:
        reason = Reason(Code.EMPTY_DOCUMENT, "the document is empty")
        return document, reports.Report((reports.Decision(location, "-", (reason,), False),))
    if not isinstance(document, dict):
        reason = Reason(
            Code.UNSUPPORTED_KIND,
            f"a {type(document).__name__} is not a Kubernetes object; passed through",
        )
        return document, reports.Report((reports.Decision(location, "-", (reason,), False),))
    if workloads.is_list(document):
        return _walk_items(document, handle, location)
    new, decision = handle(document, location)
    return new, reports.Report((decision,))


def _walk_items(
    document: MutableMapping[str, Any], handle: Handler, location: str
) -> tuple[Document, reports.Report]:
    report = reports.Report()
    changed: dict[int, Any] = {}
    for index, item in enumerate(document["items"]):
        new, sub = walk(item, handle, f"{location}, items[{index}]")
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
    *,
    plain: bool,
    owned: bool,
    record: placing.Record | None = None,
) -> tuple[Any, reports.Decision]:
    target = workloads.describe(obj)
    path = workloads.template_path(obj, config.workloads)
    if path is None:
        return obj, _skip(
            location,
            obj,
            Reason(
                Code.UNSUPPORTED_KIND,
                f"{obj.get('apiVersion') or '<no apiVersion>'} {obj.get('kind')} has no pod "
                "template that sidecarkit knows of; passed through",
            ),
        )
    template = workloads.pod_template(obj, config.workloads, path=path)
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
    shapes.check(template, path=".".join(path), target=target)

    # Stripping an earlier injection cannot change what these two say (it deletes only
    # collections it left empty), so the original pod tells.
    host_network = template["spec"].get("hostNetwork") is True
    run_to_completion = template["spec"].get("restartPolicy") in ("Never", "OnFailure")
    plan = plans.find(
        annotations,
        config,
        cluster,
        host_network=host_network,
        run_to_completion=run_to_completion,
    )
    selection = (
        plan.selection
        if plan is not None
        else policy.select(annotations, config, cluster, target=target)
    )
    old = (
        statuses.decode(annotations[policy.STATUS_ANNOTATION], target=target)
        if policy.STATUS_ANNOTATION in annotations
        else None
    )
    if plain and old is None and isinstance(obj, dict) and _writable(obj):
        result = _copy_for_placing(obj, path)
    else:
        result = _own(obj, path, owned=owned, plain=plain)
    new_template = workloads.pod_template(result, config.workloads, path=path)
    assert new_template is not None
    if old is not None:
        statuses.strip(new_template, old)
    if plan is None:
        plan = plans.build(
            selection, host_network=host_network, run_to_completion=run_to_completion
        )

    reasons = list(plan.reasons)
    spec = new_template["spec"]
    rendered = plan.rendered

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

    if plan.added is None or conflicts.clashes(spec, plan.added):
        conflicts.check(spec, rendered, target=target)
    if record is not None:
        record.uses += 1
        record.path = "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in path)
    status, warnings = placing.place(
        new_template,
        rendered,
        run_to_completion=run_to_completion,
        prepared=plan.placement,
        share=plain,
        # Stripping an earlier injection removes things: only a first injection is recorded.
        record=record if old is None else None,
    )
    reasons.extend(warnings)
    summary = plan.summary
    if (
        old is not None
        and statuses.same(old, status)
        and _init_names(template) == _init_names(new_template)
    ):
        reasons.append(Reason(Code.UP_TO_DATE, f"already has {summary}; nothing to do"))
        return obj, reports.Decision(location, target, tuple(reasons), False)
    if old is not None:
        revisions = _revisions(old, status)
        reasons.append(
            Reason(Code.REINJECTED, f"replaced earlier sidecars with {summary}{revisions}")
        )
    else:
        reasons.append(Reason(Code.INJECTED, f"added {summary}"))
    return result, reports.Decision(location, target, tuple(reasons), True)


def _uninject_object(
    obj: MutableMapping[str, Any], location: str, *, owned: bool, kinds: workloads.Kinds
) -> tuple[Any, reports.Decision]:
    target = workloads.describe(obj)
    path = workloads.template_path(obj, kinds)
    template = workloads.pod_template(obj, kinds)
    if template is None:
        code = Code.UNSUPPORTED_KIND if path is None else Code.NO_POD_TEMPLATE
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
    assert path is not None
    shapes.check(template, path=".".join(path), target=target)
    result = _own(obj, path, owned=owned, plain=False)
    new_template = workloads.pod_template(result, kinds)
    assert new_template is not None
    statuses.strip(new_template, status)
    names = ", ".join(p.name for p in status.profiles if p.name != placing.LIFECYCLE)
    reason = Reason(Code.UNINJECTED, f"removed {names or 'the injected parts'}")
    return result, reports.Decision(location, target, (reason,), True)


def _init_names(template: MutableMapping[str, Any]) -> list[object]:
    """The order of the init containers, which another webhook may have changed since: a
    network-setup container appended after the sidecars must end up before them again."""
    items = template["spec"].get("initContainers")
    return [c.get("name") for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _revisions(old: statuses.Status, new: statuses.Status) -> str:
    """`` (logs revision a -> b)`` for the profiles whose revision changed, for the report."""
    before = {p.name: p.revision for p in old.profiles}
    changes = [
        f"{p.name} revision {before.get(p.name) or 'unrecorded'} -> {p.revision}"
        for p in new.profiles
        if p.name != placing.LIFECYCLE and before.get(p.name) != p.revision
    ]
    return f" ({', '.join(changes)})" if changes else ""


@functools.cache
def _default_config() -> configs.Config:
    """The built-in config, made once: a Config never changes, and plans are cached per config."""
    return configs.Config()


def _writable(obj: dict[str, Any]) -> bool:
    """Whether orjson can write ``obj``, so that ``_copy`` would copy it without recursing.

    What it cannot write (nesting past 255 levels, integers past 64 bits) keeps taking the full
    copy, whose deep recursion is how a pod nested deeper than the stack has always been
    refused; sharing would accept it.
    """
    try:
        orjson.dumps(obj)
    except TypeError:
        return False
    return True


def _copy_for_placing(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    """A copy of plain JSON ``obj`` that placing may modify, sharing everything else with it.

    Copied: the path to the pod template, the template, its metadata and annotations, its spec,
    the spec's lists of containers, init containers and volumes, and each container of
    ``containers`` with its volumeMounts, env and command. That is everything ``placing.place``
    changes; a pod that still carries an earlier injection is copied whole, for stripping.
    """
    result = dict(obj)
    node = result
    for key in path:
        child = dict(node[key])
        node[key] = child
        node = child
    metadata = node.get("metadata")
    if isinstance(metadata, dict):
        node["metadata"] = metadata = dict(metadata)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            metadata["annotations"] = dict(annotations)
    node["spec"] = spec = dict(node["spec"])
    for key in ("initContainers", "volumes"):
        if isinstance(spec.get(key), list):
            spec[key] = list(spec[key])
    containers = spec.get("containers")
    if isinstance(containers, list):
        spec["containers"] = [_copy_container(c) if isinstance(c, dict) else c for c in containers]
    return result


def _copy_container(container: dict[str, Any]) -> dict[str, Any]:
    copied = dict(container)
    for key in ("volumeMounts", "env", "command"):
        if isinstance(copied.get(key), list):
            copied[key] = list(copied[key])
    return copied


def _own(obj: MutableMapping[str, Any], path: tuple[str, ...], *, owned: bool, plain: bool) -> Any:
    """``obj`` (owned) or a copy of it, with every node that injection edits unshared."""
    result = obj if owned else _copy(obj)
    if not plain:
        sharing.unshare(result, path)
    return result


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
