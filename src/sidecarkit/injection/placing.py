"""Putting rendered profiles into a pod template, in a defined order, and recording it.

The order, which users can rely on:

1. ``initContainers``: the user's network-setup init containers (Istio's ``istio-init``,
   Linkerd's ``linkerd-init``: ``profiles.NETWORK_SETUP``, or what a profile lists as
   ``afterInitContainers``), up to the last of them; then for each profile in
   ``sidecarkit.io/profiles`` order, its run-once init containers, then (native mode) its
   sidecars with ``restartPolicy: Always``; then the user's other init containers, which can
   therefore use the sidecars (reach a proxy, write logs).
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

__all__ = [
    "LIFECYCLE",
    "LIFECYCLE_DIR",
    "Placement",
    "Record",
    "lifecycle_parts",
    "place",
    "prepare",
]

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


class Record:
    """What ``place`` added to one pod template, as the additions a JSON diff would list.

    The webhook answers with a JSON Patch from the pod it was sent to the injected one.
    Diffing the two walks the whole pod; placing knows what it adds, so it writes it down:
    ``ops`` holds RFC 6902 ``add`` operations in the order, and with the list indexes, that
    ``patches.diff`` gives them (tests/webhook/test_placed_patches.py holds
    the two equal on every corpus and golden input). ``complete`` stays False whenever placing
    did more than add keys and list items after the user's (legacy sidecars in front of the
    app's containers, a created ``metadata``, a template that was stripped first, several
    templates): the caller then diffs.
    """

    __slots__ = ("complete", "known", "ops", "path", "uses")

    def __init__(self) -> None:
        self.ops: list[Json] = []
        self.known: dict[int, bytes] = {}
        """The JSON of an op's value by ``id`` of the op, when the placement had it already."""
        self.complete = False
        self.path = ""
        """The JSON pointer to the template, set before placing."""
        self.uses = 0
        """How many templates were injected while recording: only one can be recorded."""

    def json(self) -> bytes:
        """``orjson.dumps(self.ops)``, the same bytes, writing each inserted part from the JSON
        its placement keeps: the sidecars are most of a patch and the same for every pod."""
        known = self.known
        fragment = orjson.Fragment
        return orjson.dumps(
            [
                op
                if (value := known.get(id(op))) is None
                else {"op": "add", "path": op["path"], "value": fragment(value)}
                for op in self.ops
            ]
        )


def _pointer(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _record(
    record: Record,
    template: MutableMapping[str, Any],
    grown: dict[str, tuple[int, int]],
    app: list[dict[str, Any]],
    app_grown: list[dict[str, tuple[int, int]]],
    added_annotations: list[str],
    known: dict[str, list[bytes]],
) -> None:
    """Fill ``record`` from what ``place`` added: ``grown`` maps a spec key to the indexes
    [start, end) of the items it inserted (start -1: the list was created), ``app_grown`` the
    same per app container; ``known`` the JSON of the items inserted under each key."""
    spec = template["spec"]
    annotations = template["metadata"]["annotations"]
    at = record.path
    metadata: list[Json] = [
        {"op": "add", "path": f"{at}/metadata/annotations{_pointer(k)}", "value": annotations[k]}
        for k in added_annotations
    ]
    metadata.append(
        {"op": "add", "path": at + _STATUS_POINTER, "value": annotations[policy.STATUS_ANNOTATION]}
    )
    body: list[Json] = []
    for key in spec:  # in the spec's order, as a diff visits them
        if key not in grown:
            continue
        if key == "containers":
            for i, c in enumerate(app):
                changes = app_grown[i]
                if changes:
                    for sub in c:
                        if sub in changes:
                            path = f"{at}/spec/containers/{i}/{sub}"
                            _adds(record, body, path, c[sub], changes[sub], known[sub])
        else:
            _adds(record, body, f"{at}/spec/{key}", spec[key], grown[key], known[key])
    for key in template:
        if key == "metadata":
            metadata.extend(body)
            record.ops = metadata
            break
        if key == "spec":
            body.extend(metadata)
            record.ops = body
            break
    record.complete = True


_STATUSES: Final = 64
"""Status records kept per placement (kinds of pods: app container names and what was created)."""

_STATUS_POINTER: Final = "/metadata/annotations/" + policy.STATUS_ANNOTATION.replace("/", "~1")


def _replaces(mapping: MutableMapping[str, Any], keys: tuple[str, str]) -> bool:
    """Whether one of ``keys`` is in ``mapping`` but not as a list, which ``_list`` replaces."""
    return any(key in mapping and not isinstance(mapping[key], list) for key in keys)


def _adds(
    record: Record,
    out: list[Json],
    path: str,
    items: list[Json],
    span: tuple[int, int],
    known: list[bytes],
) -> None:
    """The ops adding ``items[start:end]``, or the whole list created (start -1), whose JSON
    is ``known`` item by item."""
    start, end = span
    if start < 0:
        op = {"op": "add", "path": path, "value": items}
        record.known[id(op)] = b"[%b]" % b",".join(known)
        out.append(op)
    else:
        for i in range(start, end):
            op = {"op": "add", "path": f"{path}/{i}", "value": items[i]}
            record.known[id(op)] = known[i - start]
            out.append(op)


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


class Placement:
    """The half of placing that does not depend on the pod: what goes in, and its records.

    For most pods it depends only on the rendered profiles, so a plan computes it once and
    every pod shares it; only legacy sidecars in a run-to-completion pod carry the names of the
    app's containers, and there it is computed per pod. The content hash and the serialized
    form of what is inserted are kept once known. Nothing here may be mutated: every pod gets
    its own copies, unless its caller promises that nobody edits the result (``share``).
    """

    __slots__ = (
        "_digests",
        "_items",
        "_json",
        "_statuses",
        "env",
        "legacy_exit",
        "mounts",
        "new_init",
        "new_legacy",
        "records",
        "volumes",
    )

    def __init__(
        self,
        *,
        legacy_exit: bool,
        new_init: list[Json],
        new_legacy: list[Json],
        records: tuple[statuses.ProfileRecord, ...],
        volumes: dict[str, Json],
        mounts: dict[str, Json],
        env: dict[str, Json],
    ) -> None:
        self.legacy_exit = legacy_exit
        """Whether legacy sidecars must learn when the app's containers are done."""
        self.new_init = new_init
        """Init containers to insert at the front, native sidecars included."""
        self.new_legacy = new_legacy
        """Legacy sidecars to insert at the front of ``containers``."""
        self.records = records
        """The status records of the profiles."""
        self.volumes = volumes
        """Volumes to append, by name (shared ones once)."""
        self.mounts = mounts
        """volumeMounts for each app container, by mountPath."""
        self.env = env
        """env entries for each app container, by name."""
        self._digests: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._json: dict[str, bytes] = {}
        self._items: dict[str, list[bytes]] = {}
        self._statuses: dict[tuple[object, ...], tuple[statuses.Status, str]] = {}

    def status(
        self,
        digest: str,
        app_names: list[str],
        wrapped: set[str],
        added_annotations: list[str],
        created: list[str],
    ) -> tuple[statuses.Status, str]:
        """The status record of an injection of these parts, and its annotation text: the same
        for every pod whose app containers have the same names (every pod of a Deployment).
        Kept for ``_STATUSES`` kinds of pods at most, so odd names cannot grow it for ever."""
        key = (
            digest,
            tuple(app_names),
            tuple(sorted(wrapped)),
            tuple(added_annotations),
            tuple(created),
        )
        found = self._statuses.get(key)
        if found is None:
            mounts, env = tuple(self.mounts), tuple(self.env)
            plain = statuses.AppRecord(mounts, env, False)
            status = statuses.Status(
                hash=digest,
                profiles=self.records,
                app=tuple(
                    (name, statuses.AppRecord(mounts, env, True) if name in wrapped else plain)
                    for name in app_names
                ),
                annotations=tuple(added_annotations),
                created=tuple(created),
            )
            if len(self._statuses) >= _STATUSES:
                self._statuses.clear()
            found = self._statuses[key] = (status, statuses.encode(status))
        return found

    def items_json(self, what: str, items: list[Json]) -> list[bytes]:
        """The JSON of each of ``items`` (the part called ``what``), made once."""
        found = self._items.get(what)
        if found is None:
            found = self._items[what] = [orjson.dumps(item) for item in items]
        return found

    def digest(self, wrapped: set[str], added_annotations: list[str]) -> str:
        """The content hash of an injection of these parts: equal hashes mean nothing to do."""
        key = (tuple(sorted(wrapped)), tuple(added_annotations))
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = hashlib.sha256(
                orjson.dumps(
                    [
                        self.new_init,
                        self.new_legacy,
                        list(self.volumes.values()),
                        list(self.mounts.values()),
                        list(self.env.values()),
                        sorted(wrapped),
                        added_annotations,
                    ],
                    option=orjson.OPT_SORT_KEYS,
                )
            ).hexdigest()[:16]
        return found

    def fresh(self, what: str, items: list[Json], *, share: bool = False) -> list[Json]:
        """A plain copy of ``items`` (the part called ``what``) for one insertion.

        Every insertion gets its own objects: shared ones would come out as YAML anchors, and
        whoever edits the result must not edit the next pod's. With ``share``, for a result
        that nobody edits or writes as YAML, ``items`` themselves.
        """
        if share:
            return items
        data = self._json.get(what)
        if data is None:
            data = self._json[what] = orjson.dumps(items)
        return orjson.loads(data)  # type: ignore[no-any-return]


def prepare(
    rendered: Sequence[conflicts.Rendered],
    *,
    run_to_completion: bool,
    app_names: Sequence[str] | None,
) -> Placement | None:
    """The pod-independent half of placing ``rendered``.

    None when it depends on the pod after all (legacy sidecars in a run-to-completion pod
    carry the names of the app's containers) and ``app_names`` is None.
    """
    legacy_exit = run_to_completion and any(
        r.mode is profiles.Mode.LEGACY and r.parts.sidecars for r in rendered
    )
    if legacy_exit and app_names is None:
        return None
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
                assert app_names is not None
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
                revision=_revision(r),
            )
        )
        for v in r.parts.volumes:
            volumes.setdefault(v["name"], v)
        for m in r.parts.app_mounts:
            mounts.setdefault(m["mountPath"], m)
        for e in r.parts.app_env:
            env.setdefault(e["name"], e)
    return Placement(
        legacy_exit=legacy_exit,
        new_init=new_init,
        new_legacy=new_legacy,
        records=tuple(records),
        volumes=volumes,
        mounts=mounts,
        env=env,
    )


def _after_network_setup(inits: Sequence[Any], rendered: Sequence[conflicts.Rendered]) -> int:
    """Where injected init containers go: after the last network-setup one, else first."""
    setup = {name for r in rendered for name in r.parts.after_init_containers}
    at = 0
    for i, c in enumerate(inits):
        if isinstance(c, dict) and c.get("name") in setup:
            at = i + 1
    return at


def _revision(r: conflicts.Rendered) -> str:
    """The revision of a rendered profile, as the status records it."""
    parts = r.parts
    return hashlib.sha256(
        orjson.dumps(
            [
                str(r.mode),
                parts.init_containers,
                parts.sidecars,
                parts.volumes,
                parts.app_mounts,
                parts.app_env,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:10]


def place(
    template: MutableMapping[str, Any],
    rendered: Sequence[conflicts.Rendered],
    *,
    run_to_completion: bool,
    prepared: Placement | None = None,
    share: bool = False,
    record: Record | None = None,
) -> tuple[statuses.Status, list[reports.Reason]]:
    """Add ``rendered`` to ``template`` in place; return the status record and any warnings.

    ``template`` has been stripped of earlier injections and checked for conflicts.
    ``prepared`` is ``prepare(rendered, ...)`` when the caller has it already. With ``share``,
    the parts are inserted themselves rather than copies: only for a result nobody modifies.
    With ``record``, what is added is written down there too (``Record``).
    """
    spec = template["spec"]
    created: list[str] = []
    reasons: list[reports.Reason] = []
    app = [c for c in spec.get("containers") or () if isinstance(c, dict)]
    app_names = [str(c.get("name")) for c in app]
    placement = prepared
    if placement is None:
        placement = prepare(rendered, run_to_completion=run_to_completion, app_names=app_names)
        assert placement is not None
    mounts, env = placement.mounts, placement.env

    wrapped: set[str] = set()
    if placement.legacy_exit:
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
    if placement.new_legacy and app_names and DEFAULT_CONTAINER_ANNOTATION not in annotations:
        # Legacy sidecars come first, and kubectl logs/exec would otherwise pick them.
        annotations[DEFAULT_CONTAINER_ANNOTATION] = app_names[0]
        added_annotations.append(DEFAULT_CONTAINER_ANNOTATION)

    digest = placement.digest(wrapped, added_annotations)
    # For ``record``: where items went, as [start, end) in each list (start -1: created).
    # A null or wrong-typed list that placing replaces is a "replace", not an "add": diff it.
    recordable = (
        record is not None
        and not created
        and not placement.new_legacy
        and not _replaces(spec, ("initContainers", "volumes"))
    )
    if recordable:
        for c in app:
            if _replaces(c, ("volumeMounts", "env")):
                recordable = False
    grown: dict[str, tuple[int, int]] = {}
    app_grown: list[dict[str, tuple[int, int]]] = []
    known: dict[str, list[bytes]] = {}

    if placement.new_init:
        inits = _list(spec, "initContainers", created, "spec.initContainers", before="containers")
        fresh = bool(created) and created[-1] == "spec.initContainers"
        at = _after_network_setup(inits, rendered)
        inits[at:at] = placement.fresh("init", placement.new_init, share=share)
        grown["initContainers"] = (-1, 0) if fresh else (at, at + len(placement.new_init))
        if recordable:
            known["initContainers"] = placement.items_json("init", placement.new_init)
    if placement.new_legacy:
        _list(spec, "containers", created, "spec.containers")[:0] = placement.fresh(
            "legacy", placement.new_legacy, share=share
        )
    if placement.volumes:
        volumes = _list(spec, "volumes", created, "spec.volumes")
        start = -1 if created and created[-1] == "spec.volumes" else len(volumes)
        added = list(placement.volumes.values())
        volumes.extend(placement.fresh("volumes", added, share=share))
        grown["volumes"] = (start, len(volumes))
        if recordable:
            known["volumes"] = placement.items_json("volumes", added)
    if recordable:
        known["volumeMounts"] = placement.items_json("mounts", list(mounts.values()))
        known["env"] = placement.items_json("env", list(env.values()))
    for c in app:
        name = str(c.get("name"))
        path = f"spec.containers[{name}]"
        changes: dict[str, tuple[int, int]] = {}
        if mounts:
            items = _list(c, "volumeMounts", created, f"{path}.volumeMounts")
            start = -1 if created and created[-1] == f"{path}.volumeMounts" else len(items)
            items.extend(placement.fresh("mounts", list(mounts.values()), share=share))
            changes["volumeMounts"] = (start, len(items))
        if env:
            items = _list(c, "env", created, f"{path}.env")
            start = -1 if created and created[-1] == f"{path}.env" else len(items)
            items.extend(placement.fresh("env", list(env.values()), share=share))
            changes["env"] = (start, len(items))
        app_grown.append(changes)
        if name in wrapped:
            c["command"][:0] = statuses.wrapper(name)

    status, text = placement.status(digest, app_names, wrapped, added_annotations, created)
    annotations[policy.STATUS_ANNOTATION] = text
    if record is not None and recordable and len(app) == len(spec.get("containers") or ()):
        if any(app_grown):
            grown["containers"] = (0, 0)
        _record(record, template, grown, app, app_grown, added_annotations, known)
    return status, reasons
