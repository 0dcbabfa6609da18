"""Putting rendered profiles into a pod template, in a defined order, and recording it.

The order, which users can rely on:

1. ``initContainers``: for each profile in ``sidecarkit.io/profiles`` order, its run-once init
   containers, then (native mode) its sidecars with ``restartPolicy: Always``; then the user's
   own init containers, which can therefore use the sidecars (reach a proxy, write logs).
2. ``containers``: (legacy mode) each profile's sidecars in the same order, each holding the
   next container until it is ready; then the user's containers, in their order.
3. ``volumes``: the user's, then the profiles' (shared ones once).
4. Each of the user's ``containers`` gets the profiles' app mounts and env appended.

Legacy mode in a run-to-completion pod (restartPolicy Never or OnFailure) adds a small memory
volume at ``/run/sidecarkit`` to the sidecars and the app. App containers with a ``command`` are
wrapped so that their exit code lands in ``/run/sidecarkit/<name>.done``; legacy sidecars get
``SIDECARKIT_EXIT_WHEN_DONE`` naming the app containers, and exit once all of them are done, so
the Job can complete. Native mode needs none of this: the kubelet stops native sidecars itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, MutableSequence, Sequence
from typing import Any, Final

import orjson

from sidecarkit.injection import conflicts, policy, profiles, reports, statuses

__all__ = ["LIFECYCLE", "LIFECYCLE_DIR", "lifecycle_parts", "place"]

LIFECYCLE: Final = "@lifecycle"
"""The name under which the status records the run-to-completion plumbing."""
LIFECYCLE_DIR: Final = "/run/sidecarkit"
DEFAULT_CONTAINER_ANNOTATION: Final = "kubectl.kubernetes.io/default-container"

_LIFECYCLE_VOLUME: Final = {
    "name": "sidecarkit-lifecycle",
    "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
}
_LIFECYCLE_MOUNT: Final = {"name": "sidecarkit-lifecycle", "mountPath": LIFECYCLE_DIR}

Json = Any


def lifecycle_parts() -> conflicts.Rendered:
    """The shared volume through which legacy sidecars learn that the app has finished."""
    return conflicts.Rendered(
        LIFECYCLE,
        profiles.Mode.LEGACY,
        profiles.Parts(volumes=(_LIFECYCLE_VOLUME,), app_mounts=(_LIFECYCLE_MOUNT,)),
    )


def _list(
    mapping: MutableMapping[str, Any],
    key: str,
    created: list[str],
    path: str,
    *,
    before: str | None = None,
) -> MutableSequence[Any]:
    """``mapping[key]`` as a list, creating it (and noting so) when absent or null.

    A created key goes just before ``before`` when the mapping can insert (ruamel's round-trip
    maps can), so that YAML output reads in the conventional order: initContainers, containers.
    """
    value = mapping.get(key)
    if isinstance(value, list):
        return value
    new: list[Any] = []
    insert = getattr(mapping, "insert", None)
    if key not in mapping and before is not None and before in mapping and insert is not None:
        insert(list(mapping).index(before), key, new)
    else:
        mapping[key] = new
    created.append(path)
    return new


def place(
    template: MutableMapping[str, Any],
    rendered: Sequence[conflicts.Rendered],
    *,
    run_to_completion: bool,
) -> tuple[statuses.Status, list[reports.Reason]]:
    """Add ``rendered`` to ``template`` in place; return the status record and any warnings.

    ``template`` has been stripped of earlier injections and checked for conflicts.
    """
    spec = template["spec"]
    created: list[str] = []
    reasons: list[reports.Reason] = []
    app = [c for c in spec.get("containers") or () if isinstance(c, dict)]
    app_names = [str(c.get("name")) for c in app]
    legacy_exit = run_to_completion and any(
        r.mode is profiles.Mode.LEGACY and r.parts.sidecars for r in rendered
    )

    new_init: list[Json] = []
    new_legacy: list[Json] = []
    records: list[statuses.ProfileRecord] = []
    volumes: dict[str, Json] = {}
    mounts: dict[str, Json] = {}
    env: dict[str, Json] = {}
    for r in rendered:
        init_names = [c["name"] for c in r.parts.init_containers]
        new_init.extend(r.parts.init_containers)
        sidecar_names: list[str] = []
        for rendered_sidecar in r.parts.sidecars:
            sidecar = dict(rendered_sidecar)
            sidecar_names.append(sidecar["name"])
            if r.mode is profiles.Mode.NATIVE:
                sidecar["restartPolicy"] = "Always"
                new_init.append(sidecar)
                continue
            if legacy_exit:
                sidecar["env"] = [
                    *sidecar.get("env", ()),
                    {"name": "SIDECARKIT_EXIT_WHEN_DONE", "value": ",".join(app_names)},
                    {"name": "SIDECARKIT_LIFECYCLE_DIR", "value": LIFECYCLE_DIR},
                ]
                sidecar["volumeMounts"] = [*sidecar.get("volumeMounts", ()), _LIFECYCLE_MOUNT]
            new_legacy.append(sidecar)
        native = r.mode is profiles.Mode.NATIVE
        records.append(
            statuses.ProfileRecord(
                name=r.profile,
                mode=str(r.mode),
                init_containers=tuple(init_names + (sidecar_names if native else [])),
                containers=tuple([] if native else sidecar_names),
                volumes=tuple(v["name"] for v in r.parts.volumes),
            )
        )
        for v in r.parts.volumes:
            volumes.setdefault(v["name"], v)
        for m in r.parts.app_mounts:
            mounts.setdefault(m["mountPath"], m)
        for e in r.parts.app_env:
            env.setdefault(e["name"], e)

    wrapped: set[str] = set()
    if legacy_exit:
        for c in app:
            if isinstance(c.get("command"), list) and c["command"]:
                wrapped.add(str(c["name"]))
            else:
                reasons.append(
                    reports.Reason(
                        reports.Code.LEGACY_JOB_UNWRAPPED,
                        f"container {c.get('name')!r} has no command, so the legacy sidecars "
                        f"cannot see it finish; give it a command, or make it create "
                        f"{LIFECYCLE_DIR}/{c.get('name')}.done when it is done",
                    )
                )

    added_annotations: list[str] = []
    metadata = template.get("metadata")
    if not isinstance(metadata, dict):
        metadata = template["metadata"] = {}
        created.append("metadata")
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
        created.append("metadata.annotations")
    if new_legacy and app_names and DEFAULT_CONTAINER_ANNOTATION not in annotations:
        # Legacy sidecars come first, and kubectl logs/exec would otherwise pick them.
        annotations[DEFAULT_CONTAINER_ANNOTATION] = app_names[0]
        added_annotations.append(DEFAULT_CONTAINER_ANNOTATION)

    digest = hashlib.sha256(
        orjson.dumps(
            [
                new_init,
                new_legacy,
                list(volumes.values()),
                list(mounts.values()),
                list(env.values()),
                sorted(wrapped),
                added_annotations,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:16]

    def fresh(items: list[Json]) -> list[Json]:
        # Every insertion gets its own plain copy: shared objects would come out as YAML anchors.
        return orjson.loads(orjson.dumps(items))  # type: ignore[no-any-return]

    if new_init:
        _list(spec, "initContainers", created, "spec.initContainers", before="containers")[:0] = (
            fresh(new_init)
        )
    if new_legacy:
        _list(spec, "containers", created, "spec.containers")[:0] = fresh(new_legacy)
    if volumes:
        _list(spec, "volumes", created, "spec.volumes").extend(fresh(list(volumes.values())))
    app_records: list[tuple[str, statuses.AppRecord]] = []
    for c in app:
        name = str(c.get("name"))
        path = f"spec.containers[{name}]"
        if mounts:
            _list(c, "volumeMounts", created, f"{path}.volumeMounts").extend(
                fresh(list(mounts.values()))
            )
        if env:
            _list(c, "env", created, f"{path}.env").extend(fresh(list(env.values())))
        if name in wrapped:
            c["command"][:0] = statuses.wrapper(name)
        app_records.append((name, statuses.AppRecord(tuple(mounts), tuple(env), name in wrapped)))

    status = statuses.Status(
        hash=digest,
        profiles=tuple(records),
        app=tuple(app_records),
        annotations=tuple(added_annotations),
        created=tuple(created),
    )
    annotations[policy.STATUS_ANNOTATION] = statuses.encode(status)
    return status, reasons
